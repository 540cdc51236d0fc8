import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { formatBuildKey } from "atomix-plugins-core/model/build-key";
import type { ArtifactStore, ListFilter, ScanEntry, ScanOptions } from "./artifact-store.js";
import { matchesFilter } from "./store-checks.js";

/** The most manifests one page carries, whatever was asked: about 0.5 MB of gRPC message. */
export const MAX_PAGE_SIZE = 1000;

/**
 * The most keys one page call examines: a filter that matches few keys of a
 * large store answers a short (even empty) page with a continuation token
 * instead of reading every manifest in one call.
 */
export const PAGE_SCAN_BUDGET = 10_000;

/**
 * About the most bytes of manifests one page carries: annotations have no
 * size limit of their own, and a gRPC client receives 4 MiB by default.
 */
export const PAGE_BYTES = 2 * 1024 * 1024;

export interface PageRequest extends ListFilter {
  /** 1..MAX_PAGE_SIZE; 0 or absent means MAX_PAGE_SIZE. */
  limit?: number | undefined;
  /** The `next` of the previous page; absent for the first. */
  pageToken?: string | undefined;
  /** A further condition on each manifest (the catalog page's free-text filter). */
  where?: ((manifest: ArtifactManifest) => boolean) | undefined;
  signal?: AbortSignal | undefined;
}

export interface ManifestPage {
  manifests: ArtifactManifest[];
  /** Continuation token when more keys may follow; absent on the last page. */
  next?: string | undefined;
}

/**
 * One page of the store's manifests, in its stable order. Memory holds the
 * page only; the token is the position of the last key examined, opaque to
 * callers (base64url), so a page resumes where the previous one ended even
 * when keys were added or removed in between.
 */
export async function listPage(store: ArtifactStore, request: PageRequest): Promise<ManifestPage> {
  const limit = pageLimit(request.limit);
  const filter: ListFilter = {
    ...(request.pluginName ? { pluginName: request.pluginName } : {}),
    ...(request.runtimeVersion ? { runtimeVersion: request.runtimeVersion } : {}),
  };
  const after = request.pageToken ? decodePageToken(request.pageToken) : undefined;
  const manifests: ArtifactManifest[] = [];
  let last: string | undefined;
  let examined = 0;
  let bytes = 0;
  for await (const { position, manifest } of scanStore(store, { filter, after, signal: request.signal })) {
    if (manifest && matchesFilter(manifest, filter) && (!request.where || request.where(manifest))) {
      bytes += approximateSize(manifest);
      // One more match than the page holds, or than its bytes allow: the page ends before it.
      if (manifests.length === limit || (manifests.length > 0 && bytes > PAGE_BYTES)) {
        return { manifests, next: encodePageToken(last ?? position) };
      }
      manifests.push(manifest);
    }
    last = position;
    examined += 1;
    if (examined >= PAGE_SCAN_BUDGET) return { manifests, next: encodePageToken(position) };
  }
  return { manifests };
}

/**
 * The store's `scan`; for a store without one, its `list` (sorted by key,
 * held in memory) walked with the formatted key as the position.
 */
export function scanStore(
  store: Pick<ArtifactStore, "scan" | "list">,
  options: ScanOptions = {},
): AsyncIterable<ScanEntry> {
  return store.scan ? store.scan(options) : scanList(store, options);
}

async function* scanList(
  store: Pick<ArtifactStore, "list">,
  options: ScanOptions,
): AsyncGenerator<ScanEntry> {
  for (const manifest of await store.list(options.filter)) {
    const position = formatBuildKey(manifest.key);
    // The order `list` sorts by.
    if (options.after !== undefined && position.localeCompare(options.after) <= 0) continue;
    options.signal?.throwIfAborted();
    yield { position, manifest };
  }
}

/** The order of `list` and of pages: by formatted build key, the position `scan` goes by. */
export function compareManifests(a: ArtifactManifest, b: ArtifactManifest): number {
  return formatBuildKey(a.key).localeCompare(formatBuildKey(b.key));
}

/** Every manifest matching `filter`, read as `scan` goes; what the stores' `list` answers. */
export async function collectManifests(
  scan: () => AsyncIterable<ScanEntry>,
  filter: ListFilter | undefined,
): Promise<ArtifactManifest[]> {
  const found: ArtifactManifest[] = [];
  for await (const { manifest } of scan()) {
    if (manifest && matchesFilter(manifest, filter)) found.push(manifest);
  }
  return found;
}

/** A manifest's size in a message, near enough: its fields and annotations as text. */
function approximateSize(manifest: ArtifactManifest): number {
  let size = 200 + manifest.key.plugin.name.length + manifest.key.plugin.version.length;
  size += manifest.key.runtime.version.length + manifest.key.runtime.buildVersion.length;
  size += manifest.mediaType.length + manifest.createdAt.length;
  for (const [name, value] of Object.entries(manifest.annotations)) size += name.length + value.length + 8;
  return size;
}

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined || limit === 0) return MAX_PAGE_SIZE;
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new PluginError(Code.InvalidArgument, `page size ${limit} is not a whole number of at least 1`);
  }
  return Math.min(limit, MAX_PAGE_SIZE);
}

export function encodePageToken(position: string): string {
  return Buffer.from(position, "utf8").toString("base64url");
}

export function decodePageToken(token: string): string {
  if (token.length > 512 || !/^[A-Za-z0-9_-]+$/.test(token)) throw badToken();
  return Buffer.from(token, "base64url").toString("utf8");
}

export function badToken(): PluginError {
  return new PluginError(
    Code.InvalidArgument,
    "the page token is not one this server gave out; start again without it",
  );
}

/**
 * `map` over `items` with at most `concurrency` calls in flight, yielding
 * results in the items' order. A consumer that stops early leaves the calls
 * in flight to finish on their own (their failures are dropped).
 */
export async function* mapOrdered<T, R>(
  items: Iterable<T>,
  concurrency: number,
  map: (item: T) => Promise<R>,
): AsyncGenerator<R> {
  const source = items[Symbol.iterator]();
  const window: Promise<R>[] = [];
  const fill = () => {
    while (window.length < concurrency) {
      const next = source.next();
      if (next.done) return;
      const pending = map(next.value);
      pending.catch(() => {});
      window.push(pending);
    }
  };
  fill();
  for (let head = window.shift(); head; head = window.shift()) {
    const result = await head;
    fill();
    yield result;
  }
}
