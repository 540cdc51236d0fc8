import { randomUUID } from "node:crypto";
import {
  type FileHandle,
  mkdir,
  open,
  opendir,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest, Digest, GarbageReport } from "atomix-plugins-core/model/artifact";
import { DEFAULT_MEDIA_TYPE, DIGEST_PATTERN } from "atomix-plugins-core/model/artifact";
import { type BuildKey, buildKeyId, buildKeyText, formatBuildKey } from "atomix-plugins-core/model/build-key";
import type { ArtifactStore, ReadOptions, ScanEntry } from "./artifact-store.js";
import { syncDirectory, writeFileAtomic } from "./atomic-file.js";
import { DigestMarks } from "./digest-marks.js";
import { writeHashedFile } from "./hashed-file.js";
import { badToken, collectManifests, compareManifests, mapOrdered } from "./manifest-pages.js";
import { readFully } from "./read-fully.js";
import { checkPut, outOfRange } from "./store-checks.js";

export interface FsStoreOptions {
  /** The data directory; created if missing. */
  dir: string;
}

/**
 * The embedded default store: a content-addressed directory.
 *
 *   <dir>/blobs/sha256/<2 hex>/<64 hex>   artifact bytes, immutable
 *   <dir>/index/<2 hex>/<sha256 of build key>.json
 *                                         manifest of one build key, in
 *                                         256 folders by the hash's first
 *                                         byte (a flat index/ of older
 *                                         versions is moved there at start)
 *   <dir>/provenance/<sha256 of build key>/<64 hex>.json
 *                                         signed provenance of that key's
 *                                         artifact with that digest
 *   <dir>/tmp/                            writes in progress; emptied at start
 *
 * Index files are named by a hash of the key, so no field of a request ever
 * becomes a path. One server process owns a data directory.
 *
 * Listing and garbage collection stream the index in the order of those
 * hashes, a folder at a time (at a million keys, 4,000 names), reading at
 * most INDEX_READ_CONCURRENCY manifests at once: memory and descriptors stay
 * bounded however many keys there are. Keys are not grouped by plugin or
 * runtime in the layout, so a filtered listing reads every manifest it
 * passes (a page call stops after PAGE_SCAN_BUDGET of them).
 */
export async function createFsStore(options: FsStoreOptions): Promise<ArtifactStore> {
  const root = options.dir;
  const blobsDir = join(root, "blobs", "sha256");
  const indexDir = join(root, "index");
  const provenanceDir = join(root, "provenance");
  const tmpDir = join(root, "tmp");
  await Promise.all([blobsDir, indexDir, provenanceDir, tmpDir].map((d) => mkdir(d, { recursive: true })));
  // Leftovers of writes interrupted by a crash: never visible, now removed.
  for (const leftover of await readdir(tmpDir))
    await rm(join(tmpDir, leftover), { recursive: true, force: true });
  await shardFlatIndex(indexDir);

  /**
   * Manifests read or written by this process, by the key's fields joined
   * (not by buildKeyId, a SHA-256 per lookup): a cache hit is the hot path
   * of CompilePlugin and PullPlugin and skips the disk and the hash.
   */
  const manifests = new Map<string, ArtifactManifest>();
  /** Digests whose blob is written but whose index entry may not be yet: gc keeps them. */
  const writing = new Map<Digest, number>();
  /**
   * One set per garbage collection under way: the digests committed since it
   * began marking, which its sweep keeps (its marking may have passed their
   * index folder already).
   */
  const committedDuringGc = new Set<Set<Digest>>();
  /** Index folders known to exist, so a put does not ask again. */
  const shards = new Set<string>();

  const blobPath = (digest: Digest) => {
    const hex = digest.slice("sha256:".length);
    return join(blobsDir, hex.slice(0, 2), hex);
  };
  const shardDir = (id: string) => join(indexDir, id.slice(0, 2));
  const indexPath = (id: string) => join(shardDir(id), `${id}.json`);
  const provenancePath = (id: string, digest: Digest) =>
    join(provenanceDir, id, `${digest.slice("sha256:".length)}.json`);

  /** Removes the provenance files of key `id` but the one of `keep`. */
  async function pruneProvenance(id: string, keep: Digest | undefined): Promise<void> {
    const dir = join(provenanceDir, id);
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      const digest = `sha256:${name.replace(/\.json$/, "")}` as Digest;
      if (digest === keep || writing.has(digest)) continue;
      await rm(join(dir, name), { force: true });
    }
    // Gone once empty; a put still writing into it keeps it.
    if (keep === undefined) await rmdir(dir).catch(() => {});
  }

  /**
   * The bundle of a put that failed or was cancelled before its commit: a
   * signature for bytes the caller was told were not stored must not be
   * served by a later put of the same bytes that signs nothing. Kept when
   * the key already names that digest, or another put of it is under way.
   */
  async function dropUncommittedProvenance(id: string, digest: Digest): Promise<void> {
    if ((writing.get(digest) ?? 0) > 1) return;
    const current = await readManifest(indexPath(id)).catch(() => undefined);
    if (current?.digest !== digest) await rm(provenancePath(id, digest), { force: true });
  }

  async function readManifest(path: string): Promise<ArtifactManifest | undefined> {
    try {
      const manifest = JSON.parse(await readFile(path, "utf8")) as ArtifactManifest;
      // The digest names files (blob, provenance): never a path of someone's choosing.
      if (!DIGEST_PATTERN.test(String(manifest?.digest))) {
        throw new PluginError(
          Code.DataLoss,
          `a manifest of the store has a malformed digest; remove its key`,
        );
      }
      return manifest;
    } catch (error) {
      if (error instanceof PluginError) throw error;
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw PluginError.from(error, "reading a manifest of the store");
    }
  }

  /**
   * Every index entry past `after` (a key id), by id: folder by folder, each
   * folder's names sorted, manifests read INDEX_READ_CONCURRENCY at a time.
   */
  async function* scanIndex(after?: string, signal?: AbortSignal): AsyncGenerator<ScanEntry> {
    if (after !== undefined && !KEY_ID.test(after)) throw badToken();
    const folders = (await readdir(indexDir)).filter((name) => SHARD.test(name)).sort();
    for (const folder of folders) {
      if (after !== undefined && folder < after.slice(0, 2)) continue;
      signal?.throwIfAborted();
      const ids: string[] = [];
      for await (const entry of await opendir(join(indexDir, folder), { bufferSize: 256 })) {
        const id = entry.name.slice(0, -".json".length);
        if (entry.name.endsWith(".json") && KEY_ID.test(id) && (after === undefined || id > after))
          ids.push(id);
      }
      ids.sort();
      const read = mapOrdered(ids, INDEX_READ_CONCURRENCY, async (id) => ({
        position: id,
        manifest: await readManifest(indexPath(id)),
      }));
      for await (const entry of read) {
        signal?.throwIfAborted();
        yield entry;
      }
    }
  }

  async function ensureShard(id: string): Promise<void> {
    const folder = id.slice(0, 2);
    if (shards.has(folder)) return;
    await mkdir(shardDir(id), { recursive: true });
    shards.add(folder);
  }

  return {
    description: `filesystem store at ${root}`,

    async get(key) {
      const cached = manifests.get(buildKeyText(key));
      if (cached) return cached;
      const manifest = await readManifest(indexPath(buildKeyId(key)));
      if (manifest) manifests.set(buildKeyText(key), manifest);
      return manifest;
    },

    getCached(key) {
      return manifests.get(buildKeyText(key));
    },

    read(manifest, options) {
      return readBlob(blobPath(manifest.digest), manifest, options);
    },

    async openBlob(manifest) {
      const handle = await openChecked(blobPath(manifest.digest), manifest);
      return {
        read: (into, at, length, position) => readFully(handle, into, at, length, position),
        close: () => handle.close(),
      };
    },

    async put(key, data, options = {}) {
      const tmp = join(tmpDir, randomUUID());
      let digest: Digest | undefined;
      let id: string | undefined;
      let signed = false;
      let committed = false;
      try {
        const written = await writeHashedFile(tmp, data, { ...options, durable: true, mode: 0o644 });
        digest = written.digest;
        checkPut(key, written, options);
        writing.set(digest, (writing.get(digest) ?? 0) + 1);
        const target = blobPath(digest);
        await mkdir(dirname(target), { recursive: true });
        await rename(tmp, target);
        await syncDirectory(dirname(target));
        const manifest: ArtifactManifest = {
          key,
          digest,
          size: written.size,
          mediaType: options.mediaType || DEFAULT_MEDIA_TYPE,
          createdAt: new Date().toISOString(),
          annotations: { ...options.annotations },
        };
        id = buildKeyId(key);
        // Provenance first, named by the digest it is for: until the index
        // entry switches, it belongs to no manifest and no reader finds it.
        if (options.attest) {
          // A put cancelled by now is not signed at all.
          options.signal?.throwIfAborted();
          const bundle = await options.attest(manifest);
          await mkdir(join(provenanceDir, id), { recursive: true });
          await writeFileAtomic(provenancePath(id, digest), bundle, tmpDir);
          signed = true;
        }
        await ensureShard(id);
        // The index entry is the commit: a put cancelled until now leaves the key as it was.
        options.signal?.throwIfAborted();
        for (const marks of committedDuringGc) marks.add(digest);
        await writeFileAtomic(indexPath(id), `${JSON.stringify(manifest, null, 2)}\n`, tmpDir);
        committed = true;
        manifests.set(buildKeyText(key), manifest);
        await pruneProvenance(id, digest);
        return manifest;
      } catch (error) {
        await rm(tmp, { force: true });
        if (signed && !committed && id && digest) await dropUncommittedProvenance(id, digest);
        throw PluginError.from(error, `storing ${formatBuildKey(key)}`);
      } finally {
        if (digest) {
          const left = (writing.get(digest) ?? 1) - 1;
          if (left === 0) writing.delete(digest);
          else writing.set(digest, left);
        }
      }
    },

    async getProvenance(key) {
      const id = buildKeyId(key);
      // Read from disk, not from this process's cache: provenance is what a
      // runtime checks the store against, so it must see what is there now.
      const manifest = await readManifest(indexPath(id));
      if (!manifest) return undefined;
      try {
        return { manifest, bundle: await readFile(provenancePath(id, manifest.digest)) };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return { manifest, bundle: undefined };
        throw PluginError.from(error, `reading the provenance of ${formatBuildKey(key)}`);
      }
    },

    scan(scanOptions = {}) {
      return scanIndex(scanOptions.after, scanOptions.signal);
    },

    async list(filter) {
      return (await collectManifests(() => scanIndex(), filter)).sort(compareManifests);
    },

    async remove(key: BuildKey) {
      const id = buildKeyId(key);
      manifests.delete(buildKeyText(key));
      try {
        await unlink(indexPath(id));
        await syncDirectory(shardDir(id));
        await pruneProvenance(id, undefined);
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw PluginError.from(error, `removing ${formatBuildKey(key)}`);
      }
    },

    async collectGarbage(): Promise<GarbageReport> {
      const late = new Set<Digest>();
      committedDuringGc.add(late);
      try {
        // Mark: the index streamed, a digest's first 64 bits kept per key.
        const referenced = new DigestMarks();
        for await (const { manifest } of scanIndex()) if (manifest) referenced.add(manifest.digest);
        // Provenance of keys removed or replaced while a put failed midway.
        for await (const entry of await opendir(provenanceDir)) {
          if (!KEY_ID.test(entry.name)) continue;
          const current = await readManifest(indexPath(entry.name)).catch(() => undefined);
          await pruneProvenance(entry.name, current?.digest);
        }
        // Sweep.
        const report: GarbageReport = { removedBlobs: 0, freedBytes: 0 };
        for await (const prefix of await opendir(blobsDir)) {
          for await (const blob of await opendir(join(blobsDir, prefix.name))) {
            const digest = `sha256:${blob.name}` as Digest;
            if (referenced.has(digest) || writing.has(digest) || late.has(digest)) continue;
            const path = join(blobsDir, prefix.name, blob.name);
            const { size } = await stat(path);
            await unlink(path);
            report.removedBlobs += 1;
            report.freedBytes += size;
          }
        }
        return report;
      } finally {
        committedDuringGc.delete(late);
      }
    },

    async close() {
      manifests.clear();
    },
  };
}

async function* readBlob(
  path: string,
  manifest: ArtifactManifest,
  options: ReadOptions,
): AsyncGenerator<Buffer> {
  const offset = options.offset ?? 0;
  if (offset > manifest.size) throw outOfRange(offset, manifest);
  const handle = await openChecked(path, manifest);
  try {
    const headroom = options.headroom ?? 0;
    let position = offset;
    while (position < manifest.size) {
      options.signal?.throwIfAborted();
      const length = Math.min(options.chunkSize, manifest.size - position);
      // Read straight into the buffer the message is sent from: no copy here.
      const buffer = options.allocate?.(headroom + length) ?? Buffer.allocUnsafe(headroom + length);
      const { bytesRead } = await handle.read(buffer, headroom, length, position);
      if (bytesRead === 0) throw new PluginError(Code.DataLoss, `stored blob ${manifest.digest} ended early`);
      position += bytesRead;
      yield headroom === 0 && bytesRead === buffer.length
        ? buffer
        : buffer.subarray(headroom, headroom + bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** The blob opened for reading, once its size is the manifest's (DATA_LOSS otherwise). */
async function openChecked(path: string, manifest: ArtifactManifest): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw blobMissing(error, manifest);
  }
  try {
    const { size } = await handle.stat();
    if (size !== manifest.size) {
      throw new PluginError(
        Code.DataLoss,
        `stored blob ${manifest.digest} of ${formatBuildKey(manifest.key)} has ${size} bytes, its manifest says ${manifest.size}; remove the key and store it again`,
      );
    }
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

function blobMissing(error: unknown, manifest: ArtifactManifest): PluginError {
  if ((error as NodeJS.ErrnoException).code === "ENOENT") {
    return new PluginError(
      Code.NotFound,
      `the blob ${manifest.digest} of ${formatBuildKey(manifest.key)} is missing from the store; remove the key and store it again`,
      { cause: error },
    );
  }
  return PluginError.from(error, `opening blob ${manifest.digest}`);
}

const KEY_ID = /^[0-9a-f]{64}$/;
const SHARD = /^[0-9a-f]{2}$/;
/** Manifests read at once while listing: descriptors stay far below a 1,024 limit. */
const INDEX_READ_CONCURRENCY = 16;

/**
 * Moves index entries of the flat layout (`index/<id>.json`, before index
 * folders) into their folder. Each move is a rename, so a crash midway
 * leaves every entry in one place or the other, and the next start goes on.
 */
async function shardFlatIndex(indexDir: string): Promise<void> {
  // Passes until one finds nothing: entries renamed away while a directory
  // is being read may hide others from that pass.
  for (let moved = true; moved; ) {
    moved = false;
    for await (const entry of await opendir(indexDir, { bufferSize: 256 })) {
      const id = entry.name.slice(0, -".json".length);
      if (!entry.isFile() || !entry.name.endsWith(".json") || !KEY_ID.test(id)) continue;
      await mkdir(join(indexDir, id.slice(0, 2)), { recursive: true });
      await rename(join(indexDir, entry.name), join(indexDir, id.slice(0, 2), entry.name));
      moved = true;
    }
    if (moved) await syncDirectory(indexDir);
  }
}
