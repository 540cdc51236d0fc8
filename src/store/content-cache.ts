import { createHash, randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { type FileHandle, mkdir, open, opendir, rename, rm, stat, utimes } from "node:fs/promises";
import { join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import type { Logger } from "pino";
import type { BlobReader } from "./artifact-store.js";
import { syncDirectory } from "./atomic-file.js";
import { isRunning } from "./process-alive.js";
import { readFully } from "./read-fully.js";

/** The bytes of a blob from `offset` on, as its upstream (a registry, another server) sends them. */
export type UpstreamRead = (offset: number, signal: AbortSignal) => AsyncIterable<Uint8Array>;

export interface ContentCacheOptions {
  /** Where blobs are kept: `<dir>/sha256/<hex>`. Created if missing. */
  dir: string;
  /** Bytes of blobs kept, at most, once no pull reads the ones beyond it. */
  maxBytes: number;
  log?: Logger | undefined;
  /** Ranged reads that resume a fill after its upstream failed, at most. Default 3. */
  maxResumes?: number | undefined;
  /** A fill whose upstream sends nothing for this long fails (UNAVAILABLE), without resuming. Default 30 s. */
  stallMs?: number | undefined;
}

/** What the cache has done since it opened, for metrics. */
export interface ContentCacheCounters {
  /** Blobs opened from local disk. */
  hits: number;
  /** Blobs opened while not held: each starts a fill, or joins one. */
  misses: number;
  /** Opens that joined a fill another pull started, reading while it lands. */
  fillJoins: number;
  /** Fills started: one upstream fetch each (resumes aside). */
  upstreamFetches: number;
  /** Ranged reads that resumed a fill after its upstream failed. */
  upstreamResumes: number;
  upstreamBytes: number;
  /** Fills that failed: their waiters got the error, nothing was kept. */
  fillFailures: number;
  evictions: number;
  evictedBytes: number;
}

/** What the cache holds now. */
export interface ContentCacheState {
  /** Bytes of whole blobs plus those of fills in progress (each counted at its full size). */
  bytes: number;
  blobs: number;
  fills: number;
  /** Pulls waiting for bytes of a fill now. */
  waiters: number;
}

interface Held {
  readonly size: number;
  /** Pulls reading it now: it is never evicted while this is above 0. */
  readers: number;
  /** A blob found on disk at start is hashed once before it is first served. */
  verified: boolean | Promise<boolean>;
  /** When its file's time was last set, for the order of eviction after a restart. */
  touchedAt: number;
  /** identityOf its file once it matched its digest: another means the file was written since. */
  identity?: string | undefined;
  /** Set while the blob is being fetched: opens join it. */
  fill?: Fill | undefined;
}

const HEX = /^[0-9a-f]{64}$/;
/**
 * `<hex>.<pid>-<run>.partial` (`<hex>.<pid>.partial` before runs were named):
 * a fill in progress, or one a crash interrupted. The run's random token
 * keeps apart replicas that share the folder with the same pid, as
 * processes in containers do.
 */
const PARTIAL = /^[0-9a-f]{64}\.(\d+)(?:-([0-9a-f]{16}))?\.partial$/;
/**
 * A partial file of a running pid that nothing wrote for this long was left
 * by a crash (the pid is another container's, or this one's before a
 * restart): a fill writes as bytes arrive, and one that stalls is removed.
 */
const STALE_PARTIAL_MS = 10 * 60_000;
const TOUCH_EVERY_MS = 60_000;

/**
 * A replica's local content store: blobs by digest on its own disk, filled
 * from an upstream once however many pulls ask at once, and read by those
 * pulls while the bytes arrive.
 *
 * - One fill per digest: the first open starts it, later ones join it and
 *   read what has landed, waiting for the rest. A fill whose upstream fails
 *   resumes with a ranged read from what it has (`maxResumes` times); past
 *   that every waiter gets UNAVAILABLE and nothing is kept.
 * - Nothing unverified ends a pull: the bytes are hashed as they land, and
 *   the read that reaches a blob's last byte waits until the whole blob
 *   matched its digest and was committed (fsync, rename). A blob found on
 *   disk at start is hashed before its first use.
 * - Crash-safe: a fill writes `<hex>.<pid>-<run>.partial`; partial files of
 *   processes no longer running (or not written for ten minutes) are
 *   removed at start, so a replica killed mid-fill serves none of it.
 *   Replicas may share the folder: each counts and evicts what it knows,
 *   and a blob another one evicted is fetched again.
 * - Bounded: blobs beyond `maxBytes` are evicted least recently used first,
 *   never while a pull reads them; only the cache's own files count. A blob
 *   larger than `maxBytes` is served and then dropped, evicting no other.
 */
export class ContentCache {
  readonly #dir: string;
  readonly #options: ContentCacheOptions;
  /** Whole blobs by hex digest, least recently used first (a Map keeps insertion order). */
  readonly #held = new Map<string, Held>();
  readonly #fills = new Set<Fill>();
  readonly #closing = new AbortController();
  /** Names this process's partial files apart from those of any other with its pid. */
  readonly #run = randomBytes(8).toString("hex");
  #bytes = 0;
  readonly counters: ContentCacheCounters = {
    hits: 0,
    misses: 0,
    fillJoins: 0,
    upstreamFetches: 0,
    upstreamResumes: 0,
    upstreamBytes: 0,
    fillFailures: 0,
    evictions: 0,
    evictedBytes: 0,
  };

  private constructor(options: ContentCacheOptions) {
    this.#options = options;
    this.#dir = join(options.dir, "sha256");
  }

  /** Opens the cache in `options.dir`, learning what an earlier run left there. */
  static async open(options: ContentCacheOptions): Promise<ContentCache> {
    const cache = new ContentCache(options);
    await mkdir(cache.#dir, { recursive: true });
    await cache.#scan();
    return cache;
  }

  get state(): ContentCacheState {
    let waiters = 0;
    for (const fill of this.#fills) waiters += fill.waiting;
    return {
      bytes: this.#bytes,
      blobs: this.#held.size - this.#fills.size,
      fills: this.#fills.size,
      waiters,
    };
  }

  /** Whether the whole blob is on local disk now (a fill in progress is not). */
  holds(digest: string): boolean {
    const held = this.#held.get(hexOf(digest));
    return held !== undefined && !held.fill;
  }

  /**
   * Random access to the blob of `manifest`: from local disk when held,
   * else from the fill of it that is running or that this starts. The
   * reader's `read` waits for bytes that have not landed yet, and rejects
   * as the fill does when it fails.
   */
  async openBlob(manifest: ArtifactManifest, upstream: UpstreamRead): Promise<BlobReader> {
    const hex = hexOf(manifest.digest);
    let held = this.#held.get(hex);
    // A fill reads to the size it was started with, and a blob that matched its
    // digest has its true size: a pull that ends elsewhere would end on bytes
    // that were never checked, or that are not the blob.
    if (held && held.size !== manifest.size && (held.fill || held.verified === true)) {
      throw new PluginError(
        Code.DataLoss,
        `${manifest.digest} is ${held.size} bytes ${held.fill ? "as it is being fetched" : "as held"}, not the ${manifest.size} its manifest says`,
      );
    }
    if (held && !held.fill) {
      if (held.size === manifest.size) {
        held.readers += 1;
        let reader: BlobReader | undefined;
        try {
          if (await this.#verify(hex, held)) reader = await this.#heldReader(hex, held, manifest);
          if (!reader) held.verified = false;
        } catch (error) {
          // Another replica sharing the folder evicted it: fetched again below.
          if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
          held.verified = false;
        } finally {
          if (!reader) held.readers -= 1;
        }
        if (reader) {
          this.counters.hits += 1;
          return reader;
        }
      }
      // A file that is not what its name says is dropped and fetched again. Its
      // other readers are opens checking it as this one did (none reads a file
      // that failed), so they join the fill this one starts.
      await this.#forget(hex, held, "does not match its digest");
      held = this.#held.get(hex);
    }
    this.counters.misses += 1;
    if (held?.fill) this.counters.fillJoins += 1;
    else if (!held) held = this.#startFill(hex, manifest, upstream);
    else
      throw new PluginError(
        Code.Unavailable,
        `${manifest.digest} is being replaced in the content cache; try again`,
      );
    const fill = held.fill as Fill;
    const entry = held;
    entry.readers += 1;
    try {
      const reader = await fill.reader();
      let closed = false;
      return {
        read: reader.read,
        close: async () => {
          // Counted once: a second close must not make a blob another pull reads evictable.
          if (closed) return;
          closed = true;
          await reader.close();
          entry.readers -= 1;
          await this.#makeRoom();
        },
      };
    } catch (error) {
      entry.readers -= 1;
      throw error;
    }
  }

  /** Stops the fills in progress (their waiters get UNAVAILABLE); whole blobs stay for the next run. */
  async close(): Promise<void> {
    this.#closing.abort(new PluginError(Code.Unavailable, "the server is shutting down"));
    await Promise.allSettled([...this.#fills].map((fill) => fill.finished));
  }

  async #scan(): Promise<void> {
    const found: { hex: string; size: number; mtimeMs: number }[] = [];
    const dir = await opendir(this.#dir);
    for await (const entry of dir) {
      const path = join(this.#dir, entry.name);
      const partial = PARTIAL.exec(entry.name);
      if (partial) {
        // A fill a crash interrupted; a running pid's may be another replica's fill in progress.
        const pid = Number(partial[1]);
        const stale =
          !isRunning(pid) ||
          (partial[2] === undefined && pid === process.pid) ||
          Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? 0) > STALE_PARTIAL_MS;
        if (stale) await rm(path, { force: true });
        continue;
      }
      if (!entry.isFile() || !HEX.test(entry.name)) continue;
      const info = await stat(path);
      found.push({ hex: entry.name, size: info.size, mtimeMs: info.mtimeMs });
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const blob of found) {
      this.#held.set(blob.hex, { size: blob.size, readers: 0, verified: false, touchedAt: blob.mtimeMs });
      this.#bytes += blob.size;
    }
    await this.#makeRoom();
    if (found.length > 0)
      this.#options.log?.info(
        { blobs: this.#held.size, bytes: this.#bytes },
        "content cache: blobs kept from the last run",
      );
  }

  /** Hashes a blob found at start, once; a mismatch is forgotten by the caller. */
  async #verify(hex: string, held: Held): Promise<boolean> {
    if (held.verified === true) return true;
    if (held.verified === false) {
      held.verified = hashFile(join(this.#dir, hex)).then(
        (actual) => actual === hex,
        () => false,
      );
    }
    const ok = await held.verified;
    held.verified = ok;
    if (!ok) this.#options.log?.warn({ digest: `sha256:${hex}` }, "content cache: a kept blob is corrupt");
    return ok;
  }

  /** A reader of a whole blob on disk; undefined when its file was written since it matched its digest and no longer does. */
  async #heldReader(hex: string, held: Held, manifest: ArtifactManifest): Promise<BlobReader | undefined> {
    const path = join(this.#dir, hex);
    const handle = await open(path, "r");
    try {
      // Nothing of this cache writes a kept blob: a file written since (in
      // place, or another put in its place) is hashed again before it is served.
      const identity = identityOf(await handle.stat());
      if (held.identity !== undefined && held.identity !== identity && (await hashHandle(handle)) !== hex) {
        this.#options.log?.warn({ digest: `sha256:${hex}` }, "content cache: a kept blob was written over");
        await handle.close();
        return undefined;
      }
      held.identity = identity;
    } catch (error) {
      await handle.close();
      throw error;
    }
    // Most recently used: to the end of the eviction order.
    this.#held.delete(hex);
    this.#held.set(hex, held);
    const now = Date.now();
    if (now - held.touchedAt > TOUCH_EVERY_MS) {
      held.touchedAt = now;
      const seconds = now / 1000;
      const before = held.identity;
      // The touch changes the file's times: what it is now is what was checked.
      utimes(path, seconds, seconds)
        .then(() => stat(path))
        .then((info) => {
          if (held.identity === before) held.identity = identityOf(info);
        })
        .catch(() => {});
    }
    let closed = false;
    return {
      read: (into, at, length, position) =>
        readFully(handle, into, at, Math.min(length, manifest.size - position), position),
      close: async () => {
        if (closed) return;
        closed = true;
        held.readers -= 1;
        await handle.close();
        await this.#makeRoom();
      },
    };
  }

  #startFill(hex: string, manifest: ArtifactManifest, upstream: UpstreamRead): Held {
    this.counters.upstreamFetches += 1;
    const fill = new Fill({
      dir: this.#dir,
      hex,
      partial: `${hex}.${process.pid}-${this.#run}.partial`,
      manifest,
      upstream,
      counters: this.counters,
      closing: this.#closing.signal,
      maxResumes: this.#options.maxResumes ?? 3,
      stallMs: this.#options.stallMs ?? 30_000,
    });
    const held: Held = { size: manifest.size, readers: 0, verified: true, touchedAt: Date.now(), fill };
    this.#held.set(hex, held);
    this.#fills.add(fill);
    this.#bytes += manifest.size;
    // Room is made before the bytes land, so the budget holds during the fill too.
    void this.#makeRoom();
    fill.finished.then(
      () => {
        this.#fills.delete(fill);
        held.fill = undefined;
        held.identity = fill.identity;
        void this.#makeRoom();
      },
      (error: unknown) => {
        this.#fills.delete(fill);
        if (this.#held.get(hex) === held) this.#held.delete(hex);
        this.#bytes -= manifest.size;
        this.counters.fillFailures += 1;
        this.#options.log?.warn(
          { digest: manifest.digest, error: (error as Error).message },
          "content cache: a fill failed; its pulls were told, nothing was kept",
        );
      },
    );
    return held;
  }

  /** Evicts least recently used blobs no pull reads until the cache is within its bytes. */
  async #makeRoom(): Promise<void> {
    const max = this.#options.maxBytes;
    // Called at every close: within its bytes, nothing to look at.
    if (this.#bytes <= max) return;
    // A blob larger than the whole cache is never kept: it goes first once no
    // pull reads it, and while one does, nothing is evicted for room it cannot have.
    let unkeepable = 0;
    for (const [hex, held] of this.#held) {
      if (held.size <= max) continue;
      if (held.readers > 0 || held.fill) unkeepable += held.size;
      else await this.#evict(hex, held);
    }
    for (const [hex, held] of this.#held) {
      if (this.#bytes - unkeepable <= max) return;
      if (held.readers > 0 || held.fill || held.size > max) continue;
      await this.#evict(hex, held);
    }
  }

  async #evict(hex: string, held: Held): Promise<void> {
    this.counters.evictions += 1;
    this.counters.evictedBytes += held.size;
    await this.#forget(hex, held, "evicted");
  }

  async #forget(hex: string, held: Held, why: string): Promise<void> {
    if (this.#held.get(hex) !== held) return;
    this.#held.delete(hex);
    this.#bytes -= held.size;
    await rm(join(this.#dir, hex), { force: true }).catch((error: unknown) => {
      this.#options.log?.warn(
        { digest: `sha256:${hex}`, error: (error as Error).message, why },
        "content cache: cannot remove a blob",
      );
    });
  }
}

interface FillOptions {
  dir: string;
  hex: string;
  /** The file's name while it fills, this process's own. */
  partial: string;
  manifest: ArtifactManifest;
  upstream: UpstreamRead;
  counters: ContentCacheCounters;
  closing: AbortSignal;
  maxResumes: number;
  stallMs: number;
}

/**
 * One blob being fetched into `<hex>.<pid>.partial`, read by its pulls as it
 * lands. The file's handle is shared by the fill (writing) and its readers
 * (positional reads), and closed once the last of them is done with it:
 * after the commit it names the same bytes under the final name.
 */
class Fill {
  readonly finished: Promise<void>;
  /** identityOf the committed file. */
  identity: string | undefined;
  #filled = 0;
  #committed = false;
  #error: PluginError | undefined;
  #wake: (() => void)[] = [];
  #handle: Promise<FileHandle>;
  /** The fill itself plus each open reader. */
  #users = 1;

  constructor(private readonly options: FillOptions) {
    this.#handle = open(join(options.dir, options.partial), "w+", 0o644);
    this.finished = this.#run().then(
      () => {
        this.#committed = true;
        this.#notify();
      },
      async (error: unknown) => {
        // Nothing half-fetched is kept (its readers still hold the handle),
        // and it is gone before any waiter hears of the failure.
        await rm(join(options.dir, options.partial), { force: true }).catch(() => {});
        this.#error = fillError(error, options.manifest);
        this.#notify();
        throw this.#error;
      },
    );
    this.finished.catch(() => {}).finally(() => this.#release());
  }

  get waiting(): number {
    return this.#wake.length;
  }

  async reader(): Promise<BlobReader> {
    this.#users += 1;
    let handle: FileHandle;
    try {
      handle = await this.#handle;
    } catch (error) {
      await this.#release();
      throw fillError(error, this.options.manifest);
    }
    const { size } = this.options.manifest;
    let closed = false;
    return {
      read: async (into, at, length, position) => {
        const end = Math.min(position + length, size);
        // The last byte is handed out only once the whole blob matched its digest.
        while (end === size ? !this.#committed : this.#filled < end) {
          if (this.#error) throw this.#error;
          await new Promise<void>((resolve) => this.#wake.push(resolve));
        }
        return readFully(handle, into, at, end - position, position);
      },
      close: async () => {
        if (closed) return;
        closed = true;
        await this.#release();
      },
    };
  }

  #notify(): void {
    const waiting = this.#wake;
    this.#wake = [];
    for (const wake of waiting) wake();
  }

  async #release(): Promise<void> {
    this.#users -= 1;
    if (this.#users === 0) await (await this.#handle.catch(() => undefined))?.close();
  }

  async #run(): Promise<void> {
    const { manifest, counters, dir, hex } = this.options;
    const handle = await this.#handle;
    const hash = createHash("sha256");
    let resumes = 0;
    while (this.#filled < manifest.size) {
      this.options.closing.throwIfAborted();
      const stall = new StallGuard(this.options.stallMs, this.options.closing);
      try {
        for await (const chunk of this.options.upstream(this.#filled, stall.signal)) {
          stall.progress();
          if (this.#filled + chunk.byteLength > manifest.size) {
            throw new PluginError(
              Code.DataLoss,
              `the upstream sent more than the ${manifest.size} bytes of ${manifest.digest}`,
            );
          }
          await writeFully(handle, chunk, this.#filled);
          hash.update(chunk);
          this.#filled += chunk.byteLength;
          counters.upstreamBytes += chunk.byteLength;
          this.#notify();
        }
        if (this.#filled < manifest.size) {
          throw new PluginError(
            Code.Unavailable,
            `the upstream ended ${manifest.digest} at byte ${this.#filled} of ${manifest.size}`,
          );
        }
      } catch (error) {
        const failure = PluginError.from(stall.signal.aborted ? (stall.signal.reason ?? error) : error);
        // A stall is not resumed: its waiters were promised an answer within one stall limit,
        // not one per ranged read of an upstream that keeps sending nothing.
        const retriable =
          !stall.signal.aborted &&
          (failure.code === Code.Unavailable || failure.code === Code.DeadlineExceeded);
        if (this.options.closing.aborted || !retriable || resumes >= this.options.maxResumes) throw failure;
        resumes += 1;
        counters.upstreamResumes += 1;
        await delay(100 * 4 ** (resumes - 1), this.options.closing);
      } finally {
        stall.stop();
      }
    }
    const actual = hash.digest("hex");
    if (actual !== hex) {
      throw new PluginError(
        Code.DataLoss,
        `the upstream's bytes for ${manifest.digest} hash to sha256:${actual}`,
      );
    }
    await handle.sync();
    await rename(join(dir, this.options.partial), join(dir, hex));
    await syncDirectory(dir);
    this.identity = identityOf(await handle.stat());
  }
}

/** What a failed fill tells its waiters: the store's own code for a corrupt blob, else UNAVAILABLE. */
function fillError(error: unknown, manifest: ArtifactManifest): PluginError {
  const failure = PluginError.from(error);
  if (failure.code === Code.DataLoss || failure.code === Code.NotFound) return failure;
  return new PluginError(
    Code.Unavailable,
    `fetching ${manifest.digest} from upstream failed: ${failure.message}; nothing of it was kept, try again`,
    { cause: error },
  );
}

/** Aborts its signal when `progress` was not called for `ms`, or when `outer` aborts. */
class StallGuard {
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout;
  #last = Date.now();
  readonly #onOuter = () => this.#controller.abort(this.outer.reason);

  constructor(
    ms: number,
    private readonly outer: AbortSignal,
  ) {
    outer.addEventListener("abort", this.#onOuter, { once: true });
    this.#timer = setInterval(
      () => {
        if (Date.now() - this.#last >= ms) {
          this.#controller.abort(new PluginError(Code.Unavailable, `the upstream sent nothing for ${ms} ms`));
        }
      },
      Math.max(10, Math.min(1000, ms / 4)),
    );
    this.#timer.unref();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  progress(): void {
    this.#last = Date.now();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.outer.removeEventListener("abort", this.#onOuter);
  }
}

function hexOf(digest: string): string {
  const hex = digest.startsWith("sha256:") ? digest.slice("sha256:".length) : "";
  if (!HEX.test(hex))
    throw new PluginError(Code.DataLoss, `${JSON.stringify(digest.slice(0, 80))} is not a sha256 digest`);
  return hex;
}

async function hashFile(path: string): Promise<string> {
  const handle = await open(path, "r");
  try {
    return await hashHandle(handle);
  } finally {
    await handle.close();
  }
}

async function hashHandle(handle: FileHandle): Promise<string> {
  const hash = createHash("sha256");
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let position = 0;
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, buffer.byteLength, position);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  return hash.digest("hex");
}

/** What changes when a file is written or another is put in its place (ctime: even if its mtime is set back). */
function identityOf(info: Stats): string {
  return `${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
}

async function writeFully(handle: FileHandle, chunk: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < chunk.byteLength) {
    const { bytesWritten } = await handle.write(
      chunk,
      written,
      chunk.byteLength - written,
      position + written,
    );
    written += bytesWritten;
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
