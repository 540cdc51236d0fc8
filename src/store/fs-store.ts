import { randomUUID } from "node:crypto";
import {
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import { Code, PluginError } from "../errors/plugin-error.js";
import type { ArtifactManifest, Digest, GarbageReport } from "../model/artifact.js";
import { DEFAULT_MEDIA_TYPE, DIGEST_PATTERN } from "../model/artifact.js";
import { type BuildKey, buildKeyId, buildKeyText, formatBuildKey } from "../model/build-key.js";
import type { ArtifactStore, ListFilter, ReadOptions } from "./artifact-store.js";
import { syncDirectory, writeFileAtomic } from "./atomic-file.js";
import { writeHashedFile } from "./hashed-file.js";
import { checkPut, matchesFilter, outOfRange } from "./store-checks.js";

export interface FsStoreOptions {
  /** The data directory; created if missing. */
  dir: string;
}

/**
 * The embedded default store: a content-addressed directory.
 *
 *   <dir>/blobs/sha256/<2 hex>/<64 hex>   artifact bytes, immutable
 *   <dir>/index/<sha256 of build key>.json  manifest of one build key
 *   <dir>/provenance/<sha256 of build key>/<64 hex>.json
 *                                         signed provenance of that key's
 *                                         artifact with that digest
 *   <dir>/tmp/                            writes in progress; emptied at start
 *
 * Index files are named by a hash of the key, so no field of a request ever
 * becomes a path. One server process owns a data directory.
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

  /**
   * Manifests read or written by this process, by the key's fields joined
   * (not by buildKeyId, a SHA-256 per lookup): a cache hit is the hot path
   * of CompilePlugin and PullPlugin and skips the disk and the hash.
   */
  const manifests = new Map<string, ArtifactManifest>();
  /** Digests whose blob is written but whose index entry may not be yet: gc keeps them. */
  const writing = new Map<Digest, number>();

  const blobPath = (digest: Digest) => {
    const hex = digest.slice("sha256:".length);
    return join(blobsDir, hex.slice(0, 2), hex);
  };
  const indexPath = (id: string) => join(indexDir, `${id}.json`);
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

  async function allManifests(): Promise<ArtifactManifest[]> {
    const names = (await readdir(indexDir)).filter((n) => n.endsWith(".json"));
    const read = await Promise.all(names.map((n) => readManifest(join(indexDir, n))));
    return read.filter((m): m is ArtifactManifest => m !== undefined);
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
        async read(into, at, length, position) {
          let filled = 0;
          while (filled < length) {
            const { bytesRead } = await handle.read(into, at + filled, length - filled, position + filled);
            if (bytesRead === 0) break;
            filled += bytesRead;
          }
          return filled;
        },
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
        // The index entry is the commit: a put cancelled until now leaves the key as it was.
        options.signal?.throwIfAborted();
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

    async list(filter?: ListFilter) {
      const all = await allManifests();
      return all.filter((m) => matchesFilter(m, filter)).sort(compareManifests);
    },

    async remove(key: BuildKey) {
      const id = buildKeyId(key);
      manifests.delete(buildKeyText(key));
      try {
        await unlink(indexPath(id));
        await syncDirectory(indexDir);
        await pruneProvenance(id, undefined);
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw PluginError.from(error, `removing ${formatBuildKey(key)}`);
      }
    },

    async collectGarbage(): Promise<GarbageReport> {
      const stored = await allManifests();
      const referenced = new Set(stored.map((m) => m.digest));
      // Provenance of keys removed or replaced while a put failed midway.
      const current = new Map(stored.map((m) => [buildKeyId(m.key), m.digest]));
      for (const id of await readdir(provenanceDir)) await pruneProvenance(id, current.get(id));
      const report: GarbageReport = { removedBlobs: 0, freedBytes: 0 };
      for (const prefix of await readdir(blobsDir)) {
        for (const hex of await readdir(join(blobsDir, prefix))) {
          const digest = `sha256:${hex}` as Digest;
          if (referenced.has(digest) || writing.has(digest)) continue;
          const path = join(blobsDir, prefix, hex);
          const { size } = await stat(path);
          await unlink(path);
          report.removedBlobs += 1;
          report.freedBytes += size;
        }
      }
      return report;
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

function compareManifests(a: ArtifactManifest, b: ArtifactManifest): number {
  return formatBuildKey(a.key).localeCompare(formatBuildKey(b.key));
}
