import { createHash } from "node:crypto";
import { lstat, readdir } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import type { PluginRef } from "../../model/build-key.js";

/** Entries a stamp looks at before it gives up (and says "unknown", which forgets nothing wrongly). */
const MAX_ENTRIES = 20_000;

/**
 * A cheap fingerprint of where `name@version` comes from, taken without
 * building: for a catalog folder or tarball, the paths, sizes and
 * modification times of what it holds; for a plugin no catalog has, the
 * package registry or Go module proxy, where a published version never
 * changes, a constant. A remembered failure is answered again only while
 * the stamp is the same. `undefined` when it cannot tell (too many files,
 * unreadable): then nothing is remembered.
 */
export type SourceStamp = (plugin: PluginRef) => Promise<string | undefined>;

export function createSourceStamp(catalogs: readonly string[]): SourceStamp {
  const roots = catalogs.map((dir) => resolve(dir));
  return async (plugin) => {
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
        const info = await lstat(path).catch(() => undefined);
        if (!info) continue;
        const lines: string[] = [];
        const walked = await walk(path, path, lines);
        if (!walked) return undefined;
        return `catalog:${createHash("sha256").update(lines.sort().join("\n")).digest("hex")}`;
      }
    }
    return "registry";
  };
}

async function walk(top: string, path: string, lines: string[]): Promise<boolean> {
  if (lines.length > MAX_ENTRIES) return false;
  const info = await lstat(path).catch(() => undefined);
  if (!info) return false;
  lines.push(
    `${relative(top, path)}\0${info.isDirectory() ? "d" : info.size}\0${info.mtimeMs}\0${info.mode}`,
  );
  if (!info.isDirectory()) return true;
  const names = await readdir(path).catch(() => undefined);
  if (!names) return false;
  for (const name of names) if (!(await walk(top, join(path, name), lines))) return false;
  return true;
}
