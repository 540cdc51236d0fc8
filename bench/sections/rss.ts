/** Section `rss`: what a fresh server holds, and its peak pulling each artifact size once. */
import {
  type Context,
  fmt,
  goPull,
  nameFor,
  type Sample,
  sampleMedians,
  startBare,
  startOurs,
  startPeer,
} from "../lib/bench-context.js";
import type { BenchOptions } from "../lib/options.js";
import { lifetimePeakRss, residentNow } from "../lib/processes.js";
import { MiB } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

/** How long a fresh server is left alone before its resident memory is read: start-up work settles. */
const FRESH_SETTLE_MS = 1_500;

/**
 * Each artifact pulled once from a freshly started server: its lifetime peak
 * RSS, and its resident memory before that first call (the floor), beside
 * the bare grpc-js server's.
 */
export async function rssBySize(ctx: Context, dataDir: string): Promise<Sample> {
  const sample: Sample = {};
  const bare = await startBare();
  try {
    await new Promise((resolve) => setTimeout(resolve, FRESH_SETTLE_MS));
    sample.bareFreshMiB = (await residentNow(bare.pid)) / MiB;
  } finally {
    await bare.stop();
  }
  for (const mib of ctx.options.rssSizesMiB) {
    for (const side of ["ours", "peer"] as const) {
      const server = side === "ours" ? await startOurs(ctx, dataDir) : await startPeer(ctx, [mib], false);
      try {
        await new Promise((resolve) => setTimeout(resolve, FRESH_SETTLE_MS));
        // The mean over this round's fresh starts.
        const fresh = (await residentNow(server.pid)) / MiB / ctx.options.rssSizesMiB.length;
        sample[`${side}FreshMiB`] = (sample[`${side}FreshMiB`] ?? 0) + fresh;
        await goPull(ctx, server.address, nameFor(mib), 1);
        sample[`${side}${mib}PeakMiB`] = (await lifetimePeakRss(server.pid)) / MiB;
      } finally {
        await server.stop();
      }
    }
  }
  return sample;
}

/** The `rss` rows: the fresh floor, the peak by size, and how the peak grows with size. */
export function rssRows(options: BenchOptions, raw: Record<string, Sample[]>): Row[] {
  const rows: Row[] = [];
  const { m, ratio } = sampleMedians(raw);
  if (raw.rss) {
    rows.push({
      figure: "fresh server resident before its first call (embedded store)",
      ours: m("rss", "oursFreshMiB"),
      peer: m("rss", "peerFreshMiB"),
      ratio: ratio("rss", "oursFreshMiB", "peerFreshMiB"),
      unit: "MiB",
      target: { oursAtMost: 50 },
      note: `bare grpc-js server ${fmt(m("rss", "bareFreshMiB"))} MiB`,
    });
    for (const mib of options.rssSizesMiB) {
      rows.push({
        figure: `server peak RSS pulling ${mib} MiB (fresh server)`,
        ours: m("rss", `ours${mib}PeakMiB`),
        peer: m("rss", `peer${mib}PeakMiB`),
        ratio: ratio("rss", `ours${mib}PeakMiB`, `peer${mib}PeakMiB`),
        unit: "MiB",
      });
    }
    const small = Math.min(...options.rssSizesMiB);
    const large = Math.max(...options.rssSizesMiB);
    rows.push({
      figure: `  our peak RSS, ${large} MiB / ${small} MiB artifact`,
      ours: ratio("rss", `ours${large}PeakMiB`, `ours${small}PeakMiB`),
      unit: "×",
      target: { oursAtMost: 1.1 },
    });
  }
  return rows;
}
