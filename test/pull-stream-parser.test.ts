import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { Code, type PluginError } from "atomix-plugins-core/errors/plugin-error";
import { PullPluginResponse } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import { PullStreamParser } from "atomix-plugins-core/protocol/pull-stream-parser";

/** gRPC's length prefix in front of one encoded message. */
function grpcFrame(message: Uint8Array, compressed = false): Buffer {
  const out = Buffer.alloc(5 + message.byteLength);
  out[0] = compressed ? 1 : 0;
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
}

const encoded = (data: Buffer) => grpcFrame(PullPluginResponse.encode({ data }).finish());

/** Feeds `stream` cut into pieces of `size` bytes; returns the data passed on. */
function parse(stream: Buffer, size: number): { data: Buffer; atBoundary: boolean } {
  const out: Buffer[] = [];
  const parser = new PullStreamParser((data) => out.push(Buffer.from(data)));
  for (let at = 0; at < stream.length; at += size) parser.push(stream.subarray(at, at + size));
  return { data: Buffer.concat(out), atBoundary: parser.atMessageBoundary };
}

function rejects(stream: Buffer, pattern: RegExp): void {
  const parser = new PullStreamParser(() => {});
  assert.throws(
    () => parser.push(stream),
    (error: PluginError) => error.code === Code.Internal && pattern.test(error.message),
  );
}

describe("PullStreamParser", () => {
  const chunks = [randomBytes(300), Buffer.alloc(0), randomBytes(1), randomBytes(20_000)];
  const stream = Buffer.concat(chunks.map(encoded));
  const expected = Buffer.concat(chunks);

  it("passes on every chunk's bytes whatever the cuts, down to one byte at a time", () => {
    for (const size of [1, 2, 3, 5, 6, 7, 127, 4096, stream.length]) {
      const { data, atBoundary } = parse(stream, size);
      assert.ok(data.equals(expected), `cut every ${size} bytes`);
      assert.ok(atBoundary);
    }
  });

  it("passes views of the received bytes, not copies", () => {
    const received = encoded(randomBytes(1000));
    const views: Buffer[] = [];
    new PullStreamParser((data) => views.push(data)).push(received);
    assert.equal(views.length, 1);
    assert.equal(views[0]?.buffer, received.buffer);
  });

  it("skips fields it does not know, of every wire type", () => {
    const data = randomBytes(50);
    const message = Buffer.concat([
      Buffer.from([0x10, 0x96, 0x01]), // field 2, varint 150
      Buffer.from([0x19, 1, 2, 3, 4, 5, 6, 7, 8]), // field 3, fixed64
      Buffer.from([0x22, 3, 9, 9, 9]), // field 4, 3 bytes
      Buffer.from([0x0a, data.length]),
      data,
      Buffer.from([0x2d, 1, 2, 3, 4]), // field 5, fixed32
    ]);
    for (const size of [1, 4, message.length + 5]) {
      assert.ok(parse(grpcFrame(message), size).data.equals(data));
    }
  });

  it("knows a stream cut inside a message", () => {
    const whole = encoded(randomBytes(100));
    assert.equal(parse(whole.subarray(0, 3), 3).atBoundary, false);
    assert.equal(parse(whole.subarray(0, 50), 7).atBoundary, false);
  });

  it("refuses what is not a PullPluginResponse stream", () => {
    rejects(grpcFrame(Buffer.from([0x0a, 1, 7]), true), /compressed/);
    rejects(grpcFrame(Buffer.from([0x0a, 5, 1, 2])), /past the end of its message/);
    rejects(grpcFrame(Buffer.from([0x0a, 1, 1, 0x0a, 1, 2])), /two data fields/);
    rejects(grpcFrame(Buffer.from([0x0b])), /wire type 3/);
    rejects(grpcFrame(Buffer.from([0x02, 0])), /field number 0/);
    rejects(grpcFrame(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), /varint longer/);
  });
});
