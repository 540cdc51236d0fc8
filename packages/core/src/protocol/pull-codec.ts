/**
 * Hand-written encoder for PullPluginResponse, the message on the hot path:
 * `bytes data = 1` is a tag byte, a varint length and the bytes. A message
 * framed in place by `frameInPlace` is sent as it is, with no copy; any other
 * is copied once into an exact-size output, where the generated codec grows a
 * buffer and copies again. test/pull-codec.test.ts proves all three produce
 * the same bytes.
 */
export function encodePullPluginResponse(message: { data: Uint8Array; frame?: Buffer }): Buffer {
  if (message.frame) return message.frame;
  const length = message.data.byteLength;
  // proto3 omits a field that holds its default (empty bytes).
  if (length === 0) return Buffer.alloc(0);
  const headerLength = 1 + varintLength(length);
  const out = Buffer.allocUnsafe(headerLength + length);
  writeHeader(out, 0, length);
  out.set(message.data, headerLength);
  return out;
}

/** Bytes a chunk needs free in front of it for `frameInPlace`: the tag and a 32-bit varint. */
export const PULL_FRAME_HEADROOM = 6;

/**
 * The encoded PullPluginResponse{data} without copying `data`: the tag and
 * length are written into the bytes just before it in its underlying buffer,
 * and the answer is a view from there to the end of `data`. Only for chunks
 * whose caller owns those bytes (the store read them at an offset of
 * PULL_FRAME_HEADROOM); undefined when there is no room in front.
 */
export function frameInPlace(data: Uint8Array): Buffer | undefined {
  const length = data.byteLength;
  if (length === 0) return Buffer.alloc(0);
  const headerLength = 1 + varintLength(length);
  if (data.byteOffset < headerLength) return undefined;
  const frame = Buffer.from(data.buffer, data.byteOffset - headerLength, headerLength + length);
  writeHeader(frame, 0, length);
  return frame;
}

function writeHeader(out: Buffer, start: number, length: number): void {
  out[start] = 0x0a; // field 1, wire type 2 (length-delimited)
  let value = length;
  let at = start + 1;
  while (value > 0x7f) {
    out[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  out[at] = value;
}

function varintLength(value: number): number {
  let bytes = 1;
  while (value > 0x7f) {
    value >>>= 7;
    bytes += 1;
  }
  return bytes;
}

/**
 * Decodes PullPluginResponse without copying: the chunk is a view into the
 * received frame. Unknown fields are skipped, as protobuf requires.
 */
export function decodePullPluginResponse(frame: Buffer): { data: Buffer } {
  let at = 0;
  let data: Buffer = EMPTY;
  while (at < frame.length) {
    const [tag, afterTag] = readVarint(frame, at);
    at = afterTag;
    const wireType = tag & 7;
    if (wireType === 2) {
      const [length, afterLength] = readVarint(frame, at);
      const end = afterLength + length;
      if (end > frame.length) throw new Error("PullPluginResponse: truncated field");
      if (tag >>> 3 === 1) data = frame.subarray(afterLength, end);
      at = end;
    } else if (wireType === 0) {
      at = readVarint(frame, at)[1];
    } else if (wireType === 1) {
      at += 8;
    } else if (wireType === 5) {
      at += 4;
    } else {
      throw new Error(`PullPluginResponse: unsupported wire type ${wireType}`);
    }
  }
  return { data };
}

const EMPTY = Buffer.alloc(0);

function readVarint(buffer: Buffer, start: number): [number, number] {
  let value = 0;
  let shift = 0;
  let at = start;
  for (;;) {
    const byte = buffer[at++];
    if (byte === undefined) throw new Error("PullPluginResponse: truncated varint");
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, at];
    shift += 7;
    if (shift > 49) throw new Error("PullPluginResponse: varint too long");
  }
}
