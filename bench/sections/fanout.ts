/** Section `fanout`: a rollout, every puller on its own connection at once. */
import {
  type Context,
  fmt,
  goPull,
  interleave,
  log,
  type Sample,
  sampleMedians,
} from "../lib/bench-context.js";
import type { BenchOptions } from "../lib/options.js";
import { type ServerProcess, watchDescriptors, watchPeakRss } from "../lib/processes.js";
import { MiB, megabytesPerSecond } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

/**
 * A rollout: `count` pullers, each on its own connection, all pulling at
 * once one artifact (`same`) or four different ones (`mixed`, round robin),
 * from each server in turn; the server's peak RSS and open descriptors over
 * the phase.
 */
export async function fanout(
  ctx: Context,
  s: { ours: ServerProcess; peer: ServerProcess },
  flip: boolean,
): Promise<Sample> {
  const names = [...ctx.fanoutFiles.keys()];
  const sample: Sample = {};
  for (const count of ctx.options.fanout) {
    for (const [mode, list] of [
      ["same", names.slice(0, 1)],
      ["mixed", names],
    ] as const) {
      const measure = async (server: ServerProcess) => {
        const rss = await watchPeakRss(server.pid);
        const fds = await watchDescriptors(server.pid);
        const figures = await goPull(ctx, server.address, list.join(","), count);
        return { ...figures, peak: await rss.stop(), fds: await fds.stop() };
      };
      const r = await interleave(flip, [
        ["ours", () => measure(s.ours)],
        ["peer", () => measure(s.peer)],
      ]);
      for (const [label, f] of Object.entries(r)) {
        const at = `${label}${mode}${count}`;
        sample[`${at}MBps`] = megabytesPerSecond(f.bytes, f.wallMs);
        sample[`${at}P50Ms`] = f.p50Ms;
        sample[`${at}P99Ms`] = f.p99Ms;
        sample[`${at}PeakMiB`] = f.peak / MiB;
        sample[`${at}Fds`] = f.fds;
      }
      log(
        `fan-out ${count} ${mode}: ours ${fmt(sample[`ours${mode}${count}MBps`] ?? 0)} MB/s ${fmt(sample[`ours${mode}${count}PeakMiB`] ?? 0)} MiB, peer ${fmt(sample[`peer${mode}${count}MBps`] ?? 0)} MB/s ${fmt(sample[`peer${mode}${count}PeakMiB`] ?? 0)} MiB`,
      );
    }
  }
  return sample;
}

/** The `fanout` rows: per puller count, one artifact then several. */
export function fanoutRows(options: BenchOptions, raw: Record<string, Sample[]>): Row[] {
  const rows: Row[] = [];
  const { m, ratio } = sampleMedians(raw);
  if (raw.fanout) {
    for (const count of options.fanout) {
      for (const mode of ["same", "mixed"] as const) {
        const at = (side: string, field: string) => `${side}${mode}${count}${field}`;
        const pair = (field: string) => ({
          ours: m("fanout", at("ours", field)),
          peer: m("fanout", at("peer", field)),
          ratio: ratio("fanout", at("ours", field), at("peer", field)),
        });
        const what = mode === "same" ? "one" : `${options.fanoutArtifacts} different`;
        rows.push(
          {
            figure: `fan-out: ${count} pulls of ${what} ${options.fanoutMiB} MiB artifact${mode === "same" ? "" : "s"}, a connection each: aggregate`,
            ...pair("MBps"),
            unit: "MB/s",
            target: { ratioAtLeast: 1.0 },
          },
          { figure: "  per-pull p50", ...pair("P50Ms"), unit: "ms" },
          { figure: "  per-pull p99", ...pair("P99Ms"), unit: "ms" },
          {
            figure: "  server peak RSS",
            ...pair("PeakMiB"),
            unit: "MiB",
            target: count <= 1000 ? { oursAtMost: 256 } : undefined,
          },
          { figure: "  server open descriptors, peak", ...pair("Fds"), unit: "fds" },
        );
      }
    }
  }
  return rows;
}
