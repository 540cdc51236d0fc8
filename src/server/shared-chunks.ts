import { abandonable, Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { frameInPlace, PULL_FRAME_HEADROOM } from "atomix-plugins-core/protocol/pull-codec";
import type { ArtifactStore, BlobReader } from "../store/artifact-store.js";
import { GRPC_PREFIX_BYTES, sendInPlace } from "./grpc-framing.js";

/** Bytes in front of each chunk for the gRPC prefix and the protobuf header, written once at read. */
const HEADROOM = GRPC_PREFIX_BYTES + PULL_FRAME_HEADROOM;

/** Recycled chunk buffers kept for the next reads, at most: the rest go to the GC. */
const MAX_FREE_BUFFERS = 32;

/**
 * One chunk as every stream sends it: `data` is the artifact's bytes, `frame`
 * the encoded PullPluginResponse around them (marked for in-place sending).
 * Both are views of one buffer that nothing writes to once it is shared.
 */
export interface SharedChunk {
  readonly data: Buffer;
  readonly frame: Buffer;
}

/** A chunk a stream holds: `release` once HTTP/2 has written it (idempotent). */
export interface HeldChunk {
  readonly chunk: SharedChunk;
  release(): void;
}

/** One stream's view of an open artifact: chunks by position, then `close`. */
export interface SharedBlob {
  acquire(position: number, signal: AbortSignal): Promise<HeldChunk>;
  close(): void;
}

interface Entry {
  /** Streams holding or waiting for this chunk. */
  refs: number;
  /** Bytes of the budget this chunk holds once granted. */
  reserved: number;
  buffer?: Buffer;
  ready: Promise<SharedChunk>;
}

interface OpenBlob {
  reader: Promise<BlobReader>;
  /** Streams that have the blob open, plus reads in progress. */
  users: number;
}

export interface SharedChunksOptions {
  store: ArtifactStore;
  chunkSize: number;
  /**
   * Bytes of chunks all pull streams together may hold, each distinct chunk
   * counted once however many streams send it. A stream that needs a chunk
   * nobody holds waits for room; joining a chunk already held costs nothing.
   */
  limitBytes: number;
}

/**
 * The chunk buffers of all pull streams, shared: streams pulling one
 * artifact at the same time (a rollout) send the same buffer for the same
 * chunk, read from the store once, instead of each reading its own copy.
 * A chunk is reference-counted by the streams that hold it (queued for
 * HTTP/2 or waiting for it) and returns to a small free list once the last
 * one has seen it written. What all chunks together hold is capped
 * (`limitBytes`), so the server's memory for pull data is bounded by
 * design, whatever the number of streams.
 *
 * A shared buffer is written only before it is shared: the bytes are read,
 * the protobuf header and the gRPC prefix are written in front of them, and
 * only then does any stream see it. It is reused only after every stream
 * that held it has released it.
 */
export class SharedChunks {
  private readonly chunks = new Map<string, Entry>();
  private readonly blobs = new Map<string, OpenBlob>();
  private readonly free: Buffer[] = [];
  private held = 0;
  private readonly waiting: { bytes: number; grant: () => void }[] = [];

  constructor(private readonly options: SharedChunksOptions) {}

  /** Whether the store can be read this way (random access). */
  get available(): boolean {
    return typeof this.options.store.openBlob === "function";
  }

  /** Bytes of the budget chunks hold now: 0 once no stream holds any. */
  get heldBytes(): number {
    return this.held;
  }

  /** Distinct chunks held or being read now. */
  get chunkCount(): number {
    return this.chunks.size;
  }

  /** Blobs open now (one descriptor each on the filesystem store). */
  get openBlobCount(): number {
    return this.blobs.size;
  }

  /**
   * Opens `manifest` for one stream: the blob itself is opened once for all
   * the streams that read it at the same time. Rejects as the store does
   * (NOT_FOUND, DATA_LOSS) when the blob cannot be read.
   */
  async open(manifest: ArtifactManifest): Promise<SharedBlob> {
    // Made once per stream: every chunk's id and the blob's entry derive from it.
    const id = blobId(manifest);
    const blob = this.useBlob(manifest, id);
    try {
      await blob.reader;
    } catch (error) {
      this.unuseBlob(id, blob);
      throw error;
    }
    let closed = false;
    return {
      acquire: (position, signal) => this.acquire(manifest, id, position, signal),
      close: () => {
        if (closed) return;
        closed = true;
        this.unuseBlob(id, blob);
      },
    };
  }

  private useBlob(manifest: ArtifactManifest, id: string): OpenBlob {
    let blob = this.blobs.get(id);
    if (!blob) {
      const { store } = this.options;
      if (!store.openBlob) throw new PluginError(Code.Internal, "the store offers no random access");
      blob = { reader: store.openBlob(manifest), users: 0 };
      blob.reader.catch(() => {}); // the opener sees the error; others retry with a new open
      this.blobs.set(id, blob);
    }
    blob.users += 1;
    return blob;
  }

  private unuseBlob(id: string, blob: OpenBlob): void {
    blob.users -= 1;
    if (blob.users > 0) return;
    if (this.blobs.get(id) === blob) this.blobs.delete(id);
    blob.reader.then(
      (reader) => reader.close(),
      () => {},
    );
  }

  private async acquire(
    manifest: ArtifactManifest,
    blob: string,
    position: number,
    signal: AbortSignal,
  ): Promise<HeldChunk> {
    const id = `${blob}@${position}`;
    let entry = this.chunks.get(id);
    if (!entry) {
      entry = this.load(manifest, blob, id, position);
      this.chunks.set(id, entry);
    }
    entry.refs += 1;
    const held = entry;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.release(id, held);
    };
    try {
      const chunk = await abandonable(held.ready, signal, "the client cancelled the pull");
      return { chunk, release };
    } catch (error) {
      release();
      throw error;
    }
  }

  /** Reads one chunk once room is granted; the entry is in the map from the start, so later streams join it. */
  private load(manifest: ArtifactManifest, blob: string, id: string, position: number): Entry {
    const length = Math.min(this.options.chunkSize, manifest.size - position);
    const size = HEADROOM + length;
    const entry: Entry = { refs: 0, reserved: 0, ready: Promise.resolve(undefined as never) };
    entry.ready = (async () => {
      await this.reserve(size);
      entry.reserved = size;
      if (entry.refs === 0) throw new PluginError(Code.Cancelled, "no stream waits for this chunk any more");
      const buffer = this.take(size);
      entry.buffer = buffer;
      // The read keeps the blob open (or opens it again) even if every stream closed it meanwhile.
      const reading = this.useBlob(manifest, blob);
      let read: number;
      try {
        read = await (await reading.reader).read(buffer, HEADROOM, length, position);
      } finally {
        this.unuseBlob(blob, reading);
      }
      if (read !== length) {
        throw new PluginError(
          Code.DataLoss,
          `stored blob ${manifest.digest} ended early at byte ${position + read}`,
        );
      }
      const data = buffer.subarray(HEADROOM);
      const frame = frameInPlace(data);
      if (!frame) throw new PluginError(Code.Internal, "no room in front of a chunk for its header");
      sendInPlace(frame);
      return { data, frame };
    })();
    entry.ready.then(
      () => {
        if (entry.refs === 0) this.drop(id, entry);
      },
      () => this.drop(id, entry),
    );
    return entry;
  }

  private release(id: string, entry: Entry): void {
    entry.refs -= 1;
    if (entry.refs > 0) return;
    // A chunk still being read is freed when its read ends (see load).
    if (entry.buffer === undefined && entry.reserved === 0) {
      if (this.chunks.get(id) === entry) this.chunks.delete(id);
      return;
    }
    settled(entry.ready).then((done) => {
      if (done && entry.refs === 0) this.drop(id, entry);
    });
  }

  /** Drops a chunk nobody holds: out of the map, its buffer to the free list, its bytes to the budget. */
  private drop(id: string, entry: Entry): void {
    if (this.chunks.get(id) === entry) this.chunks.delete(id);
    if (entry.buffer) {
      if (this.free.length < MAX_FREE_BUFFERS) this.free.push(entry.buffer);
      entry.buffer = undefined;
    }
    if (entry.reserved > 0) {
      this.held -= entry.reserved;
      entry.reserved = 0;
      this.grantWaiting();
    }
  }

  /** A buffer of `size` bytes (headroom + chunk) to read into: recycled when one is large enough. */
  private take(size: number): Buffer {
    const recycled = this.free.pop();
    if (recycled && recycled.buffer.byteLength >= size) return Buffer.from(recycled.buffer, 0, size);
    return Buffer.allocUnsafeSlow(HEADROOM + this.options.chunkSize).subarray(0, size);
  }

  private reserve(bytes: number): Promise<void> {
    // One chunk always fits an empty budget, so a limit below a chunk still makes progress.
    if (this.waiting.length === 0 && (this.held === 0 || this.held + bytes <= this.options.limitBytes)) {
      this.held += bytes;
      return Promise.resolve();
    }
    return new Promise((grant) => this.waiting.push({ bytes, grant }));
  }

  private grantWaiting(): void {
    for (;;) {
      const next = this.waiting[0];
      if (!next || (this.held > 0 && this.held + next.bytes > this.options.limitBytes)) return;
      this.waiting.shift();
      this.held += next.bytes;
      next.grant();
    }
  }
}

/**
 * Streams share a blob, and its chunks, only when their manifests agree on
 * its size too: one whose manifest gives the digest another size must not
 * end on chunks read (or cut) to the other's, which the store would not
 * have checked against the digest.
 */
function blobId(manifest: ArtifactManifest): string {
  return `${manifest.digest}/${manifest.size}`;
}

/** Resolves true once `promise` fulfilled, false once it rejected. */
function settled(promise: Promise<unknown>): Promise<boolean> {
  return promise.then(
    () => true,
    () => false,
  );
}
