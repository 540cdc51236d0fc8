import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { PluginError } from "atomix-plugins-core/errors/plugin-error";
import { type BuildKey, buildKeyId } from "atomix-plugins-core/model/build-key";
import type { BuildRecord } from "atomix-plugins-core/model/build-record";
import type { CacheCollection, DiskCache } from "../compiler/disk-cache.js";
import { writeFileAtomic } from "./atomic-file.js";
import { type BuildRecordStore, DEFAULT_MAX_BUILD_RECORDS } from "./build-record-store.js";

/**
 * Build records in the embedded store's data directory:
 * `<dir>/build-records/<sha256 of the key>.json`, written atomically. At most
 * `maxRecords` are kept: a new record beyond them removes the oldest. Which
 * records there are, their sizes and times are read from the disk once and
 * then kept in memory, so that listing them (every catalog page load) reads
 * only the records listed.
 */
export async function createFsBuildRecordStore(options: {
  dir: string;
  maxRecords?: number;
}): Promise<BuildRecordStore> {
  const recordsDir = join(options.dir, "build-records");
  const tmpDir = join(options.dir, "tmp");
  const maxRecords = options.maxRecords ?? DEFAULT_MAX_BUILD_RECORDS;
  await mkdir(recordsDir, { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  const pathOf = (key: BuildKey) => join(recordsDir, `${buildKeyId(key)}.json`);
  const index = await readIndex(recordsDir);
  let removed: CacheCollection = { removedEntries: 0, freedBytes: 0 };

  async function read(path: string): Promise<BuildRecord | undefined> {
    try {
      return JSON.parse(await readFile(path, "utf8")) as BuildRecord;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || error instanceof SyntaxError) return undefined;
      throw PluginError.from(error, "reading a build record");
    }
  }

  /** Removes the oldest records beyond the bound. */
  async function trim(): Promise<void> {
    if (index.size <= maxRecords) return;
    const oldest = [...index.entries()].sort(([, a], [, b]) => a.at - b.at).slice(0, index.size - maxRecords);
    for (const [name, entry] of oldest) {
      index.delete(name);
      await rm(join(recordsDir, name), { force: true });
      removed = { removedEntries: removed.removedEntries + 1, freedBytes: removed.freedBytes + entry.bytes };
    }
  }

  const cache: DiskCache = {
    name: "build-records",
    usage: () => ({
      bytes: [...index.values()].reduce((sum, entry) => sum + entry.bytes, 0),
      entries: index.size,
      maxBytes: 0,
      maxEntries: maxRecords,
    }),
    async collect() {
      await trim();
      const report = removed;
      removed = { removedEntries: 0, freedBytes: 0 };
      return report;
    },
  };

  return {
    cache,
    async putBuildRecord(record) {
      const text = `${JSON.stringify(record)}\n`;
      await writeFileAtomic(pathOf(record.key), text, tmpDir);
      index.set(`${buildKeyId(record.key)}.json`, { at: Date.now(), bytes: Buffer.byteLength(text) });
      await trim();
    },
    getBuildRecord: (key) => read(pathOf(key)),
    async listBuildRecords(limit) {
      const newest = [...index.entries()].sort(([, a], [, b]) => b.at - a.at).slice(0, limit);
      const records = await Promise.all(newest.map(([name]) => read(join(recordsDir, name))));
      return records
        .filter((record): record is BuildRecord => record !== undefined)
        .map((record) => ({ ...record, output: "" }))
        .sort((a, b) => b.finishedAt.localeCompare(a.finishedAt));
    },
  };
}

/** The records on disk: name → time written and bytes, read once at start. */
async function readIndex(recordsDir: string): Promise<Map<string, { at: number; bytes: number }>> {
  const index = new Map<string, { at: number; bytes: number }>();
  const names = (await readdir(recordsDir)).filter((name) => name.endsWith(".json"));
  // A few at a time: a data directory of many records must not exhaust the open-file limit.
  for (let i = 0; i < names.length; i += 64) {
    await Promise.all(
      names.slice(i, i + 64).map(async (name) => {
        const info = await stat(join(recordsDir, name)).catch(() => undefined);
        if (info) index.set(name, { at: info.mtimeMs, bytes: info.size });
      }),
    );
  }
  return index;
}
