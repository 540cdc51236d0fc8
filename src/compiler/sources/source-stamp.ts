import { createHash } from "node:crypto";
import * as fsPromises from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import type { PluginRef } from "atomix-plugins-core/model/build-key";

/** Entries a stamp looks at before it gives up (and says "unknown", which forgets nothing wrongly). */
const MAX_ENTRIES = 20_000;

/**
 * Folders of at most this many entries are walked again for every call, so
 * that an edit is seen by the very next call. A larger one (a vendored
 * tree; --max-source-files allows 10,000 files) costs 0.5-1.5 s of the
 * file-system threads and tens of milliseconds of the event loop a walk, so
 * whatever the number of callers it is walked by one background check at a
 * time, idle for IDLE_WALKS times as long as the last walk took.
 */
const WALKED_EVERY_CALL = 1_000;

/** A large folder's checks take at most 1/(1 + IDLE_WALKS) of the time of one file-system thread. */
const IDLE_WALKS = 10;

/**
 * A cheap fingerprint of where `name@version` comes from, taken without
 * building: for a catalog folder or tarball, the paths, sizes and
 * modification times of what it holds; for a plugin no catalog has, the
 * package registry or Go module proxy, where a published version never
 * changes, a constant. A remembered failure is answered again only while
 * the stamp is the same. `undefined` when it cannot tell (too many files,
 * unreadable): then nothing is remembered.
 *
 * `fresh` (a build about to copy the source): from a walk that starts
 * after the call, whatever the folder's size. Without it, a folder of more
 * than WALKED_EVERY_CALL entries answers with its last background check, so
 * an edit there is seen once the check after it has finished.
 */
export type SourceStamp = (plugin: PluginRef, options?: { fresh?: boolean }) => Promise<string | undefined>;

/** The file-system calls a stamp makes; the tests count them. */
export type StampFs = Pick<typeof fsPromises, "lstat" | "readdir">;

interface Walk {
  stamp: string | undefined;
  entries: number;
}

/** One catalog folder's walks: at most one running and one waiting, whatever the number of callers. */
interface Folder {
  last?: Walk & { finishedAt: number; durationMs: number };
  running?: Promise<Walk>;
  /** The walk that starts when `running` ends: callers that came while it ran share it. */
  next?: Promise<Walk>;
}

export function createSourceStamp(catalogs: readonly string[], options: { fs?: StampFs } = {}): SourceStamp {
  const fs = options.fs ?? fsPromises;
  const roots = catalogs.map((dir) => resolve(dir));
  const folders = new Map<string, Folder>();

  const start = (folder: Folder, path: string): Promise<Walk> => {
    const started = performance.now();
    const walk = walkFolder(fs, path).then((result) => {
      const finishedAt = performance.now();
      folder.last = { ...result, finishedAt, durationMs: finishedAt - started };
      return result;
    });
    folder.running = walk;
    void walk.then(() => {
      if (folder.running === walk) folder.running = undefined;
    });
    return walk;
  };
  /** A walk that starts no earlier than this call, shared with every caller waiting for the same. */
  const walkFrom = (folder: Folder, path: string): Promise<Walk> => {
    if (!folder.running) return start(folder, path);
    folder.next ??= folder.running.then(() => {
      folder.next = undefined;
      return start(folder, path);
    });
    return folder.next;
  };
  const checkInBackground = (folder: Folder, path: string, last: NonNullable<Folder["last"]>) => {
    if (folder.running || performance.now() - last.finishedAt < IDLE_WALKS * last.durationMs) return;
    void start(folder, path);
  };

  return async (plugin, stampOptions) => {
    for (const root of roots) {
      const bare = plugin.version.replace(/^v/, "");
      const candidates = [
        join(root, plugin.name, plugin.version),
        join(root, plugin.name, `v${bare}`),
        join(root, plugin.name, bare),
        join(root, plugin.name, `${plugin.version}.tgz`),
      ];
      for (const path of candidates) {
        if (relative(root, path).startsWith("..")) continue;
        const info = await fs.lstat(path).catch(() => undefined);
        if (!info) continue;
        const folder = folders.get(path) ?? {};
        folders.set(path, folder);
        const last = folder.last;
        if (stampOptions?.fresh || !last || last.entries <= WALKED_EVERY_CALL) {
          return (await walkFrom(folder, path)).stamp;
        }
        checkInBackground(folder, path, last);
        return last.stamp;
      }
    }
    return "registry";
  };
}

async function walkFolder(fs: StampFs, top: string): Promise<Walk> {
  const lines: string[] = [];
  const walked = await walk(fs, top, top, lines).catch(() => false);
  if (!walked) return { stamp: undefined, entries: lines.length };
  return {
    stamp: `catalog:${createHash("sha256").update(lines.sort().join("\n")).digest("hex")}`,
    entries: lines.length,
  };
}

async function walk(fs: StampFs, top: string, path: string, lines: string[]): Promise<boolean> {
  if (lines.length > MAX_ENTRIES) return false;
  const info = await fs.lstat(path).catch(() => undefined);
  if (!info) return false;
  lines.push(
    `${relative(top, path)}\0${info.isDirectory() ? "d" : info.size}\0${info.mtimeMs}\0${info.mode}`,
  );
  if (!info.isDirectory()) return true;
  const names = await fs.readdir(path).catch(() => undefined);
  if (!names) return false;
  for (const name of names) if (!(await walk(fs, top, join(path, name), lines))) return false;
  return true;
}
