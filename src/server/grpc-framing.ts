import { createRequire } from "node:module";

/** The gRPC message prefix: a compressed flag and a 4-byte big-endian length. */
export const GRPC_PREFIX_BYTES = 5;

/** Serialized messages that are sent without grpc-js's copy (the pull path's frames), with their gRPC prefix. */
const inPlace = new WeakMap<Buffer, Buffer>();

/**
 * Writes the gRPC prefix into the GRPC_PREFIX_BYTES free in front of a
 * serialized message, owned by the caller, and marks the message: grpc-js
 * then sends prefix and message as they are. The prefix is written here,
 * before the message is handed to any stream, so a buffer shared by many
 * streams (shared-chunks.ts) is never written while one of them has it
 * queued. The caller leaves the bytes untouched until grpc-js calls back
 * the write.
 */
export function sendInPlace(serialized: Buffer): Buffer {
  if (serialized.byteOffset < GRPC_PREFIX_BYTES) return serialized;
  const frame = Buffer.from(
    serialized.buffer,
    serialized.byteOffset - GRPC_PREFIX_BYTES,
    serialized.length + GRPC_PREFIX_BYTES,
  );
  frame[0] = 0; // not compressed
  frame.writeUInt32BE(serialized.length, 1);
  inPlace.set(serialized, frame);
  return serialized;
}

let installed: boolean | undefined;

/**
 * grpc-js frames every outgoing message by allocating a new buffer of
 * message + 5 bytes and copying the message into it
 * (`BaseServerInterceptingCall.serializeMessage`); nothing in its public API
 * lets a handler pass a framed buffer. On the pull path that copy, the page
 * faults of touching a fresh buffer and the garbage it leaves were most of
 * the server's CPU per GiB (README, Performance). This wraps that one method:
 * a message whose `frame` was marked by `sendInPlace` goes out with the
 * prefix `sendInPlace` wrote in front of it, without a copy;
 * every other message takes grpc-js's own path. If a grpc-js release
 * changes the method, nothing is wrapped and every message is copied as
 * before. Answers whether the wrap is in place.
 *
 * The caller's buffer then travels to HTTP/2 as it is: the pull path reuses
 * it only when grpc-js calls the write back, which Node.js's HTTP/2 does
 * after the socket has taken the bytes (Http2Session::ClearOutgoing).
 * test/pull-path.test.ts checks the bytes of concurrent pulls end to end.
 */
export function installInPlaceFraming(): boolean {
  if (installed !== undefined) return installed;
  installed = false;
  try {
    const require = createRequire(import.meta.url);
    const internals = require("@grpc/grpc-js/build/src/server-interceptors.js") as {
      BaseServerInterceptingCall?: { prototype: { serializeMessage?: (value: unknown) => Buffer } };
    };
    const prototype = internals.BaseServerInterceptingCall?.prototype;
    const original = prototype?.serializeMessage;
    if (!prototype || typeof original !== "function" || original.length !== 1) return false;
    prototype.serializeMessage = function (this: unknown, value: unknown): Buffer {
      const serialized = (value as { frame?: unknown } | null)?.frame;
      const framed = serialized instanceof Buffer ? inPlace.get(serialized) : undefined;
      return framed ?? original.call(this, value);
    };
    installed = true;
  } catch {
    // Another layout of grpc-js: keep its own framing.
  }
  return installed;
}
