import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { abandonable, Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, buildKeyId, buildKeyText, formatBuildKey } from "atomix-plugins-core/model/build-key";
import { SingleFlight } from "atomix-plugins-core/model/single-flight";
import type { Logger } from "pino";
import type { ArtifactStore, BlobReader, ReadOptions } from "./artifact-store.js";
import { writeFileAtomic } from "./atomic-file.js";
import type { ContentCache } from "./content-cache.js";
import { outOfRange } from "./store-checks.js";

export interface ReplicaStoreOptions {
  cache: ContentCache;
  /**
   * How long a key resolved from upstream is trusted without asking again:
   * the bound on how stale a key pushed or removed through another replica
   * may look here. 0 asks every time (lookups of one key still share one
   * request).
   */
  resolveTtlMs: number;
  /** Where the last manifest seen of each key is kept, for serving while upstream is down. */
  keysDir: string;
  log?: Logger | undefined;
}

/** A store over an upstream with a content cache: what a replica serves from. */
export interface ReplicaStore extends ArtifactStore {
  readonly cache: ContentCache;
  /** True while the last lookup upstream failed and a key was served as last seen. */
  readonly degraded: boolean;
  /** Key lookups answered without asking upstream (within the resolve TTL), and those that asked. */
  readonly lookups: { fresh: number; upstream: number; lastKnownGood: number };
}

/** Keys remembered at most; the oldest are forgotten first (they are asked again). */
const MAX_KEYS = 100_000;
/** Bytes asked of upstream per read of a fill. */
const UPSTREAM_CHUNK = 256 * 1024;

interface Resolved {
  manifest: ArtifactManifest;
  /** performance.now() of the answer. */
  at: number;
  /** Whether it is on disk for a restart during an outage. */
  kept: boolean;
}

/**
 * An ArtifactStore over a shared upstream store (an OCI registry) that
 * serves a rollout from the replica's own disk:
 *
 * - the index is asked once per key per `resolveTtlMs`, and concurrent
 *   lookups of one key share one request; a put or remove through this
 *   replica is seen here at once;
 * - blobs come from the content cache (content-cache.ts): one upstream
 *   fetch per digest, read by every pull while it lands;
 * - while upstream cannot be reached, a key whose manifest and blob are
 *   held here is served as last seen (`degraded` says so), also after a
 *   restart; anything else is UNAVAILABLE, as before.
 */
export function createReplicaStore(upstream: ArtifactStore, options: ReplicaStoreOptions): ReplicaStore {
  const { cache, resolveTtlMs, keysDir, log } = options;
  const resolved = new Map<string, Resolved>();
  const inflight = new SingleFlight<ArtifactManifest | undefined>();
  const lookups = { fresh: 0, upstream: 0, lastKnownGood: 0 };
  let degraded = false;
  /** Key files being written: close() waits for them, so the folder is whole when the process ends. */
  const writes = new Set<Promise<void>>();

  const keyFile = (key: BuildKey) => join(keysDir, `${buildKeyId(key)}.json`);

  function remember(key: BuildKey, manifest: ArtifactManifest): void {
    const text = buildKeyText(key);
    const previous = resolved.get(text);
    resolved.delete(text);
    if (resolved.size >= MAX_KEYS) resolved.delete(resolved.keys().next().value as string);
    const entry: Resolved = {
      manifest,
      at: performance.now(),
      kept: previous?.kept === true && previous.manifest.digest === manifest.digest,
    };
    resolved.set(text, entry);
    if (!entry.kept) {
      entry.kept = true;
      const write = writeFileAtomic(keyFile(key), JSON.stringify(manifest), keysDir).catch(
        (error: unknown) => {
          entry.kept = false;
          log?.warn(
            { key: formatBuildKey(key), error: (error as Error).message },
            "cannot keep a key's manifest",
          );
        },
      );
      writes.add(write);
      void write.finally(() => writes.delete(write));
    }
  }

  async function forget(key: BuildKey): Promise<void> {
    resolved.delete(buildKeyText(key));
    // A write of this key's file still landing would bring it back after the removal.
    await Promise.all(writes);
    await rm(keyFile(key), { force: true });
  }

  async function lastSeen(key: BuildKey): Promise<ArtifactManifest | undefined> {
    const known = resolved.get(buildKeyText(key))?.manifest;
    if (known) return known;
    try {
      const kept = JSON.parse(await readFile(keyFile(key), "utf8")) as ArtifactManifest;
      return buildKeyText(kept.key) === buildKeyText(key) ? kept : undefined;
    } catch {
      return undefined;
    }
  }

  async function lookup(key: BuildKey): Promise<ArtifactManifest | undefined> {
    lookups.upstream += 1;
    try {
      const manifest = await upstream.get(key);
      if (degraded)
        log?.info({ store: upstream.description }, "upstream answers again: keys are resolved there");
      degraded = false;
      if (manifest) remember(key, manifest);
      else await forget(key);
      return manifest;
    } catch (error) {
      const failure = PluginError.from(error);
      if (failure.code !== Code.Unavailable && failure.code !== Code.DeadlineExceeded) throw failure;
      const seen = await lastSeen(key);
      if (!seen || !cache.holds(seen.digest)) throw failure;
      if (!degraded) {
        log?.warn(
          { store: upstream.description, error: failure.message },
          "upstream unreachable: serving the keys held here as last seen",
        );
      }
      degraded = true;
      lookups.lastKnownGood += 1;
      return seen;
    }
  }

  async function openBlob(manifest: ArtifactManifest): Promise<BlobReader> {
    return cache.openBlob(manifest, (offset, signal) =>
      upstream.read(manifest, { offset, chunkSize: UPSTREAM_CHUNK, signal }),
    );
  }

  return {
    description: `${upstream.description}, with a local content cache`,
    cache,
    get degraded() {
      return degraded;
    },
    lookups,

    async get(key, getOptions) {
      const text = buildKeyText(key);
      const known = resolved.get(text);
      if (known && performance.now() - known.at < resolveTtlMs) {
        lookups.fresh += 1;
        return known.manifest;
      }
      // Shared by every caller of this key: one caller's cancellation does not end it.
      const pending = inflight.run(text, () => lookup(key));
      return abandonable(pending, getOptions?.signal, `looking up ${formatBuildKey(key)} was cancelled`);
    },

    getCached(key) {
      const known = resolved.get(buildKeyText(key));
      return known && performance.now() - known.at < resolveTtlMs ? known.manifest : undefined;
    },

    checkReachable: upstream.checkReachable?.bind(upstream),
    servesWhileUnreachable: true,
    holdsLocally: (digest) => cache.holds(digest),
    ...(upstream.readOnly ? { readOnly: true } : {}),

    openBlob,

    read(manifest, readOptions) {
      return readThrough(openBlob, manifest, readOptions);
    },

    async put(key, data, putOptions) {
      const manifest = await upstream.put(key, data, putOptions);
      remember(key, manifest);
      return manifest;
    },

    list: (filter) => upstream.list(filter),

    // Listing pages go to the registry, a page at a time, as without a cache.
    ...(upstream.scan ? { scan: upstream.scan.bind(upstream) } : {}),

    getProvenance: (key, provenanceOptions) => upstream.getProvenance(key, provenanceOptions),

    async remove(key) {
      const removed = await upstream.remove(key);
      await forget(key);
      return removed;
    },

    collectGarbage: () => upstream.collectGarbage(),

    async close() {
      await Promise.all(writes);
      await cache.close();
      await upstream.close();
    },
  };
}

/** A sequential read of a blob, over random access: what `ArtifactStore.read` promises. */
async function* readThrough(
  openBlob: (manifest: ArtifactManifest) => Promise<BlobReader>,
  manifest: ArtifactManifest,
  options: ReadOptions,
): AsyncGenerator<Buffer> {
  const offset = options.offset ?? 0;
  if (offset > manifest.size) throw outOfRange(offset, manifest);
  if (offset === manifest.size) return;
  const headroom = options.headroom ?? 0;
  const reader = await openBlob(manifest);
  try {
    for (let position = offset; position < manifest.size; ) {
      options.signal?.throwIfAborted();
      const length = Math.min(options.chunkSize, manifest.size - position);
      const buffer = options.allocate
        ? options.allocate(headroom + length)
        : Buffer.allocUnsafe(headroom + length);
      const read = await reader.read(buffer, headroom, length, position);
      if (read < length) {
        throw new PluginError(
          Code.DataLoss,
          `${manifest.digest} ended at byte ${position + read} of ${manifest.size}`,
        );
      }
      position += read;
      yield buffer.subarray(headroom, headroom + read);
    }
  } finally {
    await reader.close();
  }
}
