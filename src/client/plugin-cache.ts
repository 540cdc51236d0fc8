import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PluginError } from "../errors/plugin-error.js";
import { type BuildKey, buildKeyId } from "../model/build-key.js";
import type { Digest } from "../store/artifact-store.js";

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
}

export async function openPluginCache(dir: string): Promise<PluginCache> {
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

  return {
    dir,

    async lookup(key) {
      let entry: CacheEntry;
      try {
        entry = JSON.parse(await readFile(keyPath(key), "utf8")) as CacheEntry;
      } catch {
        return undefined; // absent or torn: a miss either way
      }
      if (!/^sha256:[0-9a-f]{64}$/.test(entry.digest) || !Number.isSafeInteger(entry.size)) return undefined;
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
      if (size === entry.size && `sha256:${hash.digest("hex")}` === entry.digest) return true;
      await rm(to, { force: true });
      await rm(blobPath(entry.digest), { force: true });
      return false;
    },
  };
}
