/**
 * Section `single`: one pull at a time of one artifact, by our TypeScript
 * client and the grpc-go client from our server, the grpc-go client from
 * the grpc-go peer, and curl from nginx (with and without a digest after).
 */
import { createHash, randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import {
  type Context,
  goPull,
  interleave,
  keyFor,
  nameFor,
  ROOT,
  type Sample,
  sampleMedians,
} from "../lib/bench-context.js";
import type { BenchOptions } from "../lib/options.js";
import { cpuSeconds, run, type ServerProcess } from "../lib/processes.js";
import { GiB, MiB, median, megabytesPerSecond } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

/** Best-of-N single-stream throughput and the server CPU per GiB it took. */
async function withCpu(
  server: ServerProcess,
  pulls: () => Promise<{ ms: number[]; bytes: number }>,
): Promise<{ mbps: number; cpuPerGiB: number }> {
  const before = await cpuSeconds(server.pid);
  const { ms, bytes } = await pulls();
  const cpu = (await cpuSeconds(server.pid)) - before;
  return { mbps: megabytesPerSecond(bytes / ms.length, median(ms)), cpuPerGiB: cpu / (bytes / GiB) };
}

export async function singleStream(
  ctx: Context,
  s: { ours: ServerProcess; peer: ServerProcess; nginx: ServerProcess },
  flip: boolean,
): Promise<Sample> {
  const { singlePulls } = ctx.options;
  const mib = ctx.options.singleMiB;
  const name = nameFor(mib);
  const results = await interleave(flip, [
    ["nginx", () => withCpu(s.nginx, () => curlPulls(ctx, `http://${s.nginx.address}/${name}`, false))],
    // What a runtime using curl needs to check what our client checks.
    [
      "nginxVerified",
      () => withCpu(s.nginx, () => curlPulls(ctx, `http://${s.nginx.address}/${name}`, true)),
    ],
    [
      "oursTs",
      () =>
        withCpu(s.ours, async () => {
          const out = await run(process.execPath, [
            join(ROOT, "dist/bench/ts-pull.js"),
            JSON.stringify({ address: s.ours.address, key: keyFor(name), dir: ctx.sink, count: singlePulls }),
          ]);
          const { results } = JSON.parse(out) as { results: { ms: number; bytes: number }[] };
          return { ms: results.map((r) => r.ms), bytes: results.reduce((a, r) => a + r.bytes, 0) };
        }),
    ],
    ["oursGo", () => withCpu(s.ours, () => goPulls(ctx, s.ours, name, singlePulls))],
    ["peerGo", () => withCpu(s.peer, () => goPulls(ctx, s.peer, name, singlePulls))],
  ]);
  const sample: Sample = {};
  for (const [label, r] of Object.entries(results)) {
    sample[`${label}MBps`] = r.mbps;
    sample[`${label}CpuPerGiB`] = r.cpuPerGiB;
  }
  sample.digestMs = digestMs(mib);
  return sample;
}

/**
 * `singlePulls` downloads of `url` by curl to a file, timed by curl itself;
 * with `verify`, each file is then digested by OpenSSL (SHA-NI, as Node.js's
 * hash is), and the digest's wall time is added.
 */
async function curlPulls(
  ctx: Context,
  url: string,
  verify: boolean,
): Promise<{ ms: number[]; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < ctx.options.singlePulls; i++) {
    const to = join(ctx.sink, `curl-${i}`);
    const out = await run("curl", ["-sS", "--fail", "-o", to, "-w", "%{time_total} %{size_download}", url]);
    const [seconds, size] = out.trim().split(" ").map(Number) as [number, number];
    const started = performance.now();
    if (verify) await run("openssl", ["dgst", "-sha256", to]);
    ms.push(seconds * 1000 + (verify ? performance.now() - started : 0));
    bytes += size;
    await rm(to, { force: true });
  }
  return { ms, bytes };
}

/** The SHA-256 of `mib` MiB in this process: what checking the digest costs our client, alone. */
function digestMs(mib: number): number {
  const bytes = randomBytes(mib * MiB);
  const ms: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    createHash("sha256").update(bytes).digest();
    ms.push(performance.now() - started);
  }
  return median(ms);
}

async function goPulls(
  ctx: Context,
  server: ServerProcess,
  name: string,
  count: number,
): Promise<{ ms: number[]; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const r = await goPull(ctx, server.address, name, 1);
    ms.push(r.wallMs);
    bytes += r.bytes;
  }
  return { ms, bytes };
}

/** The `single` rows: medians over the rounds, ours beside nginx and the grpc-go peer. */
export function singleRows(options: BenchOptions, raw: Record<string, Sample[]>): Row[] {
  const rows: Row[] = [];
  const { m, ratio } = sampleMedians(raw);
  const single = `single stream ${options.singleMiB} MiB`;
  if (raw.single) {
    rows.push(
      {
        figure: `${single}, our TS client vs nginx + curl`,
        ours: m("single", "oursTsMBps"),
        peer: m("single", "nginxMBps"),
        ratio: ratio("single", "oursTsMBps", "nginxMBps"),
        unit: "MB/s",
        target: { ratioAtLeast: 0.8 },
      },
      {
        figure: `${single}, our TS client vs nginx + curl, then openssl sha256 (both verify)`,
        ours: m("single", "oursTsMBps"),
        peer: m("single", "nginxVerifiedMBps"),
        ratio: ratio("single", "oursTsMBps", "nginxVerifiedMBps"),
        unit: "MB/s",
      },
      {
        figure: `  SHA-256 of ${options.singleMiB} MiB in Node.js (the digest's cost, alone)`,
        ours: m("single", "digestMs"),
        unit: "ms",
      },
      {
        figure: "  server CPU per GiB (TS client; nginx)",
        ours: m("single", "oursTsCpuPerGiB"),
        peer: m("single", "nginxCpuPerGiB"),
        ratio: ratio("single", "oursTsCpuPerGiB", "nginxCpuPerGiB"),
        unit: "s/GiB",
        target: { oursAtMost: 1.0 },
      },
      {
        figure: `${single}, grpc-go client vs grpc-go peer`,
        ours: m("single", "oursGoMBps"),
        peer: m("single", "peerGoMBps"),
        ratio: ratio("single", "oursGoMBps", "peerGoMBps"),
        unit: "MB/s",
        target: { ratioAtLeast: 1.0 },
      },
      {
        figure: "  server CPU per GiB (grpc-go client)",
        ours: m("single", "oursGoCpuPerGiB"),
        peer: m("single", "peerGoCpuPerGiB"),
        ratio: ratio("single", "oursGoCpuPerGiB", "peerGoCpuPerGiB"),
        unit: "s/GiB",
      },
    );
  }
  return rows;
}
