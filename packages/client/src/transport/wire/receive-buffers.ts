/**
 * The memory a pull's socket reads into, and hands to the writer without a
 * copy. The socket reads straight into a write buffer (`next`), frames and
 * all; the artifact bytes found in it are kept as views (`keep`), and when
 * the buffer has too little room left for another read, its views go to the
 * writer together (`onFull`) and the next free buffer takes over. The
 * writer's `release` returns the buffer.
 *
 * A read needs memory even while every buffer waits to be written (the
 * socket asks for it before it knows it is paused): it then gets `overflow`,
 * whose bytes are copied into the first buffer freed. That happens once per
 * pause, not per byte.
 *
 * A connection keeps its receive buffers from one call to the next (the
 * socket has always been handed the next read's memory already), so a call
 * ends with `handOver` or `discard`, not `flush`.
 */
export class ReceiveBuffers {
  private readonly free: Buffer[];
  private filling: Buffer | undefined;
  /** Bytes read into `filling` so far, frame headers included. */
  private placed = 0;
  private segments: Buffer[] = [];
  private readInto: "filling" | "overflow" = "filling";
  private closed = false;
  private readonly bufferSize: number;
  /** Buffers the writer still reads from after `handOver`; `retired` ones go back to `free` once it is done. */
  private readonly lent = new Set<Buffer>();
  private readonly retired = new Set<Buffer>();

  constructor(
    buffers: Buffer[],
    private readonly overflow: Buffer,
    private readonly onFull: (segments: Buffer[], release: () => void) => void,
  ) {
    this.free = [...buffers];
    this.bufferSize = buffers[0]?.length ?? overflow.length;
  }

  /** For the socket: where the next read goes. */
  next(): Buffer {
    if (this.filling && this.room() >= this.overflow.length) {
      this.readInto = "filling";
      return this.filling.subarray(this.placed);
    }
    if (!this.closed) this.rotate();
    this.readInto = this.filling ? "filling" : "overflow";
    return this.filling ?? this.overflow;
  }

  /** `bytes` were read into what `next` returned; their view, valid until the writer releases it. */
  received(bytes: number): Buffer {
    if (this.readInto === "overflow") {
      // The first read after a pause, when a buffer was freed meanwhile. A TLS
      // socket may also hand over what it already decrypted while paused:
      // then every buffer may still be waiting, and this call gets one more
      // rather than lose the read.
      if (!this.filling || this.room() < bytes) this.rotate();
      if (!this.filling) {
        this.filling = Buffer.allocUnsafe(this.bufferSize);
        this.placed = 0;
      }
      this.overflow.copy(this.filling, this.placed, 0, bytes);
    }
    const filling = this.filling as Buffer;
    const view = filling.subarray(this.placed, this.placed + bytes);
    this.placed += bytes;
    return view;
  }

  /** Keeps artifact bytes: a view inside what `received` returned. */
  keep(data: Buffer): void {
    this.segments.push(data);
  }

  /** Whether the next read has memory without waiting for the writer. */
  get hasRoom(): boolean {
    return this.free.length > 0 || (this.filling !== undefined && this.room() >= this.overflow.length);
  }

  /** Hands the bytes kept so far to the writer (the stream ended, or broke); no more reads are kept. */
  flush(): void {
    this.closed = true;
    this.rotate();
  }

  /**
   * Hands the bytes kept so far to the writer and goes on reading into the
   * same buffer after them: the call ended, the connection stays. The
   * buffer is reused only once the writer released it.
   */
  handOver(): void {
    const buffer = this.filling;
    const segments = this.segments;
    this.segments = [];
    if (segments.length === 0 || !buffer) return;
    this.lent.add(buffer);
    this.onFull(segments, () => {
      this.lent.delete(buffer);
      if (this.retired.delete(buffer)) this.free.push(buffer);
    });
  }

  /** Drops the bytes kept so far (the call was abandoned): the next call does not get them. */
  discard(): void {
    this.segments = [];
  }

  private room(): number {
    return (this.filling as Buffer).length - this.placed;
  }

  private rotate(): void {
    const full = this.filling;
    if (full) {
      const segments = this.segments;
      this.segments = [];
      const release = () => {
        if (this.lent.has(full)) this.retired.add(full);
        else this.free.push(full);
      };
      if (segments.length > 0) this.onFull(segments, release);
      else release();
    }
    this.filling = this.closed ? undefined : this.free.pop();
    this.placed = 0;
  }
}
