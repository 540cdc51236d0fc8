import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { createPluginClient } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { startRegistry } from "../../test/helpers/registry-process.js";
import { startRegistryProxy } from "../../test/helpers/registry-proxy.js";
import { type ServerProcess, watchPeakRss } from "../lib/processes.js";
import { MiB, megabytesPerSecond } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

export interface ReplicaRowOptions {
  work: string;
  /** Pullers at once, each on its own connection (the grpc-go client). */
  count: number;
  /** The artifact every puller asks for, and its file. */
  key: BuildKey;
  file: string;
  /** Starts our server with these serve arguments; `http` is its HTTP port once it serves. */
  start(dataDir: string, args: string[]): Promise<ServerProcess>;
  pull(address: string, count: number): Promise<{ wallMs: number; bytes: number }>;
  log(message: string): void;
}

/** A counter or gauge's value in a server's /metrics (0 when absent). */
async function metric(http: string, name: string): Promise<number> {
  const text = await (await fetch(`http://${http}/metrics`)).text();
  const match = new RegExp(`^${name} (\\d+(?:\\.\\d+)?)$`, "m").exec(text);
  return match ? Number(match[1]) : 0;
}

/**
 * The scale-out tier's figures, each beside its reference in one run:
 * `count` pulls from the embedded store; the same on a replica over a real
 * registry (Debian's Distribution) that never served the artifact, with the
 * registry's requests counted by a proxy in front of it; the same while the
 * registry is down; and at the edge of a chain of three tiers.
 */
export async function replicaRows(options: ReplicaRowOptions): Promise<Row[]> {
  const { count, log } = options;
  const started: ServerProcess[] = [];
  const fresh = (name: string) => mkdtemp(join(options.work, `${name}-`));
  const start = async (name: string, args: string[]) => {
    const server = await options.start(await fresh(name), args);
    started.push(server);
    return server;
  };
  const push = async (address: string, token?: string) => {
    const client = createPluginClient({ address, ...(token ? { token } : {}) });
    try {
      await client.pushFile(options.key, options.file);
    } finally {
      client.close();
    }
  };
  const measure = async (server: ServerProcess) => {
    const rss = await watchPeakRss(server.pid);
    const figures = await options.pull(server.address, count);
    return { mbps: megabytesPerSecond(figures.bytes, figures.wallMs), peakMiB: (await rss.stop()) / MiB };
  };
  const registry = await startRegistry();
  const proxy = await startRegistryProxy(registry.address);
  const rows: Row[] = [];
  try {
    log(`replica rows: ${count} pulls from the embedded store`);
    const embedded = await start("embedded", ["--prewarm", "off"]);
    await push(embedded.address);
    const reference = await measure(embedded);

    log(`replica rows: ${count} pulls on a fresh OCI replica`);
    const quiet = ["--prewarm", "off", "--store-probe-interval", "600000", "--pull-policy", "never"];
    const publisher = await start("publisher", ["--store", registry.storeUrl("bench/plugins"), ...quiet]);
    await push(publisher.address);
    const replica = await start("replica", ["--store", proxy.storeUrl("bench/plugins"), ...quiet]);
    proxy.seen.length = 0;
    const onReplica = await measure(replica);
    const blobReads = proxy.count("GET", "blobs");
    const requests = proxy.seen.filter((seen) => seen.kind !== "base").length;

    log(`replica rows: ${count} pulls on the replica while the registry is down`);
    proxy.down = true;
    const duringOutage = await measure(replica);
    proxy.down = false;

    log(`replica rows: ${count} pulls at the edge of three tiers`);
    const central = await start("central", ["--prewarm", "off"]);
    await push(central.address);
    const site = await start("site", ["--upstream", central.address]);
    const edge = await start("edge", ["--upstream", site.address]);
    const atEdge = await measure(edge);
    const fetches = [
      await metric(central.http, 'atomix_plugins_pulls_total\\{code="OK"\\}'),
      await metric(site.http, 'atomix_plugins_pulls_total\\{code="OK"\\}'),
    ];

    rows.push(
      {
        figure: `fresh OCI replica, ${count} pulls: registry blob reads`,
        ours: blobReads,
        unit: "reads",
        target: { oursAtMost: 1 },
      },
      {
        figure: `fresh OCI replica, ${count} pulls: registry requests in all`,
        ours: requests,
        unit: "requests",
        target: { oursAtMost: 5 },
      },
      {
        figure: `fresh OCI replica, ${count} pulls: aggregate, against the embedded store`,
        ours: onReplica.mbps,
        peer: reference.mbps,
        ratio: onReplica.mbps / reference.mbps,
        unit: "MB/s",
        target: { ratioAtLeast: 0.9 },
        note: `peak RSS ${onReplica.peakMiB.toFixed(0)} MiB (embedded ${reference.peakMiB.toFixed(0)} MiB); "peer" here is the embedded store`,
      },
      {
        figure: `OCI replica with the registry down, ${count} pulls of a held key: aggregate, against the embedded store`,
        ours: duringOutage.mbps,
        peer: reference.mbps,
        ratio: duringOutage.mbps / reference.mbps,
        unit: "MB/s",
        note: `peak RSS ${duringOutage.peakMiB.toFixed(0)} MiB`,
      },
      {
        figure: `three tiers (central, site, edge), ${count} pulls at the edge: aggregate, against the embedded store`,
        ours: atEdge.mbps,
        peer: reference.mbps,
        ratio: atEdge.mbps / reference.mbps,
        unit: "MB/s",
        note: `pulls served by central and by the site: ${fetches.join(" and ")} (one fetch per tier); edge peak RSS ${atEdge.peakMiB.toFixed(0)} MiB`,
      },
    );
  } finally {
    for (const server of started) await server.stop().catch(() => {});
    await proxy.close();
    await registry.dispose();
  }
  return rows;
}
