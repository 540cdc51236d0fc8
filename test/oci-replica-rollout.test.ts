import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { credentials } from "@grpc/grpc-js";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { PluginRegistryClient } from "./helpers/grpc-js-clients.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { type RegistryProxy, startRegistryProxy } from "./helpers/registry-proxy.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const sha256 = (data: Uint8Array) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const sha256Of = (hash: ReturnType<typeof createHash>) => `sha256:${hash.digest("hex")}`;
const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

/** Pulls `key` `count` times at once over `channels` grpc-js channels; the digest of each stream's bytes. */
async function pullMany(address: string, pulled: BuildKey, count: number, channels = 8): Promise<string[]> {
  const clients = Array.from(
    { length: channels },
    () => new PluginRegistryClient(address, credentials.createInsecure()),
  );
  try {
    return await Promise.all(
      Array.from({ length: count }, (_, index) => {
        const client = clients[index % channels] as PluginRegistryClient;
        const hash = createHash("sha256");
        return new Promise<string>((resolve, reject) => {
          const call = client.pullPlugin({ runtime: pulled.runtime, plugin: pulled.plugin });
          call.on("data", (message: { data: Buffer }) => hash.update(message.data));
          call.on("error", reject);
          call.on("end", () => resolve(`sha256:${hash.digest("hex")}`));
        });
      }),
    );
  } finally {
    for (const client of clients) client.close();
  }
}

/**
 * A rollout on a replica that never served the artifact, over a real
 * registry behind a counting proxy, with real server processes: what the
 * registry is asked, and what a replica killed mid-fill leaves.
 */
describe("a rollout on a fresh OCI replica", () => {
  let registry: RegistryProcess;
  let proxy: RegistryProxy;
  const servers: ServerProcess[] = [];
  const removals: (() => Promise<void>)[] = [];
  // Probes and release listings at their slowest: the counts below are the pulls' own.
  const replicaArgs = () => [
    ...["--store", proxy.storeUrl("rollout/plugins")],
    ...["--store-probe-interval", "600000", "--prewarm", "off", "--pull-policy", "never"],
  ];

  before(async () => {
    registry = await startRegistry();
    proxy = await startRegistryProxy(registry.address);
  });
  after(async () => {
    for (const server of servers) await server.kill().catch(() => {});
    await proxy?.close();
    await registry?.dispose();
    for (const remove of removals) await remove();
  });

  /** A server that writes straight to the registry: the first one started. */
  async function publisherAddress(): Promise<string> {
    if (!servers[0]) {
      servers.push(
        await startServerProcess({
          args: [
            "--store",
            registry.storeUrl("rollout/plugins"),
            "--cache-max-bytes",
            "0",
            "--prewarm",
            "off",
          ],
        }),
      );
    }
    return (servers[0] as ServerProcess).address;
  }

  async function publish(name: string, size: number): Promise<string> {
    const data = randomBytes(size);
    const publisher = createPluginClient({ address: await publisherAddress() });
    try {
      await publisher.push(key(name), [data], { size });
    } finally {
      publisher.close();
    }
    return sha256(data);
  }

  it("1,000 pulls make one blob read of the registry, and five requests at most in all", async () => {
    const digest = await publish("rollout", 2 * 1024 * 1024);
    const replica = await startServerProcess({ args: replicaArgs() });
    servers.push(replica);
    proxy.seen.length = 0;
    const digests = await pullMany(replica.address, key("rollout"), 1000);
    assert.equal(digests.length, 1000);
    assert.ok(
      digests.every((d) => d === digest),
      "every pull got the artifact's bytes",
    );
    assert.equal(proxy.count("GET", "blobs"), 1, JSON.stringify(proxy.seen));
    const requests = proxy.seen.filter((seen) => seen.kind !== "base");
    assert.ok(requests.length <= 5, JSON.stringify(requests));
    const metrics = await (await fetch(`http://${replica.http}/metrics`)).text();
    assert.match(metrics, /^atomix_plugins_cache_upstream_fetches_total 1$/m);
    assert.match(metrics, /^atomix_plugins_cache_upstream_bytes_total 2097152$/m);
  });

  it("a replica killed mid-fill keeps nothing of it, and after a restart serves the whole artifact", async () => {
    const digest = await publish("killed", 3 * 1024 * 1024);
    const temporary = await tempDir("atomix-killed-replica-");
    removals.push(temporary.remove);
    const dataDir = temporary.path;
    const first = await startServerProcess({ dataDir, args: replicaArgs() });
    servers.push(first);
    proxy.faults.push({ stallAfter: 1024 * 1024 });
    const readsBefore = proxy.count("GET", "blobs");
    const stalled = pullMany(first.address, key("killed"), 3, 1).catch((error: unknown) => error);
    const cacheDir = join(dataDir, "content-cache", "sha256");
    const until = Date.now() + 20_000;
    // The partial file exists before the registry is asked: wait for both, so
    // that the stall is this replica's and not the next one's.
    const filling = async () =>
      proxy.count("GET", "blobs") > readsBefore &&
      (await readdir(cacheDir)).some((name) => name.endsWith(".partial"));
    while (!(await filling()) && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(await filling(), "the fill started and asked the registry");
    await first.kill();
    assert.ok((await stalled) instanceof Error, "the pulls of the killed replica failed");

    const second = await startServerProcess({ dataDir, args: replicaArgs() });
    servers.push(second);
    assert.deepEqual(await readdir(cacheDir), [], "the partial fill was removed at start");
    const digests = await pullMany(second.address, key("killed"), 5);
    assert.ok(digests.every((d) => d === digest));
    const kept = await readdir(cacheDir);
    assert.deepEqual(kept, [digest.slice("sha256:".length)]);
    assert.equal(sha256(await readFile(join(cacheDir, kept[0] as string))), digest);
  });

  it("2,000 pulls at once of 20 artifacts on a fresh replica limited to 1,024 open files all succeed", async () => {
    const published = await Promise.all(
      Array.from({ length: 20 }, async (_, index) => ({
        name: `many-${index}`,
        digest: await publish(`many-${index}`, 300_000 + index),
      })),
    );
    const replica = await startServerProcess({ args: replicaArgs(), openFileLimit: 1024 });
    servers.push(replica);
    const clients = Array.from(
      { length: 50 },
      () => new PluginRegistryClient(replica.address, credentials.createInsecure()),
    );
    try {
      const outcomes = await Promise.allSettled(
        Array.from({ length: 2000 }, (_, index) => {
          const { name, digest } = published[index % published.length] as { name: string; digest: string };
          const hash = createHash("sha256");
          return new Promise<void>((resolve, reject) => {
            const call = (clients[index % clients.length] as PluginRegistryClient).pullPlugin(key(name));
            call.on("data", (message: { data: Buffer }) => hash.update(message.data));
            call.on("error", reject);
            call.on("end", () =>
              sha256Of(hash) === digest ? resolve() : reject(new Error(`${name}: other bytes`)),
            );
          });
        }),
      );
      const failed = outcomes.filter((outcome) => outcome.status === "rejected");
      assert.deepEqual(
        failed.slice(0, 3).map((outcome) => String((outcome as PromiseRejectedResult).reason)),
        [],
        `${failed.length} of 2,000 pulls failed`,
      );
    } finally {
      for (const client of clients) client.close();
    }
    const metrics = await (await fetch(`http://${replica.http}/metrics`)).text();
    assert.match(metrics, /^atomix_plugins_cache_upstream_fetches_total 20$/m);
  });

  it("2,000 pulls cancelled mid-fill leave no open files, waiters or chunk memory; the fill completes", async () => {
    const digest = await publish("cancelled", 4 * 1024 * 1024);
    const replica = await startServerProcess({ args: replicaArgs() });
    servers.push(replica);
    const metrics = async () => (await fetch(`http://${replica.http}/metrics`)).text();
    const gauge = async (name: string) =>
      Number(new RegExp(`^atomix_plugins_${name} (\\d+)$`, "m").exec(await metrics())?.[1] ?? Number.NaN);
    const openFiles = async () => (await readdir(`/proc/${replica.child.pid}/fd`)).length;
    // Warm: the registry's connection and the probes are there before the baseline.
    await publish("warm", 1000);
    await pullMany(replica.address, key("warm"), 1, 1);
    const baseline = await openFiles();

    let release = () => {};
    proxy.faults.push({
      stallAfter: 1024 * 1024,
      until: new Promise<void>((resolve) => (release = resolve)),
    });
    const clients = Array.from(
      { length: 20 },
      () => new PluginRegistryClient(replica.address, credentials.createInsecure()),
    );
    try {
      let started = 0;
      const calls = Array.from({ length: 2000 }, (_, index) => {
        const call = (clients[index % clients.length] as PluginRegistryClient).pullPlugin(key("cancelled"));
        const ended = new Promise<void>((resolve) => {
          call.on("error", () => resolve());
          call.on("end", () => resolve());
        });
        call.once("data", () => {
          started += 1;
        });
        return { call, ended };
      });
      // Every pull has its first chunk: the rest waits for bytes the registry holds back.
      while (started < calls.length) await new Promise((resolve) => setTimeout(resolve, 20));
      for (const { call } of calls) call.cancel();
      await Promise.all(calls.map(({ ended }) => ended));
    } finally {
      for (const client of clients) client.close();
    }
    release();
    // The fill nobody waits for any more completes, and keeps the blob.
    while ((await gauge("cache_fills")) > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await gauge("cache_fill_failures_total"), 0);
    assert.equal(await gauge("cache_fill_waiters"), 0);
    assert.equal(await gauge("pull_chunk_bytes"), 0);
    assert.equal(await gauge("pull_open_blobs"), 0);
    for (let files = await openFiles(); files > baseline; files = await openFiles()) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const digests = await pullMany(replica.address, key("cancelled"), 10);
    assert.ok(digests.every((d) => d === digest));
    assert.match(await metrics(), /^atomix_plugins_cache_upstream_fetches_total 2$/m);
  });

  it("two replicas with the same pid (containers) filling one digest into a shared folder keep it whole", async () => {
    const digest = await publish("shared-folder", 2 * 1024 * 1024);
    const temporary = await tempDir("atomix-shared-cache-");
    removals.push(temporary.remove);
    const cacheArgs = [...replicaArgs(), "--cache-dir", temporary.path];
    const [first, second] = [
      await startServerProcess({ args: cacheArgs, ownPidNamespace: true }),
      await startServerProcess({ args: cacheArgs, ownPidNamespace: true }),
    ] as [ServerProcess, ServerProcess];
    servers.push(first, second);
    const blobs = join(temporary.path, "sha256");
    const sizes = async () =>
      Promise.all(
        (await readdir(blobs))
          .filter((name) => name.endsWith(".partial"))
          .map(async (name) => (await stat(join(blobs, name))).size),
      );
    const until = async (done: (sizes: number[]) => boolean) => {
      while (!done(await sizes())) await new Promise((resolve) => setTimeout(resolve, 20));
    };
    let releaseFirst = () => {};
    let releaseSecond = () => {};
    proxy.faults.push(
      { stallAfter: 1024 * 1024, until: new Promise<void>((resolve) => (releaseFirst = resolve)) },
      { stallAfter: 100_000, until: new Promise<void>((resolve) => (releaseSecond = resolve)) },
    );
    try {
      // The first replica's fill holds a MiB; then the second's starts, and stalls before its first chunk.
      const firstPull = pullMany(first.address, key("shared-folder"), 1, 1);
      await until((found) => found.some((size) => size >= 1024 * 1024));
      const secondPull = pullMany(second.address, key("shared-folder"), 1, 1);
      while (proxy.faults.length > 0) await new Promise((resolve) => setTimeout(resolve, 20));
      await until((found) => found.some((size) => size < 1024 * 1024));
      releaseFirst();
      assert.deepEqual(await firstPull, [digest]);
      // What the first replica keeps is what it serves from now on.
      assert.deepEqual(await pullMany(first.address, key("shared-folder"), 3, 1), [digest, digest, digest]);
      releaseSecond();
      assert.deepEqual(await secondPull, [digest]);
      assert.deepEqual(await pullMany(second.address, key("shared-folder"), 3, 1), [digest, digest, digest]);
    } finally {
      releaseFirst();
      releaseSecond();
    }
    const kept = join(blobs, digest.slice("sha256:".length));
    assert.equal(sha256(await readFile(kept)), digest);
  });
});
