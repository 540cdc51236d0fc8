import { mkdir, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { PluginError } from "../errors/plugin-error.js";
import { type BuildKey, buildKeyId } from "../model/build-key.js";
import type { BuildRecord } from "../model/build-record.js";
import { writeFileAtomic } from "./atomic-file.js";
import type { BuildRecordStore } from "./build-record-store.js";

/**
 * Build records in the embedded store's data directory:
 * `<dir>/build-records/<sha256 of the key>.json`, written atomically.
 */
export async function createFsBuildRecordStore(options: { dir: string }): Promise<BuildRecordStore> {
  const recordsDir = join(options.dir, "build-records");
  const tmpDir = join(options.dir, "tmp");
  await mkdir(recordsDir, { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  const pathOf = (key: BuildKey) => join(recordsDir, `${buildKeyId(key)}.json`);

  async function read(path: string): Promise<BuildRecord | undefined> {
    try {
      return JSON.parse(await readFile(path, "utf8")) as BuildRecord;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || error instanceof SyntaxError) return undefined;
      throw PluginError.from(error, "reading a build record");
    }
  }

  return {
    async putBuildRecord(record) {
      await writeFileAtomic(pathOf(record.key), `${JSON.stringify(record)}\n`, tmpDir);
    },
    getBuildRecord: (key) => read(pathOf(key)),
    async listBuildRecords(limit) {
      const names = (await readdir(recordsDir)).filter((name) => name.endsWith(".json"));
      const stamped = await Promise.all(
        names.map(async (name) => ({
          name,
          mtime: (await stat(join(recordsDir, name)).catch(() => undefined))?.mtimeMs ?? 0,
        })),
      );
      const newest = stamped.sort((a, b) => b.mtime - a.mtime).slice(0, limit);
      const records = await Promise.all(newest.map(({ name }) => read(join(recordsDir, name))));
      return records
        .filter((record): record is BuildRecord => record !== undefined)
        .map((record) => ({ ...record, output: "" }))
        .sort((a, b) => b.finishedAt.localeCompare(a.finishedAt));
    },
  };
}
