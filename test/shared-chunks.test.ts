import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { SharedChunks } from "../src/server/shared-chunks.js";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { createFsStore } from "../src/store/fs-store.js";

const CHUNK = 16 * 1024;
const LIMIT = 8 * CHUNK;

describe("shared chunks over the filesystem store", () => {
  let dir: string;
  let store: ArtifactStore;
  let manifest: ArtifactManifest;
  const artifact = randomBytes(40 * CHUNK + 777);
  const digest = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "shared-chunks-test-"));
    store = await createFsStore({ dir });
    manifest = await store.put(
      { runtime: { version: "1.0.0", buildVersion: "node20" }, plugin: { name: "shared", version: "1.0.0" } },
      [artifact],
    );
  });

  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** One stream: holds each chunk for `holdMs` (its write to HTTP/2) before releasing it, as the pull path does. */
  async function pull(shared: SharedChunks, holdMs: number, signal = new AbortController().signal) {
    const blob = await shared.open(manifest);
    const parts: Buffer[] = [];
    const releases: Promise<void>[] = [];
    try {
      for (let position = 0; position < manifest.size; position += CHUNK) {
        const { chunk, release } = await blob.acquire(position, signal);
        // The frame is the encoded message: prefix, tag, length, then exactly the data.
        assert.equal(chunk.frame.subarray(chunk.frame.length - chunk.data.length).equals(chunk.data), true);
        releases.push(
          sleep(holdMs).then(() => {
            parts.push(Buffer.from(chunk.data)); // copied only when "written": the bytes must still be right
            release();
          }),
        );
        if (releases.length >= 2) await releases.shift();
      }
      await Promise.all(releases);
    } finally {
      blob.close();
    }
    return Buffer.concat(parts);
  }

  it("reads each chunk once for streams at the same place, and every stream gets every byte", async () => {
    const shared = new SharedChunks({ store, chunkSize: CHUNK, limitBytes: LIMIT });
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, shared.heldBytes);
    }, 1);
    const pulled = await Promise.all(Array.from({ length: 40 }, (_, i) => pull(shared, i % 3 === 0 ? 4 : 0)));
    clearInterval(sampler);
    for (const bytes of pulled) assert.equal(digest(bytes), digest(artifact));
    assert.ok(peak <= LIMIT, `held ${peak} bytes, over the limit of ${LIMIT}`);
    assert.equal(shared.heldBytes, 0);
    assert.equal(shared.chunkCount, 0);
    assert.equal(shared.openBlobCount, 0);
  });

  it("lets a stream that is cancelled while it waits for room go, and the others finish", async () => {
    const shared = new SharedChunks({ store, chunkSize: CHUNK, limitBytes: 2 * CHUNK });
    const cancelled = new AbortController();
    const slow = pull(shared, 30);
    const doomed = pull(shared, 0, cancelled.signal);
    setTimeout(() => cancelled.abort(), 5);
    await assert.rejects(doomed, /cancelled/);
    assert.equal(digest(await slow), digest(artifact));
    assert.equal(shared.heldBytes, 0);
    assert.equal(shared.chunkCount, 0);
    assert.equal(shared.openBlobCount, 0);
  });
});
