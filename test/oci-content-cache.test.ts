import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { ContentCache } from "../src/store/content-cache.js";
import { parseOciLocation } from "../src/store/oci/oci-location.js";
import { createOciStore } from "../src/store/oci/oci-store.js";
import { createReplicaStore, type ReplicaStore } from "../src/store/replica-store.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { type BlobFault, type RegistryProxy, startRegistryProxy } from "./helpers/registry-proxy.js";
import { chunksOf, keyOf, readAll } from "./store-suite.js";

const MiB = 1024 * 1024;

/**
 * A replica's store (content cache over the OCI store) against a real
 * registry, through a proxy that counts what the replica asks and breaks
 * blob reads the way networks and registries do.
 */
describe("a replica's content cache over a real registry", () => {
  let registry: RegistryProcess;
  let proxy: RegistryProxy;
  let work: string;
  let replicas = 0;
  /** The store a publisher writes through, straight to the registry. */
  let publisher: ArtifactStore;
  const opened: ReplicaStore[] = [];

  async function replica(
    options: { dir?: string; maxBytes?: number; resolveTtlMs?: number; stallMs?: number } = {},
  ): Promise<ReplicaStore & { dir: string }> {
    replicas += 1;
    const dir = options.dir ?? join(work, `replica-${replicas}`);
    await mkdir(join(dir, "keys"), { recursive: true });
    const registryStore = await createOciStore({
      ...parseOciLocation(proxy.storeUrl("cache/plugins")),
      tmpDir: join(dir, "spool"),
    });
    const cache = await ContentCache.open({
      dir,
      maxBytes: options.maxBytes ?? 256 * MiB,
      stallMs: options.stallMs ?? 2_000,
    });
    const store = createReplicaStore(registryStore, {
      cache,
      resolveTtlMs: options.resolveTtlMs ?? 60_000,
      keysDir: join(dir, "keys"),
    });
    opened.push(store);
    return Object.assign(store, { dir });
  }

  async function publish(name: string, size: number): Promise<{ manifest: ArtifactManifest; data: Buffer }> {
    const data = randomBytes(size);
    const manifest = await publisher.put(keyOf(name), chunksOf(data, 64 * 1024));
    return { manifest, data };
  }

  /** Blob files and partial files in a replica's cache folder. */
  const cached = async (dir: string) => (await readdir(join(dir, "sha256"))).sort();

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-content-cache-"));
    registry = await startRegistry();
    proxy = await startRegistryProxy(registry.address);
    publisher = await createOciStore(parseOciLocation(registry.storeUrl("cache/plugins")));
  });
  after(async () => {
    for (const store of opened) await store.close().catch(() => {});
    await proxy?.close();
    await registry?.dispose();
    await rm(work, { recursive: true, force: true });
  });

  it("200 pulls at once of a blob the replica never held make one registry read and one key lookup", async () => {
    const { manifest, data } = await publish("fanout", 3 * MiB + 17);
    const store = await replica();
    proxy.seen.length = 0;
    const pulls = await Promise.all(
      Array.from({ length: 200 }, async () => {
        const found = await store.get(keyOf("fanout"));
        assert.ok(found);
        return readAll(store, found, { chunkSize: 256 * 1024 });
      }),
    );
    for (const pull of pulls) assert.ok(pull.data.equals(data));
    assert.equal(proxy.count("GET", "blobs"), 1, JSON.stringify(proxy.seen));
    assert.equal(proxy.count("GET", "manifests"), 1, JSON.stringify(proxy.seen));
    assert.equal(store.cache.counters.upstreamFetches, 1);
    assert.equal(store.cache.counters.upstreamBytes, manifest.size);
    assert.deepEqual(await cached(store.dir), [manifest.digest.slice("sha256:".length)]);

    // Later pulls read the replica's disk, and ask the registry nothing within the TTL.
    proxy.seen.length = 0;
    const again = await store.get(keyOf("fanout"));
    assert.ok(again);
    assert.ok((await readAll(store, again, { offset: 1000 })).data.equals(data.subarray(1000)));
    assert.deepEqual(proxy.seen, []);
  });

  it("a fill whose registry connection is cut resumes with a ranged read; its pulls get every byte", async () => {
    const { data } = await publish("cut", 2 * MiB);
    const store = await replica();
    proxy.seen.length = 0;
    proxy.faults.push({ cutAfter: 700_000 });
    const found = await store.get(keyOf("cut"));
    assert.ok(found);
    const pulls = await Promise.all(
      Array.from({ length: 20 }, () => readAll(store, found, { chunkSize: 65536 })),
    );
    for (const pull of pulls) assert.ok(pull.data.equals(data));
    const reads = proxy.seen.filter((s) => s.method === "GET" && s.kind === "blobs");
    assert.equal(reads.length, 2, JSON.stringify(reads));
    assert.equal(reads[0]?.range, undefined);
    assert.match(reads[1]?.range ?? "", /^bytes=[1-9]\d*-$/);
    assert.equal(store.cache.counters.upstreamResumes, 1);
  });

  it("a resumed read answered with the whole blob (200), another blob's bytes, or another range ends no pull well on wrong bytes", async () => {
    const { data } = await publish("ranges", 2 * MiB);
    const other = randomBytes(2 * MiB);
    const found = await (await replica()).get(keyOf("ranges"));
    assert.ok(found);
    const attempts: [string, BlobFault[], Code | undefined][] = [
      // The registry ignores Range: the bytes the fill holds are skipped.
      ["200 to a ranged read", [{ cutAfter: 700_000 }, { ignoreRange: true }], undefined],
      // The blob changed between the first read and the resumed one.
      [
        "another blob on resume",
        [{ cutAfter: 700_000 }, { body: (offset) => other.subarray(offset) }],
        Code.DataLoss,
      ],
      // A 206 from somewhere else than asked, every time.
      [
        "a wrong Content-Range",
        [{ cutAfter: 700_000 }, ...Array(3).fill({ shiftRange: 1000 })],
        Code.Unavailable,
      ],
    ];
    for (const [what, faults, code] of attempts) {
      const store = await replica();
      proxy.faults.push(...faults);
      const outcomes: PromiseSettledResult<{ data: Buffer }>[] = await Promise.allSettled(
        Array.from({ length: 5 }, () => readAll(store, found)),
      );
      proxy.faults.length = 0;
      for (const outcome of outcomes) {
        if (code === undefined) {
          assert.equal(
            outcome.status,
            "fulfilled",
            `${what}: ${String((outcome as PromiseRejectedResult).reason)}`,
          );
          assert.ok((outcome as PromiseFulfilledResult<{ data: Buffer }>).value.data.equals(data), what);
        } else {
          assert.equal(outcome.status, "rejected", what);
          assert.equal(((outcome as PromiseRejectedResult).reason as PluginError).code, code, what);
        }
      }
      assert.deepEqual(await cached(store.dir), code === undefined ? [found.digest.slice(7)] : [], what);
    }
  });

  it("a fill whose registry keeps failing fails every waiter with UNAVAILABLE and keeps nothing; the next pull fetches again", async () => {
    const { data } = await publish("broken", MiB);
    const store = await replica();
    proxy.faults.push(...Array.from({ length: 4 }, () => ({ cutAfter: 100_000 })));
    const found = await store.get(keyOf("broken"));
    assert.ok(found);
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => readAll(store, found)));
    for (const outcome of outcomes) {
      assert.equal(outcome.status, "rejected");
      const error = (outcome as PromiseRejectedResult).reason;
      assert.ok(error instanceof PluginError);
      assert.equal(error.code, Code.Unavailable, error.message);
    }
    assert.deepEqual(await cached(store.dir), []);
    assert.equal(store.cache.state.bytes, 0);
    assert.ok((await readAll(store, found)).data.equals(data));
  });

  it("a fill whose registry stops sending ends within its stall limit: every waiter gets UNAVAILABLE", async () => {
    const { data } = await publish("stalled", 2 * MiB);
    const store = await replica({ stallMs: 300 });
    proxy.seen.length = 0;
    // Every read stalls, the ranged ones too: there is nothing to resume from.
    proxy.faults.push(...Array.from({ length: 4 }, () => ({ stallAfter: 100_000 })));
    const found = await store.get(keyOf("stalled"));
    assert.ok(found);
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => readAll(store, found)));
    for (const outcome of outcomes) {
      assert.equal(outcome.status, "rejected");
      const error = (outcome as PromiseRejectedResult).reason as PluginError;
      assert.equal(error.code, Code.Unavailable, error.message);
      assert.match(error.message, /sent nothing for 300 ms/);
    }
    // One stall limit without a byte ends the fill: it does not wait out another per ranged read.
    assert.equal(proxy.count("GET", "blobs"), 1, JSON.stringify(proxy.seen));
    assert.equal(store.cache.state.waiters, 0);
    assert.deepEqual(await cached(store.dir), []);
    proxy.faults.length = 0;
    assert.ok((await readAll(store, found)).data.equals(data));
  });

  it("bytes that do not hash to the digest end no pull well and are not kept", async () => {
    const { data } = await publish("corrupt", 600_000);
    const store = await replica();
    proxy.faults.push({ corrupt: true });
    const found = await store.get(keyOf("corrupt"));
    assert.ok(found);
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => readAll(store, found)));
    for (const outcome of outcomes) {
      assert.equal(outcome.status, "rejected");
      assert.equal(((outcome as PromiseRejectedResult).reason as PluginError).code, Code.DataLoss);
    }
    assert.deepEqual(await cached(store.dir), []);
    assert.ok((await readAll(store, found)).data.equals(data));
  });

  it("a manifest giving a digest another size ends no pull well on part of the blob, while it is fetched or held", async () => {
    const { data } = await publish("resized", 2 * MiB);
    const store = await replica();
    // The fill stops after a MiB until the registry is let go on.
    let release = () => {};
    proxy.faults.push({ stallAfter: MiB, until: new Promise<void>((resolve) => (release = resolve)) });
    const found = await store.get(keyOf("resized"));
    assert.ok(found);
    const whole = readAll(store, found, { chunkSize: 65536 });
    while (store.cache.counters.upstreamBytes < 300_000)
      await new Promise((resolve) => setTimeout(resolve, 10));
    // Another key's manifest could name the same digest with a smaller size.
    const shorter = { ...found, size: 256 * 1024 };
    const during = await Promise.allSettled([readAll(store, shorter)]);
    release();
    assert.equal(
      during[0]?.status,
      "rejected",
      "a pull ended well on the first 256 KiB of a blob being fetched",
    );
    assert.equal(((during[0] as PromiseRejectedResult).reason as PluginError).code, Code.DataLoss);
    assert.ok((await whole).data.equals(data));
    const held = await Promise.allSettled([
      readAll(store, shorter),
      readAll(store, { ...found, size: 3 * MiB }),
    ]);
    for (const outcome of held) {
      assert.equal(outcome.status, "rejected");
      assert.equal(((outcome as PromiseRejectedResult).reason as PluginError).code, Code.DataLoss);
    }
    // The blob held is kept, and served to its own manifest.
    assert.ok(store.cache.holds(found.digest));
    assert.ok((await readAll(store, found)).data.equals(data));
    assert.equal(store.cache.counters.upstreamFetches, 1);
  });

  it("stays within its bytes, least recently used out first, never a blob a pull is reading", async () => {
    const blobs = await Promise.all([1, 2, 3, 4, 5].map((n) => publish(`evict-${n}`, MiB)));
    const store = await replica({ maxBytes: 3 * MiB });
    const first = await store.get(keyOf("evict-1"));
    assert.ok(first);
    // A pull of the first blob stays open while the others come and go.
    const held = store.read(first, { chunkSize: 65536 })[Symbol.asyncIterator]();
    assert.ok(!(await held.next()).done);
    for (const [index, blob] of blobs.entries()) {
      const found = await store.get(keyOf(`evict-${index + 1}`));
      assert.ok(found);
      assert.ok((await readAll(store, found)).data.equals(blob.data));
      assert.ok(store.cache.state.bytes <= 3 * MiB || index === 0, `${store.cache.state.bytes} bytes held`);
    }
    assert.ok(store.cache.holds(first.digest), "the blob being read was evicted");
    let rest = 65536;
    for (let step = await held.next(); !step.done; step = await held.next()) rest += step.value.byteLength;
    assert.equal(rest, MiB);
    assert.ok(store.cache.counters.evictions >= 2);
    const files = await cached(store.dir);
    assert.ok(files.length <= 3, files.join(", "));
    // The most recently used are the ones kept.
    assert.ok(store.cache.holds((blobs[4] as { manifest: ArtifactManifest }).manifest.digest));
  });

  it("a blob larger than the whole cache is served, then not kept, and evicts none of the others", async () => {
    const small = await Promise.all([1, 2].map((n) => publish(`small-${n}`, MiB)));
    const big = await publish("bigger-than-cache", 4 * MiB);
    const store = await replica({ maxBytes: 3 * MiB });
    for (const { manifest } of small) await readAll(store, manifest);
    assert.ok((await readAll(store, big.manifest, { chunkSize: 65536 })).data.equals(big.data));
    for (const { manifest } of small)
      assert.ok(store.cache.holds(manifest.digest), "a small blob was evicted");
    assert.equal(store.cache.holds(big.manifest.digest), false);
    assert.equal(store.cache.state.bytes, 2 * MiB);
    assert.deepEqual(
      await cached(store.dir),
      small.map(({ manifest }) => manifest.digest.slice("sha256:".length)).sort(),
    );
  });

  it("a reader of a fill closed twice does not let a blob another pull still reads be evicted", async () => {
    const blobs = await Promise.all([1, 2, 3, 4].map((n) => publish(`twice-${n}`, MiB)));
    const store = await replica({ maxBytes: 2 * MiB });
    const [first, ...others] = blobs.map(({ manifest }) => manifest) as [
      ArtifactManifest,
      ...ArtifactManifest[],
    ];
    assert.ok(store.openBlob);
    const careless = await store.openBlob(first);
    const reading = await store.openBlob(first);
    await careless.close();
    await careless.close();
    for (const manifest of others) await readAll(store, manifest);
    assert.ok(store.cache.holds(first.digest), "the blob a pull still reads was evicted");
    const into = Buffer.alloc(MiB);
    assert.equal(await reading.read(into, 0, MiB, 0), MiB);
    assert.ok(into.equals((blobs[0] as { data: Buffer }).data));
    await reading.close();
  });

  it("more fills at once than its bytes hold: once their pulls end it is within its bytes, on disk too", async () => {
    const blobs = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => publish(`burst-${n}`, MiB)));
    const store = await replica({ maxBytes: 3 * MiB });
    const pulls = await Promise.all(
      blobs.map(async ({ manifest }) => (await readAll(store, manifest, { chunkSize: 65536 })).data),
    );
    for (const [index, data] of pulls.entries())
      assert.ok(data.equals((blobs[index] as { data: Buffer }).data));
    assert.ok(store.cache.state.bytes <= 3 * MiB, `${store.cache.state.bytes} bytes held`);
    const files = await cached(store.dir);
    assert.equal(files.length, store.cache.state.blobs, files.join(", "));
    assert.ok(files.length <= 3, files.join(", "));
  });

  it("keeps its blobs across a restart, checks them before first use, and drops partial and corrupt files", async () => {
    const { manifest, data } = await publish("restart", MiB);
    const dir = join(work, "restarting");
    const first = await replica({ dir });
    const found = await first.get(keyOf("restart"));
    assert.ok(found);
    await readAll(first, found);
    await first.close();
    const hex = manifest.digest.slice("sha256:".length);
    await writeFile(join(dir, "sha256", `${"0".repeat(64)}.999999999.partial`), "half a blob");

    proxy.seen.length = 0;
    const second = await replica({ dir });
    assert.deepEqual(await cached(dir), [hex]);
    assert.ok((await readAll(second, found)).data.equals(data));
    // Its first use set its times (the eviction order after a restart): still the blob checked.
    assert.ok((await readAll(second, found)).data.equals(data));
    assert.equal(proxy.count("GET", "blobs"), 0);
    await second.close();

    // A kept blob that no longer hashes to its name is fetched again, never served.
    const bad = Buffer.from(data);
    bad[12345] = (bad[12345] as number) ^ 1;
    await writeFile(join(dir, "sha256", hex), bad);
    const third = await replica({ dir });
    assert.ok((await readAll(third, found)).data.equals(data));
    assert.equal(proxy.count("GET", "blobs"), 1);
  });

  it("pulls at once of a blob planted corrupt in the folder all get the registry's bytes, fetched once", async () => {
    const { manifest, data } = await publish("planted", MiB);
    const dir = join(work, "planted");
    const hex = manifest.digest.slice("sha256:".length);
    await mkdir(join(dir, "sha256"), { recursive: true });
    const bad = Buffer.from(data);
    bad[777] = (bad[777] as number) ^ 1;
    await writeFile(join(dir, "sha256", hex), bad);
    const store = await replica({ dir });
    proxy.seen.length = 0;
    const pulls = await Promise.allSettled(Array.from({ length: 10 }, () => readAll(store, manifest)));
    for (const pull of pulls) {
      assert.equal(pull.status, "fulfilled", String((pull as PromiseRejectedResult).reason));
      assert.ok((pull as PromiseFulfilledResult<{ data: Buffer }>).value.data.equals(data));
    }
    assert.equal(proxy.count("GET", "blobs"), 1, JSON.stringify(proxy.seen));
  });

  it("a kept blob written over in place while the replica runs is checked again, never served", async () => {
    const { manifest, data } = await publish("overwritten", MiB);
    const store = await replica();
    assert.ok((await readAll(store, manifest)).data.equals(data));
    const bad = Buffer.from(data);
    bad[4321] = (bad[4321] as number) ^ 1;
    await writeFile(join(store.dir, "sha256", manifest.digest.slice("sha256:".length)), bad);
    proxy.seen.length = 0;
    assert.ok((await readAll(store, manifest)).data.equals(data), "the bytes written over it were served");
    assert.equal(proxy.count("GET", "blobs"), 1, "the blob was fetched again");
    // Its own touches (the eviction order) do not make it look written over.
    assert.ok((await readAll(store, manifest)).data.equals(data));
    assert.equal(proxy.count("GET", "blobs"), 1);
  });

  it("resolves a key once per TTL; a put or remove through the replica is seen there at once", async () => {
    await publish("ttl", 1000);
    const store = await replica({ resolveTtlMs: 60_000 });
    proxy.seen.length = 0;
    const looked = await Promise.all(Array.from({ length: 50 }, () => store.get(keyOf("ttl"))));
    assert.ok(looked.every((m) => m?.digest === looked[0]?.digest));
    assert.equal(proxy.count("GET", "manifests"), 1);
    assert.equal(store.getCached?.(keyOf("ttl"))?.digest, looked[0]?.digest);

    const replaced = await store.put(keyOf("ttl"), chunksOf(randomBytes(2000)));
    assert.equal((await store.get(keyOf("ttl")))?.digest, replaced.digest);
    assert.equal(await store.remove(keyOf("ttl")), true);
    assert.equal(await store.get(keyOf("ttl")), undefined);

    // Another replica's push is seen once the TTL has passed.
    const short = await replica({ resolveTtlMs: 300 });
    const pushed = await publish("ttl-other", 1000);
    const seen = await short.get(keyOf("ttl-other"));
    assert.equal(seen?.digest, pushed.manifest.digest);
    const republished = await publish("ttl-other", 1001);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal((await short.get(keyOf("ttl-other")))?.digest, republished.manifest.digest);
  });

  it("a key removed upstream is not served as last seen once the registry said so, nor after a restart; TTL 0 asks each time", async () => {
    await publish("outage-removed", 300_000);
    const dir = join(work, "outage-removed");
    const store = await replica({ dir, resolveTtlMs: 0 });
    const found = await store.get(keyOf("outage-removed"));
    assert.ok(found);
    await readAll(store, found);
    proxy.seen.length = 0;
    for (let ask = 0; ask < 3; ask += 1) await store.get(keyOf("outage-removed"));
    assert.equal(proxy.count("GET", "manifests"), 3, "--resolve-ttl 0 asks every time");
    try {
      proxy.down = true;
      assert.equal((await store.get(keyOf("outage-removed")))?.digest, found.digest);
      proxy.down = false;
      assert.equal(await publisher.remove(keyOf("outage-removed")), true);
      assert.equal(await store.get(keyOf("outage-removed")), undefined);
      proxy.down = true;
      await assert.rejects(
        store.get(keyOf("outage-removed")),
        (error: PluginError) => error.code === Code.Unavailable,
      );
      await store.close();
      const restarted = await replica({ dir, resolveTtlMs: 0 });
      await assert.rejects(
        restarted.get(keyOf("outage-removed")),
        (error: PluginError) => error.code === Code.Unavailable,
      );
    } finally {
      proxy.down = false;
    }
  });

  it("serves the keys it holds as last seen while the registry is down, also after a restart, and catches up", async () => {
    const held = await publish("outage-held", 500_000);
    await publish("outage-not-held", 500_000);
    const dir = join(work, "outage");
    const store = await replica({ dir, resolveTtlMs: 0 });
    const found = await store.get(keyOf("outage-held"));
    assert.ok(found);
    await readAll(store, found);
    assert.ok(await store.get(keyOf("outage-not-held")));

    proxy.down = true;
    try {
      const during = await store.get(keyOf("outage-held"));
      assert.equal(during?.digest, held.manifest.digest);
      assert.ok((await readAll(store, during as ArtifactManifest)).data.equals(held.data));
      assert.equal(store.degraded, true);
      // Its manifest is known but its blob is not here: nothing to serve.
      await assert.rejects(
        store.get(keyOf("outage-not-held")).then(async (m) => readAll(store, m as ArtifactManifest)),
        (error: PluginError) => error.code === Code.Unavailable,
      );

      await store.close();
      const restarted = await replica({ dir, resolveTtlMs: 0 });
      const afterRestart = await restarted.get(keyOf("outage-held"));
      assert.equal(afterRestart?.digest, held.manifest.digest);
      assert.ok((await readAll(restarted, afterRestart as ArtifactManifest)).data.equals(held.data));
      await assert.rejects(
        restarted.get(keyOf("never-seen")),
        (error: PluginError) => error.code === Code.Unavailable,
      );
      proxy.down = false;
      const updated = await publish("outage-held", 500_001);
      assert.equal((await restarted.get(keyOf("outage-held")))?.digest, updated.manifest.digest);
      assert.equal(restarted.degraded, false);
    } finally {
      proxy.down = false;
    }
  });
});
