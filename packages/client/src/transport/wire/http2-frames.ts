/**
 * The few HTTP/2 frames (RFC 9113) a client of one server-streaming gRPC
 * call sends, and the frame-by-frame reader for what comes back. Only the
 * client side of one stream is covered; everything else a server may send is
 * either answered (SETTINGS, PING), noted (GOAWAY, RST_STREAM) or skipped.
 */

export const FrameType = {
  Data: 0x0,
  Headers: 0x1,
  RstStream: 0x3,
  Settings: 0x4,
  PushPromise: 0x5,
  Ping: 0x6,
  GoAway: 0x7,
  WindowUpdate: 0x8,
  Continuation: 0x9,
} as const;

export const Flag = {
  EndStream: 0x1,
  Ack: 0x1,
  EndHeaders: 0x4,
  Padded: 0x8,
  Priority: 0x20,
} as const;

export const Setting = {
  EnablePush: 0x2,
  InitialWindowSize: 0x4,
} as const;

/** RST_STREAM error codes this client tells apart. */
export const ErrorCode = {
  RefusedStream: 0x7,
  Cancel: 0x8,
  EnhanceYourCalm: 0xb,
} as const;

export const CLIENT_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** The largest frame payload a peer may send before it has seen our SETTINGS, and all we accept. */
export const MAX_FRAME_SIZE = 16_384;

export function frame(type: number, flags: number, streamId: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(9 + payload.byteLength);
  out.writeUIntBE(payload.byteLength, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId, 5);
  out.set(payload, 9);
  return out;
}

export function settingsFrame(settings: [id: number, value: number][]): Buffer {
  const payload = Buffer.allocUnsafe(6 * settings.length);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, 6 * i);
    payload.writeUInt32BE(value, 6 * i + 2);
  });
  return frame(FrameType.Settings, 0, 0, payload);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(increment, 0);
  return frame(FrameType.WindowUpdate, 0, streamId, payload);
}

/**
 * A request's header block as HPACK literals "without indexing" and without
 * Huffman coding: valid for every decoder and free of encoder state, which a
 * one-request connection would not profit from. Split into CONTINUATION
 * frames when it exceeds one frame.
 */
export function headerFrames(streamId: number, headers: [name: string, value: string][]): Buffer[] {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const nameBytes = Buffer.from(name, "latin1");
    const valueBytes = Buffer.from(value, "latin1");
    parts.push(Buffer.from([0]), hpackInteger(nameBytes.length, 7), nameBytes);
    parts.push(hpackInteger(valueBytes.length, 7), valueBytes);
  }
  const block = Buffer.concat(parts);
  const frames: Buffer[] = [];
  for (let at = 0; at < block.length || at === 0; at += MAX_FRAME_SIZE) {
    const last = at + MAX_FRAME_SIZE >= block.length;
    const type = at === 0 ? FrameType.Headers : FrameType.Continuation;
    frames.push(frame(type, last ? Flag.EndHeaders : 0, streamId, block.subarray(at, at + MAX_FRAME_SIZE)));
  }
  return frames;
}

/** RFC 7541 §5.1 integer with an N-bit prefix (the prefix's other bits zero: no Huffman). */
function hpackInteger(value: number, prefixBits: number): Buffer {
  const limit = (1 << prefixBits) - 1;
  if (value < limit) return Buffer.from([value]);
  const bytes = [limit];
  let rest = value - limit;
  while (rest >= 0x80) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

export interface FrameHandler {
  /** Any frame but DATA, with its whole payload (a copy: the reader's buffer is reused). */
  onFrame(type: number, flags: number, streamId: number, payload: Buffer): void;
  /** A DATA frame begins; `length` (padding included) is what flow control counts. */
  onDataStart(streamId: number, flags: number, length: number): void;
  /** Content of the current DATA frame, padding removed; a view valid during the call only. */
  onDataBytes(bytes: Buffer): void;
  /** The current DATA frame is complete. */
  onDataEnd(streamId: number, flags: number): void;
}

/**
 * Splits the bytes of a connection into frames as they arrive, however the
 * reads cut them. DATA payloads are passed through as views, never buffered;
 * other frames are small and collected whole.
 */
export class FrameReader {
  private header = Buffer.alloc(9);
  private headerLength = 0;
  /** Payload bytes of the current frame not yet read. */
  private left = 0;
  private type = 0;
  private flags = 0;
  private streamId = 0;
  private control: Buffer | undefined;
  private controlAt = 0;
  /** DATA: padding bytes still to come (pad length known), or -1 before the pad-length byte. */
  private padding = 0;
  private inFrame = false;

  constructor(private readonly handler: FrameHandler) {}

  push(chunk: Buffer): void {
    let at = 0;
    const end = chunk.length;
    while (at < end) {
      if (!this.inFrame) {
        const take = Math.min(9 - this.headerLength, end - at);
        chunk.copy(this.header, this.headerLength, at, at + take);
        this.headerLength += take;
        at += take;
        if (this.headerLength === 9) this.startFrame();
        continue;
      }
      const take = Math.min(this.left, end - at);
      if (this.type === FrameType.Data) this.dataBytes(chunk, at, take);
      else {
        chunk.copy(this.control as Buffer, this.controlAt, at, at + take);
        this.controlAt += take;
      }
      at += take;
      this.left -= take;
      if (this.left === 0) this.endFrame();
    }
  }

  private startFrame(): void {
    this.headerLength = 0;
    this.left = this.header.readUIntBE(0, 3);
    this.type = this.header[3] as number;
    this.flags = this.header[4] as number;
    this.streamId = this.header.readUInt32BE(5) & 0x7fffffff;
    if (this.left > MAX_FRAME_SIZE) {
      throw new Http2ProtocolError(`a frame of ${this.left} bytes, over the ${MAX_FRAME_SIZE} allowed`);
    }
    this.inFrame = true;
    if (this.type === FrameType.Data) {
      this.padding = this.flags & Flag.Padded ? -1 : 0;
      if (this.padding === -1 && this.left === 0)
        throw new Http2ProtocolError("a padded DATA frame without padding");
      this.handler.onDataStart(this.streamId, this.flags, this.left);
    } else {
      this.control = Buffer.allocUnsafe(this.left);
      this.controlAt = 0;
    }
    if (this.left === 0) this.endFrame();
  }

  private dataBytes(chunk: Buffer, at: number, take: number): void {
    let start = at;
    let count = take;
    let left = this.left;
    if (this.padding === -1) {
      this.padding = chunk[start] as number;
      start += 1;
      count -= 1;
      left -= 1;
      if (this.padding > left) throw new Http2ProtocolError("DATA padding longer than the frame");
    }
    // The frame's last `padding` bytes are not content.
    const content = Math.min(count, left - this.padding);
    if (content > 0) this.handler.onDataBytes(chunk.subarray(start, start + content));
  }

  private endFrame(): void {
    this.inFrame = false;
    if (this.type === FrameType.Data) this.handler.onDataEnd(this.streamId, this.flags);
    else this.handler.onFrame(this.type, this.flags, this.streamId, this.control as Buffer);
    this.control = undefined;
  }
}

export class Http2ProtocolError extends Error {}
