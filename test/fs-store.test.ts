import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { createFsStore } from "../src/store/fs-store.js";
import { listPage } from "../src/store/manifest-pages.js";
import { tempDir } from "./helpers/server-process.js";

const key: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};

async function readAll(store: ArtifactStore, key: BuildKey): Promise<Buffer> {
  const manifest = await store.get(key);
  assert.ok(manifest, "manifest stored");
  const chunks: Buffer[] = [];
  for await (const chunk of store.read(manifest, { chunkSize: 4096 })) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function* failingAfter(data: Buffer): AsyncGenerator<Uint8Array> {
  yield data;
  throw new Error("connection lost");
}

describe("filesystem store across crashes and restarts", () => {
  it("keeps what it stored across a restart", async () => {
    const dir = await tempDir();
    try {
      const data = randomBytes(100_000);
      const first = await createFsStore({ dir: dir.path });
      await first.put(key, [data]);
      await first.close();
      const second = await createFsStore({ dir: dir.path });
      assert.deepEqual(await readAll(second, key), data);
      assert.equal((await second.list()).length, 1);
    } finally {
      await dir.remove();
    }
  });

  it("keeps serving a data directory of the flat index layout, its entries moved into index folders", async () => {
    const dir = await tempDir();
    try {
      const data = randomBytes(1000);
      const keys = ["counter", "gauge", "@acme/driver"].map((name) => ({
        ...key,
        plugin: { name, version: "1.0.0" },
      }));
      const first = await createFsStore({ dir: dir.path });
      for (const k of keys) await first.put(k, [data]);
      await first.close();
      // Older versions kept every manifest at index/<id>.json.
      const index = join(dir.path, "index");
      for (const folder of await readdir(index)) {
        for (const name of await readdir(join(index, folder))) {
          await rename(join(index, folder, name), join(index, name));
        }
        await rmdir(join(index, folder));
      }
      const second = await createFsStore({ dir: dir.path });
      for (const k of keys) assert.deepEqual(await readAll(second, k), data);
      assert.equal((await second.list()).length, 3);
      assert.deepEqual(await second.collectGarbage(), { removedBlobs: 0, freedBytes: 0 });
      assert.ok(
        (await readdir(index)).every((name) => /^[0-9a-f]{2}$/.test(name)),
        "no flat entry left",
      );
    } finally {
      await dir.remove();
    }
  });

  it("ends a page early when its manifests' annotations would pass about 2 MiB", async () => {
    const dir = await tempDir();
    try {
      const store = await createFsStore({ dir: dir.path });
      const big = { note: "n".repeat(900 * 1024) };
      for (const name of ["a", "b", "c"]) {
        await store.put({ ...key, plugin: { name, version: "1.0.0" } }, [Buffer.from(name)], {
          annotations: big,
        });
      }
      const first = await listPage(store, { limit: 100 });
      assert.equal(first.manifests.length, 2);
      assert.ok(first.next);
      const second = await listPage(store, { limit: 100, pageToken: first.next });
      assert.equal(second.manifests.length, 1);
      assert.equal(second.next, undefined);
    } finally {
      await dir.remove();
    }
  });

  it("never serves a leftover temporary file of a crashed write, and removes it at start-up", async () => {
    const dir = await tempDir();
    try {
      // What a crash midway through a put leaves: a half-written file in tmp/.
      await mkdir(join(dir.path, "tmp"), { recursive: true });
      await writeFile(join(dir.path, "tmp", "0b7c1f2e-crashed-write"), randomBytes(5000));
      const store = await createFsStore({ dir: dir.path });
      assert.equal(await store.get(key), undefined);
      assert.deepEqual(await store.list(), []);
      assert.deepEqual(await readdir(join(dir.path, "tmp")), []);
    } finally {
      await dir.remove();
    }
  });

  it("leaves no artifact and no temporary file when the data stream fails midway", async () => {
    const dir = await tempDir();
    try {
      const store = await createFsStore({ dir: dir.path });
      await assert.rejects(store.put(key, failingAfter(randomBytes(1000))), /connection lost/);
      assert.equal(await store.get(key), undefined);
      assert.deepEqual(await readdir(join(dir.path, "tmp")), []);
      assert.deepEqual(await readdir(join(dir.path, "blobs", "sha256")), []);
    } finally {
      await dir.remove();
    }
  });

  it("keeps the previous artifact of a key when a replacing write fails", async () => {
    const dir = await tempDir();
    try {
      const store = await createFsStore({ dir: dir.path });
      const old = randomBytes(2000);
      await store.put(key, [old]);
      await assert.rejects(store.put(key, failingAfter(randomBytes(1000))));
      assert.deepEqual(await readAll(store, key), old);
    } finally {
      await dir.remove();
    }
  });

  it("refuses to serve a blob whose size differs from its manifest", async () => {
    const dir = await tempDir();
    try {
      const store = await createFsStore({ dir: dir.path });
      const manifest = await store.put(key, [randomBytes(3000)]);
      const hex = manifest.digest.slice("sha256:".length);
      await writeFile(join(dir.path, "blobs", "sha256", hex.slice(0, 2), hex), randomBytes(10));
      await assert.rejects(readAll(store, key), (error: Error) => /manifest says 3000/.test(error.message));
    } finally {
      await dir.remove();
    }
  });
});
