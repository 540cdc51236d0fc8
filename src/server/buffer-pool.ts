/**
 * The few buffers one pull stream reads its chunks into, recycled once grpc-js
 * has copied each into its HTTP/2 frame. A fresh buffer per chunk costs more
 * than the copy: large allocations are fresh pages (page faults) and external
 * memory that drives V8 into full garbage collections. The pool holds no more
 * buffers than the stream's write budget lets be in flight, plus one.
 */
export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private readonly owned = new WeakSet<ArrayBufferLike>();

  /** A buffer of exactly `size` bytes, recycled when one is free and large enough. */
  acquire = (size: number): Buffer => {
    const recycled = this.free.pop();
    if (recycled && recycled.byteLength >= size) return Buffer.from(recycled, 0, size);
    const fresh = Buffer.allocUnsafeSlow(size);
    this.owned.add(fresh.buffer);
    return fresh;
  };

  /** Whether `view` lies in a buffer of this pool (so the bytes around it are the stream's own). */
  owns(view: Uint8Array): boolean {
    return this.owned.has(view.buffer);
  }

  /** Returns the buffer under `view` for reuse; views of other buffers are ignored. */
  release(view: Uint8Array): void {
    if (this.owns(view)) this.free.push(view.buffer as ArrayBuffer);
  }
}
