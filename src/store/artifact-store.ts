import type { ArtifactManifest, Digest, GarbageReport } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";

export interface PutOptions {
  mediaType?: string;
  annotations?: Record<string, string>;
  /** Refuse the artifact (INVALID_ARGUMENT) unless its bytes hash to this. */
  expectedDigest?: Digest;
  /**
   * Refuse the artifact (INVALID_ARGUMENT) unless it has exactly this size;
   * refused as soon as a byte more arrives.
   */
  expectedSize?: number;
  /** Refuse the artifact (RESOURCE_EXHAUSTED) once it grows past this. */
  maxSize?: number;
  /**
   * Aborting it stops the put, up to the moment the key is switched over:
   * the put rejects with the signal's reason and the key keeps what it had.
   */
  signal?: AbortSignal;
  /**
   * Signs the provenance of the manifest about to be committed (its digest
   * and size are final). The store keeps what it returns beside the manifest
   * and commits both together: a reader never finds the new manifest without
   * its provenance, and a failure here leaves the key as it was.
   */
  attest?: (manifest: ArtifactManifest) => Promise<Uint8Array>;
}

/** The signed provenance of the artifact stored for a key. */
export interface StoredProvenance {
  /** The artifact the provenance is for: the key's manifest when it was read. */
  readonly manifest: ArtifactManifest;
  /** A Sigstore bundle, JSON (model/provenance.ts); undefined when stored without one. */
  readonly bundle: Buffer | undefined;
}

export interface ReadOptions {
  /** First byte to send; 0 by default. Past the end: OUT_OF_RANGE. */
  offset?: number;
  /** Bytes per yielded chunk (the last may be shorter). */
  chunkSize: number;
  /**
   * Bytes to leave free in front of each chunk, in the same buffer: each
   * yielded chunk is then a view at `byteOffset >= headroom` of a buffer of
   * at least `headroom + chunk length` bytes, so the pull path can write the
   * message header there instead of copying the chunk. 0 by default; a store
   * that cannot honour it may ignore it (callers check `byteOffset`).
   */
  headroom?: number;
  /**
   * Supplies the buffer a chunk is read into (`size` = headroom + chunk
   * length); fresh buffers by default. Lets the pull path recycle a few
   * buffers per stream instead of allocating one per chunk.
   */
  allocate?: (size: number) => Buffer;
  signal?: AbortSignal;
}

/** An open blob, read at any position; see `ArtifactStore.openBlob`. */
export interface BlobReader {
  /**
   * Reads `length` bytes at `position` of the blob into `into` at `at`;
   * answers how many it read, fewer only at the end of the blob.
   */
  read(into: Buffer, at: number, length: number, position: number): Promise<number>;
  close(): Promise<void>;
}

export interface ListFilter {
  pluginName?: string;
  runtimeVersion?: string;
}

/** One key met by `ArtifactStore.scan`, in the store's order. */
export interface ScanEntry {
  /** Where the key sits in the store's order; scanning `after` it resumes past it. */
  readonly position: string;
  /** Its manifest; undefined when the key went away while being read. */
  readonly manifest: ArtifactManifest | undefined;
}

export interface ScanOptions {
  /** A hint: stores that can skip unrelated keys by their layout do; callers still check. */
  filter?: ListFilter | undefined;
  /** Start past this position (a ScanEntry's); INVALID_ARGUMENT if it is not one the store gives. */
  after?: string | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * Where artifacts live. Implementations: the filesystem store (the embedded
 * default) and an OCI distribution registry store. Callers never learn which.
 *
 * Guarantees every implementation keeps:
 * - `put` is atomic: a reader sees no manifest, or a manifest whose blob is
 *   whole and hashes to its digest; a crash midway leaves nothing visible.
 * - blobs are content-addressed, so equal bytes are stored once and two
 *   writers of one key write the same thing.
 * - errors are `PluginError`s (NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE...).
 */
export interface ArtifactStore {
  /** Where the store is, for logs and the catalog page. */
  readonly description: string;

  /** The manifest stored for `key`, or undefined. */
  get(key: BuildKey, options?: { signal?: AbortSignal }): Promise<ArtifactManifest | undefined>;

  /**
   * The manifest of `key` when this process knows it without any I/O, for
   * the cache-hit CompilePlugin; undefined says nothing (call `get`). Stores
   * shared between replicas leave it out: only the registry knows.
   */
  getCached?(key: BuildKey): ArtifactManifest | undefined;

  /**
   * Resolves when the store can be reached now; rejects (UNAVAILABLE, naming
   * the reason) when it cannot. For stores behind a network, which health
   * checks probe; a store on local disk leaves it out.
   */
  checkReachable?(signal: AbortSignal): Promise<void>;

  /**
   * True for a store that keeps serving the keys it holds locally while
   * `checkReachable` fails (a replica's content cache): health then says
   * pulls go on and builds do not, instead of NOT_SERVING for everything.
   */
  readonly servesWhileUnreachable?: boolean;

  /**
   * Whether this process holds the blob `digest` on its own disk now (a
   * replica's content cache). Absent: the store is on local disk, and holds
   * every blob it names.
   */
  holdsLocally?(digest: string): boolean;

  /**
   * True for a store that takes no writes (a registry mirror): put and
   * remove refuse, so builds are forwarded (`--upstream`) or refused.
   */
  readonly readOnly?: boolean;

  /**
   * Streams a blob from `offset`. Yields fresh buffers (callers may keep
   * them) unless the caller supplies them with `allocate`; reads lazily, so a consumer that stops pulling holds the store to
   * at most one chunk, and breaking out of the loop releases the underlying
   * handle at once.
   */
  read(manifest: ArtifactManifest, options: ReadOptions): AsyncIterable<Buffer>;

  /**
   * Random access to a blob, for readers that share what they read (many
   * pulls of one artifact at once read each chunk once, src/server/
   * shared-chunks.ts). Checks the blob's size against the manifest, as
   * `read` does. Stores without cheap random access (a registry over HTTP)
   * leave it out; callers then use `read`. The caller closes the reader.
   */
  openBlob?(manifest: ArtifactManifest): Promise<BlobReader>;

  /** Stores `data` as the artifact of `key`, replacing what was there. */
  put(
    key: BuildKey,
    data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options?: PutOptions,
  ): Promise<ArtifactManifest>;

  /**
   * Every manifest matching `filter`, sorted by key, held in memory at once:
   * for callers that need them all (a prewarm of one release). Listings a
   * person asks for go page by page (`scan`, store/manifest-pages.ts).
   */
  list(filter?: ListFilter): Promise<ArtifactManifest[]>;

  /**
   * The stored keys in the store's stable order, each with its manifest, read
   * as the consumer pulls (a few at a time): memory and open descriptors do
   * not grow with the number of keys. Breaking out of the loop stops it.
   * A store that leaves it out (one that fronts another) is paged through
   * `list`, held in memory (`scanStore`, store/manifest-pages.ts).
   */
  scan?(options?: ScanOptions): AsyncIterable<ScanEntry>;

  /**
   * The provenance stored with the artifact of `key`, read together with its
   * manifest; undefined when no artifact is stored.
   */
  getProvenance(key: BuildKey, options?: { signal?: AbortSignal }): Promise<StoredProvenance | undefined>;

  /** Forgets `key` and its provenance; its blob stays until `collectGarbage`. False if absent. */
  remove(key: BuildKey): Promise<boolean>;

  /** Removes blobs no stored key refers to. */
  collectGarbage(): Promise<GarbageReport>;

  close(): Promise<void>;
}

/** Whether `store` holds the blob `digest` on this machine's disk. */
export function heldHere(store: Pick<ArtifactStore, "holdsLocally">, digest: string): boolean {
  return store.holdsLocally ? store.holdsLocally(digest) : true;
}
