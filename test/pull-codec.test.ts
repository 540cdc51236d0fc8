import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { PullPluginResponse } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import {
  decodePullPluginResponse,
  encodePullPluginResponse,
  frameInPlace,
  PULL_FRAME_HEADROOM,
} from "atomix-plugins-core/protocol/pull-codec";
import { BufferPool } from "../src/server/buffer-pool.js";
import { createFsStore } from "../src/store/fs-store.js";

/** Lengths around every varint boundary up to the largest chunk the server sends. */
const LENGTHS = [0, 1, 127, 128, 16383, 16384, 65536, 2 ** 21 - 1, 2 ** 21, 4 * 1024 * 1024 - 64];

function generated(data: Buffer): Buffer {
  return Buffer.from(PullPluginResponse.encode({ data }).finish());
}

/** A chunk read into a buffer with headroom in front, as the store reads it for the pull path. */
function chunkWithHeadroom(data: Uint8Array): Buffer {
  const buffer = Buffer.alloc(PULL_FRAME_HEADROOM + data.byteLength, 0xee);
  buffer.set(data, PULL_FRAME_HEADROOM);
  return buffer.subarray(PULL_FRAME_HEADROOM);
}

describe("PullPluginResponse codec", () => {
  it("encodes the same bytes as the generated codec", () => {
    for (const length of LENGTHS) {
      const data = randomBytes(length);
      assert.deepEqual(encodePullPluginResponse({ data }), generated(data), `length ${length}`);
    }
  });

  it("frames a chunk in place with the same bytes as the generated codec, without copying it", () => {
    for (const length of LENGTHS) {
      const data = randomBytes(length);
      const chunk = chunkWithHeadroom(data);
      const frame = frameInPlace(chunk);
      assert.ok(frame, `length ${length}`);
      assert.deepEqual(frame, generated(data), `length ${length}`);
      if (length > 0) {
        assert.equal(frame.buffer, chunk.buffer, "the frame shares the chunk's memory");
        assert.equal(frame.byteOffset + frame.length, chunk.byteOffset + chunk.length);
      }
      assert.deepEqual(
        encodePullPluginResponse({ data: chunk, ...(frame ? { frame } : {}) }),
        generated(data),
      );
    }
  });

  it("refuses to frame in place a chunk with no room in front of it", () => {
    assert.equal(frameInPlace(Buffer.from(new ArrayBuffer(8), 0, 8)), undefined);
  });

  it("skips unknown fields when decoding", () => {
    const data = randomBytes(10);
    const known = Buffer.from(PullPluginResponse.encode({ data }).finish());
    // field 2 varint 150, field 3 fixed64, then field 1
    const withUnknown = Buffer.concat([Buffer.from([0x10, 0x96, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0]), known]);
    assert.deepEqual(decodePullPluginResponse(withUnknown).data, data);
  });

  it("decodes what it encodes, as a view of the frame", () => {
    for (const length of LENGTHS) {
      const data = randomBytes(length);
      const frame = encodePullPluginResponse({ data });
      const decoded = decodePullPluginResponse(frame);
      assert.deepEqual(Buffer.from(decoded.data), data);
      if (length > 0) assert.equal(decoded.data.buffer, frame.buffer);
    }
  });
});

describe("BufferPool", () => {
  it("recycles released buffers and ignores buffers it did not allocate", () => {
    const pool = new BufferPool();
    const first = pool.acquire(1024);
    assert.ok(pool.owns(first.subarray(6)));
    pool.release(first.subarray(6));
    const second = pool.acquire(512);
    assert.equal(second.buffer, first.buffer, "a smaller request reuses the free buffer");
    assert.equal(second.length, 512);
    const foreign = Buffer.alloc(16);
    assert.equal(pool.owns(foreign), false);
    pool.release(foreign);
    assert.notEqual(pool.acquire(16).buffer, foreign.buffer);
  });
});

describe("fs store reads for the pull path", () => {
  it("reads chunks into supplied buffers behind the requested headroom", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pull-codec-test-"));
    try {
      const store = await createFsStore({ dir: join(dir, "data") });
      const bytes = randomBytes(10_000);
      const file = join(dir, "artifact");
      await writeFile(file, bytes);
      const key = {
        runtime: { version: "1.0.0", buildVersion: "node20" },
        plugin: { name: "codec", version: "1.0.0" },
      };
      const manifest = await store.put(
        key,
        (async function* () {
          yield bytes;
        })(),
      );
      const pool = new BufferPool();
      const frames: Buffer[] = [];
      for await (const chunk of store.read(manifest, {
        offset: 1000,
        chunkSize: 4096,
        headroom: PULL_FRAME_HEADROOM,
        allocate: pool.acquire,
      })) {
        assert.ok(pool.owns(chunk));
        assert.ok(chunk.byteOffset >= PULL_FRAME_HEADROOM);
        const frame = frameInPlace(chunk);
        assert.ok(frame);
        frames.push(Buffer.from(decodePullPluginResponse(frame).data));
        pool.release(chunk);
      }
      assert.deepEqual(
        frames.map((f) => f.length),
        [4096, 4096, 808],
      );
      assert.deepEqual(Buffer.concat(frames), bytes.subarray(1000));
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
