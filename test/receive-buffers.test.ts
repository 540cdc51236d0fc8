import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { ReceiveBuffers } from "atomix-plugins-client/transport/wire/receive-buffers";

/**
 * Drives ReceiveBuffers the way a socket with `onread` does: ask for memory,
 * read into it, and keep the artifact bytes found there, while a writer that
 * is as slow as the test says holds the buffers it was given.
 */
describe("ReceiveBuffers", () => {
  const SIZE = 1000;
  const OVERFLOW = 100;

  function setup(buffers = 3) {
    const written: Buffer[] = [];
    const held: (() => void)[] = [];
    const receive = new ReceiveBuffers(
      Array.from({ length: buffers }, () => Buffer.alloc(SIZE)),
      Buffer.alloc(OVERFLOW),
      (segments, release) => {
        // The writer copies out what it got, as a file would.
        written.push(Buffer.concat(segments));
        held.push(release);
      },
    );
    /** One read of `bytes` from `source`: everything but a 3-byte "frame header" is artifact. */
    const read = (source: Buffer): number => {
      const memory = receive.next();
      const bytes = Math.min(memory.length, source.length);
      source.copy(memory, 0, 0, bytes);
      const view = receive.received(bytes);
      if (view.length > 3) receive.keep(view.subarray(3));
      return bytes;
    };
    return { receive, written, held, read };
  }

  it("hands over the artifact bytes between the headers, in order, without losing any", () => {
    const { receive, written, held, read } = setup();
    const stream = randomBytes(10_000);
    const expected: Buffer[] = [];
    let at = 0;
    while (at < stream.length) {
      const piece = stream.subarray(at, at + 250);
      const bytes = read(piece);
      expected.push(piece.subarray(3, bytes));
      at += bytes;
      // A fast writer: everything handed over is written at once.
      for (const release of held.splice(0)) release();
    }
    receive.flush();
    assert.ok(Buffer.concat(written).equals(Buffer.concat(expected)));
  });

  it("says when there is no room, reads into the overflow buffer, and copies it out once a buffer is free", () => {
    const { receive, written, held, read } = setup(2);
    const piece = (fill: number) => Buffer.alloc(400, fill);
    // Reads fill the first buffer (400 + 400 + the 200 left), then the second, while the writer holds both.
    assert.deepEqual(
      [1, 2, 3, 4].map((fill) => read(piece(fill))),
      [400, 400, 200, 400],
    );
    assert.equal(written.length, 1);
    assert.equal(receive.hasRoom, true);
    assert.deepEqual(
      [5, 6].map((fill) => read(piece(fill))),
      [400, 200],
    );
    assert.equal(receive.hasRoom, false, "the socket must pause");
    // The socket asks for memory before it pauses: it gets the overflow buffer.
    const memory = receive.next();
    assert.equal(memory.length, OVERFLOW);
    assert.equal(written.length, 2);
    // The writer finishes the first buffer; the socket resumes and its read lands in the overflow.
    held.shift()?.();
    memory.fill(7);
    receive.keep(receive.received(OVERFLOW).subarray(3));
    receive.flush();
    assert.equal(written.length, 3);
    const kept = Buffer.concat(written);
    assert.equal(kept.length, 397 + 397 + 197 + 397 + 397 + 197 + 97);
    assert.ok(kept.subarray(-97).equals(Buffer.alloc(97, 7)), "the overflow's bytes come last");
    assert.ok(kept.subarray(0, 397).equals(Buffer.alloc(397, 1)));
  });

  it("keeps a read that arrives while paused and every buffer is held, as a TLS socket may deliver one", () => {
    const { receive, written, read } = setup(1);
    assert.deepEqual(
      [1, 2, 3].map((fill) => read(Buffer.alloc(400, fill))),
      [400, 400, 200],
    );
    assert.equal(receive.hasRoom, false);
    // No buffer was released, yet the (paused) socket delivers into the overflow buffer.
    const memory = receive.next();
    assert.equal(memory.length, OVERFLOW);
    memory.fill(9);
    receive.keep(receive.received(OVERFLOW).subarray(3));
    receive.flush();
    const kept = Buffer.concat(written);
    assert.equal(kept.length, 397 + 397 + 197 + 97);
    assert.ok(kept.subarray(-97).equals(Buffer.alloc(97, 9)), "the read is kept, after the bytes before it");
  });
});
