import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest, Digest } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { listPage } from "../src/store/manifest-pages.js";

/** A store under test and how to throw it away. */
export interface StoreFixture {
  store: ArtifactStore;
  dispose(): Promise<void>;
}

export function keyOf(name: string, version = "1.0.0", runtime = "1.0.0", build = "node20"): BuildKey {
  return { runtime: { version: runtime, buildVersion: build }, plugin: { name, version } };
}

export function digestOf(data: Uint8Array): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export async function* chunksOf(data: Buffer, size = 7000): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.byteLength; i += size) yield data.subarray(i, i + size);
}

export async function readAll(
  store: ArtifactStore,
  manifest: ArtifactManifest,
  options: { offset?: number; chunkSize?: number } = {},
): Promise<{ data: Buffer; chunks: number[] }> {
  const parts: Buffer[] = [];
  for await (const chunk of store.read(manifest, {
    chunkSize: options.chunkSize ?? 4096,
    offset: options.offset ?? 0,
  })) {
    parts.push(chunk);
  }
  return { data: Buffer.concat(parts), chunks: parts.map((p) => p.byteLength) };
}

async function rejectsWith(promise: Promise<unknown>, code: Code): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof PluginError, `a PluginError, got ${String(error)}`);
    assert.equal(error.code, code, `${Code[code]} expected, got ${Code[error.code]}: ${error.message}`);
    return true;
  });
}

/**
 * The ArtifactStore contract, run over every implementation:
 * `describeStore("fs", makeFsStore)`, `describeStore("oci", makeOciStore)`.
 * `makeStore` gives a fresh, empty store for each test.
 */
export function describeStore(name: string, makeStore: () => Promise<StoreFixture>): void {
  /** Runs `body` over a fresh store and disposes of it whatever happens. */
  const withStore = (body: (store: ArtifactStore) => Promise<void>) => async () => {
    const fixture = await makeStore();
    try {
      await body(fixture.store);
    } finally {
      await fixture.store.close();
      await fixture.dispose();
    }
  };

  describe(`artifact store contract: ${name}`, () => {
    it(
      "answers undefined for a key it never stored",
      withStore(async (store) => {
        assert.equal(await store.get(keyOf("counter")), undefined);
        assert.deepEqual(await store.list(), []);
        assert.equal(await store.remove(keyOf("counter")), false);
      }),
    );

    it(
      "stores an artifact and gives back its manifest and bytes",
      withStore(async (store) => {
        const data = randomBytes(50_000);
        const key = keyOf("@acme/driver", "1.2.0-rc.1+build.5", "2.0.0", "node20.20.2");
        const annotations = { "dev.atomix.toolchain": "node", "dev.atomix.source": "catalog:driver" };
        const stored = await store.put(key, chunksOf(data), { mediaType: "text/javascript", annotations });
        assert.equal(stored.digest, digestOf(data));
        assert.equal(stored.size, data.byteLength);
        assert.equal(stored.mediaType, "text/javascript");
        assert.deepEqual(stored.key, key);
        assert.ok(!Number.isNaN(Date.parse(stored.createdAt)), "createdAt is a date");
        const got = await store.get(key);
        assert.deepEqual(got, stored);
        assert.deepEqual((await readAll(store, stored)).data, data);
        assert.equal(
          await store.get(keyOf("@acme/driver", "1.2.0")),
          undefined,
          "another version is another key",
        );
      }),
    );

    it(
      "reads every size and offset around the chunk size in chunks of exactly that size",
      withStore(async (store) => {
        const chunk = 1024;
        for (const size of [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 5]) {
          const data = randomBytes(size);
          const manifest = await store.put(keyOf("sizes", `1.0.${size}`), chunksOf(data, 333));
          assert.equal(manifest.size, size);
          for (const offset of new Set(
            [0, 1, chunk - 1, chunk, size - 1, size].filter((o) => o >= 0 && o <= size),
          )) {
            const { data: read, chunks } = await readAll(store, manifest, { offset, chunkSize: chunk });
            assert.deepEqual(read, data.subarray(offset), `size ${size} offset ${offset}`);
            assert.ok(
              chunks.slice(0, -1).every((c) => c === chunk),
              `size ${size} offset ${offset}: full chunks ${chunks}`,
            );
            assert.ok(
              chunks.every((c) => c > 0),
              "no empty chunks",
            );
          }
        }
      }),
    );

    it(
      "answers OUT_OF_RANGE for an offset past the end",
      withStore(async (store) => {
        const manifest = await store.put(keyOf("counter"), chunksOf(randomBytes(100)));
        await rejectsWith(readAll(store, manifest, { offset: 101 }), Code.OutOfRange);
      }),
    );

    it(
      "refuses bytes that do not match the expected digest or size, and stores nothing",
      withStore(async (store) => {
        const data = randomBytes(10_000);
        await rejectsWith(
          store.put(keyOf("counter"), chunksOf(data), { expectedDigest: digestOf(randomBytes(8)) }),
          Code.InvalidArgument,
        );
        await rejectsWith(
          store.put(keyOf("counter"), chunksOf(data), {
            expectedDigest: digestOf(data),
            expectedSize: 9_999,
          }),
          Code.InvalidArgument,
        );
        assert.equal(await store.get(keyOf("counter")), undefined);
        assert.deepEqual(await store.list(), []);
        assert.deepEqual(await store.collectGarbage(), { removedBlobs: 0, freedBytes: 0 });
        const stored = await store.put(keyOf("counter"), chunksOf(data), {
          expectedDigest: digestOf(data),
          expectedSize: data.byteLength,
        });
        assert.equal(stored.digest, digestOf(data));
      }),
    );

    it(
      "refuses an artifact over maxSize with RESOURCE_EXHAUSTED and stores nothing",
      withStore(async (store) => {
        await rejectsWith(
          store.put(keyOf("counter"), chunksOf(randomBytes(5000), 1000), { maxSize: 4999 }),
          Code.ResourceExhausted,
        );
        assert.equal(await store.get(keyOf("counter")), undefined);
        assert.deepEqual(await store.collectGarbage(), { removedBlobs: 0, freedBytes: 0 });
        const exact = await store.put(keyOf("counter"), chunksOf(randomBytes(5000)), { maxSize: 5000 });
        assert.equal(exact.size, 5000);
      }),
    );

    it(
      "keeps nothing of a put whose data stream fails",
      withStore(async (store) => {
        async function* broken(): AsyncGenerator<Uint8Array> {
          yield randomBytes(1000);
          throw new Error("connection lost");
        }
        await assert.rejects(store.put(keyOf("counter"), broken()));
        assert.equal(await store.get(keyOf("counter")), undefined);
      }),
    );

    it(
      "keeps the previous artifact when a put is aborted, even after its data has ended",
      withStore(async (store) => {
        const good = randomBytes(20_000);
        const previous = await store.put(keyOf("counter"), chunksOf(good));
        const reason = new PluginError(Code.Cancelled, "the push was cancelled");
        const midway = new AbortController();
        async function* abortedMidway(): AsyncGenerator<Uint8Array> {
          yield randomBytes(1000);
          midway.abort(reason);
          yield randomBytes(1000);
        }
        await rejectsWith(
          store.put(keyOf("counter"), abortedMidway(), { signal: midway.signal }),
          Code.Cancelled,
        );
        const atTheEnd = new AbortController();
        async function* abortedAtTheEnd(): AsyncGenerator<Uint8Array> {
          yield randomBytes(1000);
          atTheEnd.abort(reason);
        }
        await rejectsWith(
          store.put(keyOf("counter"), abortedAtTheEnd(), { signal: atTheEnd.signal }),
          Code.Cancelled,
        );
        assert.deepEqual(await store.get(keyOf("counter")), previous);
        assert.deepEqual((await readAll(store, previous)).data, good);
      }),
    );

    it(
      "refuses data longer than expectedSize as soon as it is, without reading the rest",
      withStore(async (store) => {
        let produced = 0;
        async function* endless(): AsyncGenerator<Uint8Array> {
          for (;;) {
            produced += 1000;
            yield randomBytes(1000);
          }
        }
        await rejectsWith(
          store.put(keyOf("counter"), endless(), { expectedSize: 2500 }),
          Code.InvalidArgument,
        );
        assert.equal(produced, 3000);
        assert.equal(await store.get(keyOf("counter")), undefined);
      }),
    );

    it(
      "lists page by page in a stable order: a continuation token resumes, even after keys change",
      withStore(async (store) => {
        const text = (m: ArtifactManifest) =>
          `${m.key.plugin.name}@${m.key.plugin.version}/${m.key.runtime.version}`;
        const blob = randomBytes(16);
        for (let i = 0; i < 24; i++) {
          const name = i % 3 === 0 ? "gauge" : "counter";
          await store.put(keyOf(name, `1.0.${i}`, i % 2 ? "2.0.0" : "1.0.0"), [blob]);
        }
        const seen: ArtifactManifest[] = [];
        let token: string | undefined;
        let pages = 0;
        do {
          const page = await listPage(store, { limit: 5, pageToken: token });
          assert.ok(page.manifests.length <= 5, "a page never holds more than its limit");
          seen.push(...page.manifests);
          token = page.next;
          pages += 1;
          // A key already listed goes away: the next page still resumes where this one ended.
          if (pages === 2) await store.remove((seen[0] as ArtifactManifest).key);
        } while (token);
        assert.equal(pages, 5);
        assert.equal(new Set(seen.map(text)).size, 24, "every key listed once");
        // The order is the store's own and stable: one page of all gives the same.
        const whole = await listPage(store, { limit: 100 });
        assert.equal(whole.next, undefined);
        assert.deepEqual(whole.manifests.map(text), seen.slice(1).map(text));

        const filtered: string[] = [];
        token = undefined;
        do {
          const page = await listPage(store, {
            limit: 2,
            pluginName: "gauge",
            runtimeVersion: "2.0.0",
            pageToken: token,
          });
          filtered.push(...page.manifests.map(text));
          token = page.next;
        } while (token);
        assert.deepEqual(filtered.sort(), [
          "gauge@1.0.15/2.0.0",
          "gauge@1.0.21/2.0.0",
          "gauge@1.0.3/2.0.0",
          "gauge@1.0.9/2.0.0",
        ]);

        await rejectsWith(listPage(store, { pageToken: "bm90IGEgcG9zaXRpb24" }), Code.InvalidArgument);
        await rejectsWith(listPage(store, { pageToken: "not base64url!" }), Code.InvalidArgument);
        await rejectsWith(listPage(store, { limit: -1 }), Code.InvalidArgument);
      }),
    );

    it(
      "pages through list() for a store without a scan of its own, a store in front of another",
      withStore(async (store) => {
        for (const name of ["e", "a", "d", "b", "c"]) await store.put(keyOf(name), [randomBytes(8)]);
        const fronting: ArtifactStore = { ...store, scan: undefined, list: (filter) => store.list(filter) };
        const names: string[] = [];
        let token: string | undefined;
        do {
          const page = await listPage(fronting, { limit: 2, pageToken: token });
          assert.ok(page.manifests.length <= 2);
          names.push(...page.manifests.map((m) => m.key.plugin.name));
          token = page.next;
        } while (token);
        assert.deepEqual(names, ["a", "b", "c", "d", "e"]);
      }),
    );

    it(
      "lists what it holds, filtered by plugin name and runtime version",
      withStore(async (store) => {
        await store.put(keyOf("counter", "1.0.0", "1.0.0"), chunksOf(randomBytes(10)));
        await store.put(keyOf("counter", "1.1.0", "2.0.0"), chunksOf(randomBytes(10)));
        await store.put(keyOf("@acme/driver", "1.0.0", "1.0.0"), chunksOf(randomBytes(10)));
        await store.put(
          keyOf("example.com/drivers/counter", "v1.0.0", "1.0.0", "go1.19.8"),
          chunksOf(randomBytes(10)),
        );
        const names = (list: ArtifactManifest[]) =>
          list.map((m) => `${m.key.plugin.name}@${m.key.plugin.version}/${m.key.runtime.version}`);
        assert.equal((await store.list()).length, 4);
        assert.deepEqual(names(await store.list({ pluginName: "counter" })), [
          "counter@1.0.0/1.0.0",
          "counter@1.1.0/2.0.0",
        ]);
        assert.deepEqual(names(await store.list({ runtimeVersion: "2.0.0" })), ["counter@1.1.0/2.0.0"]);
        assert.deepEqual(names(await store.list({ pluginName: "@acme/driver", runtimeVersion: "1.0.0" })), [
          "@acme/driver@1.0.0/1.0.0",
        ]);
        assert.deepEqual(names(await store.list({ pluginName: "example.com/drivers/counter" })), [
          "example.com/drivers/counter@v1.0.0/1.0.0",
        ]);
        assert.deepEqual(await store.list({ pluginName: "absent" }), []);
      }),
    );

    it(
      "replaces the artifact of a key that is stored again",
      withStore(async (store) => {
        await store.put(keyOf("counter"), chunksOf(randomBytes(300)));
        const second = randomBytes(400);
        const replaced = await store.put(keyOf("counter"), chunksOf(second));
        assert.deepEqual(await store.get(keyOf("counter")), replaced);
        assert.deepEqual((await readAll(store, replaced)).data, second);
        assert.equal((await store.list()).length, 1);
      }),
    );

    it(
      "forgets a removed key",
      withStore(async (store) => {
        await store.put(keyOf("counter"), chunksOf(randomBytes(300)));
        await store.put(keyOf("other"), chunksOf(randomBytes(300)));
        assert.equal(await store.remove(keyOf("counter")), true);
        assert.equal(await store.get(keyOf("counter")), undefined);
        assert.equal(await store.remove(keyOf("counter")), false);
        assert.deepEqual(
          (await store.list()).map((m) => m.key.plugin.name),
          ["other"],
        );
      }),
    );

    it(
      "collects the blobs of removed and replaced artifacts and keeps every referenced one",
      withStore(async (store) => {
        const shared = randomBytes(2000);
        const lonely = randomBytes(3000);
        const first = randomBytes(1500);
        const kept = await store.put(keyOf("kept"), chunksOf(shared));
        await store.put(keyOf("twin"), chunksOf(shared));
        await store.put(keyOf("lonely"), chunksOf(lonely));
        await store.put(keyOf("replaced"), chunksOf(first));
        const replacement = await store.put(keyOf("replaced"), chunksOf(randomBytes(1600)));
        assert.equal(await store.remove(keyOf("twin")), true);
        assert.equal(await store.remove(keyOf("lonely")), true);

        const report = await store.collectGarbage();
        assert.deepEqual(report, { removedBlobs: 2, freedBytes: lonely.byteLength + first.byteLength });
        assert.deepEqual((await readAll(store, kept)).data, shared, "a blob another key shares stays");
        assert.equal((await readAll(store, replacement)).data.byteLength, 1600);
        assert.deepEqual(await store.collectGarbage(), { removedBlobs: 0, freedBytes: 0 });
        // The collected bytes can be stored again.
        const again = await store.put(keyOf("lonely"), chunksOf(lonely));
        assert.deepEqual((await readAll(store, again)).data, lonely);
      }),
    );

    it(
      "leaves one consistent manifest after concurrent puts of one key",
      withStore(async (store) => {
        const contents = Array.from({ length: 4 }, (_, i) => randomBytes(20_000 + i));
        const results = await Promise.all(
          contents.map((data) => store.put(keyOf("counter"), chunksOf(data, 4096))),
        );
        const manifest = await store.get(keyOf("counter"));
        assert.ok(manifest);
        assert.ok(
          results.some((r) => r.digest === manifest.digest),
          "the manifest is one of the puts'",
        );
        const { data } = await readAll(store, manifest);
        assert.equal(digestOf(data), manifest.digest);
        assert.equal(data.byteLength, manifest.size);
        assert.equal((await store.list()).length, 1);
      }),
    );

    it(
      "lets a reader stop early and still serves the artifact whole afterwards",
      withStore(async (store) => {
        const data = randomBytes(200_000);
        const manifest = await store.put(keyOf("counter"), chunksOf(data));
        for (let i = 0; i < 20; i++) {
          for await (const chunk of store.read(manifest, { chunkSize: 1000, offset: i })) {
            assert.equal(chunk.byteLength, 1000);
            break;
          }
        }
        assert.deepEqual((await readAll(store, manifest, { chunkSize: 65_536 })).data, data);
      }),
    );

    it(
      "stops a read whose signal is aborted",
      withStore(async (store) => {
        const manifest = await store.put(keyOf("counter"), chunksOf(randomBytes(300_000)));
        const controller = new AbortController();
        let received = 0;
        await assert.rejects(async () => {
          for await (const chunk of store.read(manifest, { chunkSize: 10_000, signal: controller.signal })) {
            received += chunk.byteLength;
            controller.abort();
          }
        });
        assert.ok(received < 300_000, `stopped after ${received} bytes`);
      }),
    );

    it(
      "yields buffers the caller may keep",
      withStore(async (store) => {
        const data = randomBytes(10_000);
        const manifest = await store.put(keyOf("counter"), chunksOf(data));
        const kept: Buffer[] = [];
        for await (const chunk of store.read(manifest, { chunkSize: 1000 })) kept.push(chunk);
        assert.deepEqual(Buffer.concat(kept), data);
      }),
    );
  });
}
