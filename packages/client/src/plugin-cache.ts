import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import {
  copyFile,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, buildKeyId } from "atomix-plugins-core/model/build-key";

/** What the cache remembers of one build key: the digest it last pulled. */
export interface CacheEntry {
  digest: Digest;
  size: number;
}

/**
 * A local directory of verified artifacts, shared safely by any number of
 * processes (every write is a rename of a finished file):
 *
 *   <dir>/blobs/sha256/<64 hex>        artifact bytes, content-addressed
 *   <dir>/keys/<build key id>.json     { digest, size } last pulled for the key
 *   <dir>/tmp/                         files being written
 *
 * Nothing read from it is trusted: a blob is hashed again as it is copied
 * out, and one that no longer matches its name is evicted. So the cache
 * needs no fsync and survives crashes and meddling alike.
 *
 * With `maxBytes`, every `add` evicts the least recently used blobs (a blob's
 * mtime is touched each time it is used) until the blobs fit, never the one
 * just added, and removes the key files left pointing at nothing. A process
 * copying out a blob another one evicts sees it missing and fetches the
 * artifact again, as for a damaged blob.
 */
export interface PluginCache {
  readonly dir: string;
  /** The digest last pulled for `key`, if its blob is still present with the right size. */
  lookup(key: BuildKey): Promise<CacheEntry | undefined>;
  /** The cached blob of `digest`, whichever key it was pulled for. */
  lookupDigest(digest: Digest): Promise<CacheEntry | undefined>;
  /** Records `file` (already verified to hash to `entry.digest`) as the artifact of `key`. */
  add(key: BuildKey, file: string, entry: CacheEntry): Promise<void>;
  /**
   * Copies the blob of `entry` to the new file `to`, hashing it on the way.
   * False (with `to` removed and the blob evicted) when it is missing or no
   * longer hashes to its digest.
   */
  copyOut(entry: CacheEntry, to: string): Promise<boolean>;
  /**
   * Evicts least recently used blobs until they take at most `maxBytes`
   * (`keep` is never evicted), removes key files whose blob is gone and
   * temporary files a crashed process left; returns the bytes freed.
   */
  prune(maxBytes: number, keep?: Digest): Promise<number>;
}

export interface PluginCacheOptions {
  /** Bytes the cached blobs may take; evicted least recently used first. Unbounded by default. */
  maxBytes?: number;
}

/** Temporary files older than this are a crashed writer's leftovers. */
const STALE_TMP_MS = 24 * 60 * 60 * 1000;

export async function openPluginCache(dir: string, options: PluginCacheOptions = {}): Promise<PluginCache> {
  const { maxBytes } = options;
  if (maxBytes !== undefined && (!Number.isSafeInteger(maxBytes) || maxBytes < 0)) {
    throw new PluginError(
      Code.InvalidArgument,
      `the cache size limit must be a whole number of bytes ≥ 0, not ${maxBytes}`,
    );
  }
  const blobs = join(dir, "blobs", "sha256");
  const keys = join(dir, "keys");
  const tmp = join(dir, "tmp");
  try {
    await Promise.all([blobs, keys, tmp].map((d) => mkdir(d, { recursive: true })));
  } catch (error) {
    throw PluginError.from(error, `creating the plugin cache ${dir}`);
  }
  const blobPath = (digest: Digest) => join(blobs, digest.slice("sha256:".length));
  const keyPath = (key: BuildKey) => join(keys, `${buildKeyId(key)}.json`);

  async function replace(path: string, write: (tmpPath: string) => Promise<void>): Promise<void> {
    const tmpPath = join(tmp, randomUUID());
    try {
      await write(tmpPath);
      await rename(tmpPath, path);
    } catch (error) {
      await rm(tmpPath, { force: true });
      throw PluginError.from(error, `writing to the plugin cache ${dir}`);
    }
  }

  /** Marks a blob used now: eviction goes by mtime, which every file system keeps (atime may be off). */
  const touch = (digest: Digest) => {
    const now = new Date();
    return utimes(blobPath(digest), now, now).catch(() => {});
  };

  async function prune(limit: number, keep?: Digest): Promise<number> {
    const names = await readdir(blobs).catch(() => [] as string[]);
    const found = await Promise.all(
      names.map(async (name) => {
        const info = await stat(join(blobs, name)).catch(() => undefined);
        return info && { name, size: info.size, used: info.mtimeMs };
      }),
    );
    const present = found.filter((b): b is { name: string; size: number; used: number } => b !== undefined);
    let total = present.reduce((sum, b) => sum + b.size, 0);
    let freed = 0;
    const gone = new Set<string>();
    for (const blob of present.sort((a, b) => a.used - b.used)) {
      if (total <= limit) break;
      if (`sha256:${blob.name}` === keep) continue;
      await rm(join(blobs, blob.name), { force: true });
      total -= blob.size;
      freed += blob.size;
      gone.add(blob.name);
    }
    for (const name of await readdir(keys).catch(() => [] as string[])) {
      const entry = await readFile(join(keys, name), "utf8").then(
        (text) => JSON.parse(text) as Partial<CacheEntry>,
        () => undefined,
      );
      const digest = entry?.digest;
      const valid = typeof digest === "string" && DIGEST_PATTERN.test(digest);
      // Checked now, not from the listing above: another process may have added it since.
      const blobThere =
        valid &&
        (await stat(blobPath(digest as Digest)).then(
          () => true,
          () => false,
        ));
      if (!blobThere) await rm(join(keys, name), { force: true });
    }
    const now = Date.now();
    for (const name of await readdir(tmp).catch(() => [] as string[])) {
      const info = await stat(join(tmp, name)).catch(() => undefined);
      if (info && now - info.mtimeMs > STALE_TMP_MS) await rm(join(tmp, name), { force: true });
    }
    return freed;
  }

  return {
    dir,
    prune,

    async lookup(key) {
      let entry: CacheEntry;
      try {
        entry = JSON.parse(await readFile(keyPath(key), "utf8")) as CacheEntry;
      } catch {
        return undefined; // absent or torn: a miss either way
      }
      if (!DIGEST_PATTERN.test(entry.digest) || !Number.isSafeInteger(entry.size)) return undefined;
      try {
        const { size } = await stat(blobPath(entry.digest));
        return size === entry.size ? { digest: entry.digest, size: entry.size } : undefined;
      } catch {
        return undefined;
      }
    },

    async lookupDigest(digest) {
      try {
        return { digest, size: (await stat(blobPath(digest))).size };
      } catch {
        return undefined;
      }
    },

    async add(key, file, entry) {
      await replace(blobPath(entry.digest), (tmpPath) => copyFile(file, tmpPath));
      await replace(keyPath(key), (tmpPath) =>
        writeFile(tmpPath, `${JSON.stringify({ digest: entry.digest, size: entry.size })}\n`),
      );
      if (maxBytes !== undefined) await prune(maxBytes, entry.digest);
    },

    async copyOut(entry, to) {
      const hash = createHash("sha256");
      let size = 0;
      const out = await open(to, "wx", 0o644);
      try {
        for await (const chunk of createReadStream(blobPath(entry.digest), { highWaterMark: 1 << 20 })) {
          const buffer = chunk as Buffer;
          hash.update(buffer);
          size += buffer.byteLength;
          await out.write(buffer);
        }
        await out.sync();
      } catch {
        await out.close();
        await rm(to, { force: true });
        return false;
      }
      await out.close();
      if (size === entry.size && `sha256:${hash.digest("hex")}` === entry.digest) {
        await touch(entry.digest);
        return true;
      }
      await rm(to, { force: true });
      await rm(blobPath(entry.digest), { force: true });
      return false;
    },
  };
}
