/**
 * Sections `concurrent` and `slow`: many grpc-go clients pulling one
 * artifact at once from our server, then from the grpc-go peer; `slow` is
 * the same with each client reading at a set rate (what a server holds for
 * readers it cannot hurry).
 */
import {
  type Context,
  goPull,
  interleave,
  nameFor,
  type Sample,
  sampleMedians,
} from "../lib/bench-context.js";
import type { BenchOptions } from "../lib/options.js";
import { type ServerProcess, watchPeakRss } from "../lib/processes.js";
import { MiB, megabytesPerSecond } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

export async function concurrent(
  ctx: Context,
  s: { ours: ServerProcess; peer: ServerProcess },
  flip: boolean,
  rate: number,
): Promise<Sample> {
  const name = nameFor(ctx.options.concurrentMiB);
  const measure = async (server: ServerProcess) => {
    const watch = await watchPeakRss(server.pid);
    const figures = await goPull(ctx, server.address, name, ctx.options.concurrency, rate);
    const peak = await watch.stop();
    return { ...figures, peak };
  };
  const r = await interleave(flip, [
    ["ours", () => measure(s.ours)],
    ["peer", () => measure(s.peer)],
  ]);
  const sample: Sample = {};
  for (const [label, f] of Object.entries(r)) {
    sample[`${label}MBps`] = megabytesPerSecond(f.bytes, f.wallMs);
    sample[`${label}P50Ms`] = f.p50Ms;
    sample[`${label}P99Ms`] = f.p99Ms;
    sample[`${label}PeakMiB`] = f.peak / MiB;
  }
  return sample;
}

/** The `concurrent` rows, then the `slow` ones. */
export function concurrentRows(options: BenchOptions, raw: Record<string, Sample[]>): Row[] {
  const rows: Row[] = [];
  const { m, ratio } = sampleMedians(raw);
  const sectionRows = (section: string, label: string, withThroughput: boolean) => {
    if (!raw[section]) return;
    if (withThroughput) {
      rows.push(
        {
          figure: `${label}: aggregate`,
          ours: m(section, "oursMBps"),
          peer: m(section, "peerMBps"),
          ratio: ratio(section, "oursMBps", "peerMBps"),
          unit: "MB/s",
          target: { ratioAtLeast: 1.0 },
        },
        {
          figure: "  per-pull p50",
          ours: m(section, "oursP50Ms"),
          peer: m(section, "peerP50Ms"),
          ratio: ratio(section, "oursP50Ms", "peerP50Ms"),
          unit: "ms",
        },
        {
          figure: "  per-pull p99",
          ours: m(section, "oursP99Ms"),
          peer: m(section, "peerP99Ms"),
          ratio: ratio(section, "oursP99Ms", "peerP99Ms"),
          unit: "ms",
        },
      );
    }
    rows.push({
      figure: withThroughput ? "  server peak RSS" : `${label}: server peak RSS`,
      ours: m(section, "oursPeakMiB"),
      peer: m(section, "peerPeakMiB"),
      ratio: ratio(section, "oursPeakMiB", "peerPeakMiB"),
      unit: "MiB",
      target: { oursAtMost: 256 },
    });
  };
  sectionRows(
    "concurrent",
    `${options.concurrency} concurrent pulls of ${options.concurrentMiB} MiB, grpc-go clients`,
    true,
  );
  sectionRows("slow", `${options.concurrency} clients reading at ${options.slowRate / 1e6} MB/s each`, false);
  return rows;
}
