import { chmod, lstat, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";

/**
 * Something the server keeps on disk between builds (a Go build cache, the
 * Go module cache, build records): every caller can make it grow, so each
 * has a bound, is reclaimed least recently used first, and says what it
 * holds to `gc` and to /metrics.
 */
export interface DiskCache {
  /** Its name in gc reports and in the `cache` label of metrics: `go-build`, `go-modules`, `build-records`. */
  readonly name: string;
  /** What it holds now, as last measured (cheap: no walk of the disk). */
  usage(): CacheUsage;
  /** Reclaims what lies beyond its bound, least recently used first. */
  collect(): Promise<CacheCollection>;
}

export interface CacheUsage {
  readonly bytes: number;
  readonly entries: number;
  /** Its bound in bytes, or 0 when it is bounded by a count of entries instead. */
  readonly maxBytes: number;
  /** Its bound in entries, or 0 when it is bounded in bytes. */
  readonly maxEntries: number;
}

export interface CacheCollection {
  readonly removedEntries: number;
  readonly freedBytes: number;
}

/**
 * Bytes of the files under `path` (its own size if a file), never following
 * a link: a build may have left links pointing anywhere. Missing: 0.
 */
export async function treeBytes(path: string): Promise<number> {
  const info = await lstat(path).catch(() => undefined);
  if (!info) return 0;
  if (!info.isDirectory()) return info.size;
  let total = 0;
  const entries = await readdir(path, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const child = join(path, entry.name);
    total += entry.isDirectory()
      ? await treeBytes(child)
      : ((await lstat(child).catch(() => undefined))?.size ?? 0);
  }
  return total;
}

/**
 * Removes a tree that Go may have made read-only (its module cache is), as
 * a non-root server could not otherwise. It is renamed aside first, so that
 * no reader ever finds it half removed under its own name.
 */
export async function removeTree(path: string): Promise<void> {
  const aside = `${path}.removing-${process.pid}-${Date.now()}`;
  const target = await rename(path, aside).then(
    () => aside,
    (error: NodeJS.ErrnoException) => (error.code === "ENOENT" ? undefined : path),
  );
  if (target === undefined) return;
  await makeWritable(target);
  await rm(target, { recursive: true, force: true, maxRetries: 3 });
}

async function makeWritable(dir: string): Promise<void> {
  const info = await lstat(dir).catch(() => undefined);
  if (!info?.isDirectory()) return;
  await chmod(dir, 0o700).catch(() => {});
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) if (entry.isDirectory()) await makeWritable(join(dir, entry.name));
}

/** One cache as `gc` reports it: what it holds after the collection, its bound, and what went. */
export interface CacheReport extends CacheUsage, CacheCollection {
  readonly name: string;
}

/** Collects every cache in turn, and reports each: what `gc` does beyond the artifact store. */
export async function collectCaches(caches: readonly DiskCache[]): Promise<CacheReport[]> {
  const reports: CacheReport[] = [];
  for (const cache of caches) {
    const collected = await cache.collect();
    reports.push({ name: cache.name, ...cache.usage(), ...collected });
  }
  return reports;
}
