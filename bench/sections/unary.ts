/**
 * Section `unary`: the cache-hit CompilePlugin against the bare grpc-js
 * handler, in the rounds on long-lived servers and then on fresh pairs of
 * processes (raw sections `unary` and `unaryFresh`).
 */
import {
  type Context,
  fmt,
  interleave,
  nameFor,
  RUNTIME,
  type Sample,
  sampleMedians,
  startBare,
  startOurs,
} from "../lib/bench-context.js";
import type { BenchOptions } from "../lib/options.js";
import { cpuSeconds, run, type ServerProcess } from "../lib/processes.js";
import { median } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

interface UnaryFigures {
  calls: number;
  callsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/** The grpc-go client calling the cache-hit CompilePlugin on one connection for `seconds`. */
async function unaryLoad(ctx: Context, server: ServerProcess, callers: number, seconds: number) {
  const out = await run(ctx.go.client, [
    ...["-mode", "unary", "-addr", server.address, "-name", nameFor(ctx.options.singleMiB)],
    ...["-build", RUNTIME.buildVersion, "-c", String(callers), "-duration", `${seconds}s`],
  ]);
  return JSON.parse(out) as UnaryFigures;
}

export async function unary(ctx: Context, s: { ours: ServerProcess; bare: ServerProcess }, flip: boolean) {
  const call = (server: ServerProcess, callers: number) =>
    unaryLoad(ctx, server, callers, ctx.options.unarySeconds);
  const r = await interleave(flip, [
    ["oursOne", () => call(s.ours, 1)],
    ["bareOne", () => call(s.bare, 1)],
    ["oursMany", () => call(s.ours, ctx.options.unaryCallers)],
    ["bareMany", () => call(s.bare, ctx.options.unaryCallers)],
  ]);
  const sample: Sample = {};
  for (const [label, f] of Object.entries(r)) {
    sample[`${label}P50Ms`] = f.p50Ms;
    sample[`${label}P99Ms`] = f.p99Ms;
    sample[`${label}CallsPerSec`] = f.callsPerSec;
  }
  return sample;
}

/**
 * What each scavenge promoted to the old generation, read from a server run
 * with `--trace-gc-nvp` (one line per GC; `gc=s` marks a scavenge).
 */
function promotedPerScavenge() {
  let values: number[] = [];
  return {
    onLine(line: string) {
      if (!line.includes(" gc=s ")) return;
      const promoted = / promoted=(\d+)/.exec(line);
      if (promoted) values.push(Number(promoted[1]));
    },
    /** The median since the last call, in KiB. */
    takeMedianKiB(): number {
      const taken = values;
      values = [];
      return median(taken) / 1024;
    },
  };
}

/**
 * A scavenge promotes at 2 x 4 MiB young generation either a few KiB (the
 * calls in flight at one scavenge are gone by the next) or 600-900 KiB (each
 * promotes the last one's survivors), and a process keeps the regime it
 * falls into, which costs 1.3-1.6x the CPU a call: one process of each side
 * is one draw (README, Performance). So this row starts a fresh pair each
 * time, says which regime each side drew, and compares calls/s and CPU a
 * call over several pairs.
 */
export async function unaryFresh(ctx: Context, dataDir: string, flip: boolean): Promise<Sample> {
  const trace = { ours: promotedPerScavenge(), bare: promotedPerScavenge() };
  const nodeArgs = ["--trace-gc-nvp"];
  const ours = await startOurs(ctx, dataDir, { nodeArgs, onLine: trace.ours.onLine });
  const bare = await startBare({ nodeArgs, onLine: trace.bare.onLine }).catch(async (error: unknown) => {
    await ours.stop();
    throw error;
  });
  try {
    const load = (server: ServerProcess, seconds: number) =>
      unaryLoad(ctx, server, ctx.options.unaryCallers, seconds);
    const measure = async (side: "ours" | "bare", server: ServerProcess) => {
      await load(server, 1); // warm-up: JIT, and the young generation grown to its cap
      trace[side].takeMedianKiB();
      const before = await cpuSeconds(server.pid);
      const figures = await load(server, ctx.options.unarySeconds);
      const cpu = (await cpuSeconds(server.pid)) - before;
      return {
        ...figures,
        cpuUsPerCall: (cpu * 1e6) / figures.calls,
        promotedKiB: trace[side].takeMedianKiB(),
      };
    };
    const r = await interleave(flip, [
      ["ours", () => measure("ours", ours)],
      ["bare", () => measure("bare", bare)],
    ]);
    const sample: Sample = {};
    for (const [side, f] of Object.entries(r)) {
      sample[`${side}CallsPerSec`] = f.callsPerSec;
      sample[`${side}CpuUsPerCall`] = f.cpuUsPerCall;
      sample[`${side}PromotedKiB`] = f.promotedKiB;
    }
    return sample;
  } finally {
    await Promise.all([ours.stop(), bare.stop()]);
  }
}

/** The `unary` rows: the rounds on long-lived servers, then the fresh pairs. */
export function unaryRows(options: BenchOptions, raw: Record<string, Sample[]>): Row[] {
  const rows: Row[] = [];
  const { m, ratio } = sampleMedians(raw);
  if (raw.unary) {
    rows.push(
      {
        figure: "cache-hit CompilePlugin vs bare grpc-js unary, 1 caller: p50",
        ours: m("unary", "oursOneP50Ms"),
        peer: m("unary", "bareOneP50Ms"),
        ratio: ratio("unary", "oursOneP50Ms", "bareOneP50Ms"),
        unit: "ms",
        target: { oursAtMost: 0.3 },
      },
      {
        figure: "  p99",
        ours: m("unary", "oursOneP99Ms"),
        peer: m("unary", "bareOneP99Ms"),
        ratio: ratio("unary", "oursOneP99Ms", "bareOneP99Ms"),
        unit: "ms",
      },
      {
        figure: `  calls/s at ${options.unaryCallers} callers`,
        ours: m("unary", "oursManyCallsPerSec"),
        peer: m("unary", "bareManyCallsPerSec"),
        ratio: ratio("unary", "oursManyCallsPerSec", "bareManyCallsPerSec"),
        unit: "calls/s",
        target: { ratioAtLeast: 0.9 },
      },
      {
        figure: `  p50 / p99 at ${options.unaryCallers} callers`,
        ours: m("unary", "oursManyP50Ms"),
        peer: m("unary", "bareManyP50Ms"),
        ratio: ratio("unary", "oursManyP50Ms", "bareManyP50Ms"),
        unit: "ms (p50)",
        note: `p99 ${fmt(m("unary", "oursManyP99Ms"))} vs ${fmt(m("unary", "bareManyP99Ms"))} ms`,
      },
    );
  }
  const fresh = raw.unaryFresh ?? [];
  if (fresh.length > 0) {
    // Below this a scavenge promoted only what was still starting: the low regime.
    const low = (side: string) =>
      fresh.filter((s) => (s[`${side}PromotedKiB`] ?? Number.POSITIVE_INFINITY) < 100);
    const regimes = `promoting < 100 KiB a scavenge: ours in ${low("ours").length}, bare in ${low("bare").length} of ${fresh.length}`;
    const inLow = (side: string) => median(low(side).map((s) => s[`${side}CpuUsPerCall`] ?? Number.NaN));
    rows.push(
      {
        figure: `  calls/s at ${options.unaryCallers} callers, fresh pairs of processes`,
        ours: m("unaryFresh", "oursCallsPerSec"),
        peer: m("unaryFresh", "bareCallsPerSec"),
        ratio: ratio("unaryFresh", "oursCallsPerSec", "bareCallsPerSec"),
        unit: "calls/s",
        note: regimes,
      },
      {
        figure: "  server CPU a call, fresh pairs (all; in the low-promotion regime)",
        ours: m("unaryFresh", "oursCpuUsPerCall"),
        peer: m("unaryFresh", "bareCpuUsPerCall"),
        ratio: ratio("unaryFresh", "oursCpuUsPerCall", "bareCpuUsPerCall"),
        unit: "µs",
        note: `low regime only: ${fmt(inLow("ours"))} vs ${fmt(inLow("bare"))} µs`,
      },
    );
  }
  return rows;
}
