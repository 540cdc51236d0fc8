import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { DEFAULT_GO_CACHE_MAX_BYTES } from "../../build-defaults.js";
import { type CacheCollection, type DiskCache, removeTree, treeBytes } from "../../disk-cache.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import { goCommand } from "./go-command.js";
import type { GoInstallation } from "./go-installations.js";

/**
 * Go's build cache trusts what it finds: an entry written by one build is
 * used by the next without being checked. So each plugin module gets a
 * cache of its own, and a build (whatever its source manages to do inside
 * the sandbox) can only ever reach later builds of the same module.
 *
 * A new module's cache starts as a copy of a base that no plugin ever
 * wrote: the standard library compiled for plugin mode by a build of a
 * module of our own (no plugin code), once per Go installation and build
 * flags. Without it every new driver would pay a cold build (20–30 s here);
 * with it, a copy of about 12 MiB.
 *
 * Every caller can make these grow, so they are a budget: a module's cache
 * is made only once its module resolved (a name that exists nowhere costs
 * nothing), a build that fails leaves nothing in it for the next build to
 * trust (the cache is removed, and the next build starts again from the
 * base), and all of `cacheDir` (module build caches, bases, the module
 * cache) is kept within `maxBytes`, least recently used module first.
 */
export interface GoBuildCaches {
  /**
   * Begins one build's use of the caches (the module cache at `<cacheDir>/mod`
   * is there until it ends); end it with `close`, whatever happened.
   */
  open(): Promise<GoCacheSession>;
  /** Module build caches and the module cache, as `gc` and /metrics report them. */
  readonly caches: readonly DiskCache[];
}

export interface GoCacheSession {
  /**
   * The build cache of `module`, created (from the base) on first use and
   * held by this build alone until `close`: two builds of one module take
   * turns, so that a failed one can be undone.
   */
  forModule(module: string, base: BaseOptions): Promise<string>;
  /** Ends the build's use: `succeeded` false removes what it wrote to its module's cache. */
  close(succeeded: boolean): Promise<void>;
}

interface BaseOptions {
  readonly installation: GoInstallation;
  readonly flags: readonly string[];
  readonly sandbox: Sandbox;
  readonly signal?: AbortSignal;
}

export interface GoBuildCacheOptions {
  /** Bytes all of `cacheDir` may hold; 10 GiB by default. */
  readonly maxBytes?: number;
  readonly log?: Logger;
}

const COMPLETE = "atomix-base-complete";

export function createGoBuildCaches(cacheDir: string, options: GoBuildCacheOptions = {}): GoBuildCaches {
  const bases = new Map<string, Promise<string | undefined>>();
  const maxBytes = options.maxBytes ?? DEFAULT_GO_CACHE_MAX_BYTES;
  const byModule = join(cacheDir, "build-by-module");
  const modCache = join(cacheDir, "mod");
  /** Module caches (by the hash naming their folder): bytes when last measured, last use. */
  const modules = new Map<string, { bytes: number; usedAt: number }>();
  const held = new Map<string, Promise<void>>();
  const measured = { baseBytes: 0, modBytes: 0 };
  let sessions = 0;
  let loaded: Promise<void> | undefined;
  let reclaiming: Promise<CacheCollection> = Promise.resolve({ removedEntries: 0, freedBytes: 0 });
  const freed = {
    builds: { removedEntries: 0, freedBytes: 0 },
    modules: { removedEntries: 0, freedBytes: 0 },
  };

  /** What a previous run of the server left: measured once, its last use taken from the folder's time. */
  function load(): Promise<void> {
    loaded ??= (async () => {
      const names = await readdir(byModule).catch(() => [] as string[]);
      for (const name of names) {
        if (!/^[0-9a-f]{32}$/.test(name)) {
          // A copy or a removal a crash interrupted.
          if (/\.(new|removing)-/.test(name)) await removeTree(join(byModule, name));
          continue;
        }
        const info = await stat(join(byModule, name)).catch(() => undefined);
        if (!info || modules.has(name)) continue;
        modules.set(name, { bytes: await treeBytes(join(byModule, name)), usedAt: info.mtimeMs });
      }
      measured.baseBytes = await treeBytes(join(cacheDir, "build-base"));
      measured.modBytes = await treeBytes(modCache);
    })();
    return loaded;
  }

  /** The base for an installation and flags, built once; undefined if it cannot be (a cold start then). */
  function base(options: BaseOptions): Promise<string | undefined> {
    const id = digest(
      [options.installation.goroot, options.installation.release, ...options.flags].join("\0"),
    );
    let pending = bases.get(id);
    if (!pending) {
      pending = buildBase(join(cacheDir, "build-base", id), options).catch(() => undefined);
      // A failed attempt (a build stopped half-way) is tried again next time.
      void pending.then(async (dir) => {
        if (dir === undefined) bases.delete(id);
        else measured.baseBytes = await treeBytes(join(cacheDir, "build-base"));
      });
      bases.set(id, pending);
    }
    return pending;
  }

  /** Waits for the module's cache to be free, then holds it; the returned function lets it go. */
  async function hold(id: string): Promise<() => void> {
    for (let current = held.get(id); current; current = held.get(id)) await current;
    let release!: () => void;
    held.set(
      id,
      new Promise<void>((resolve) => {
        release = resolve;
      }),
    );
    return () => {
      held.delete(id);
      release();
    };
  }

  async function create(dir: string, options: BaseOptions): Promise<void> {
    if (await exists(dir)) return;
    const seed = await base(options);
    await mkdir(byModule, { recursive: true });
    const fresh = await mkdtemp(`${dir}.new-`);
    try {
      if (seed) await cp(seed, fresh, { recursive: true });
      await rm(join(fresh, COMPLETE), { force: true });
      // Another server sharing the cache may have made it meanwhile: the first rename wins.
      await rename(fresh, dir).catch(() => rm(fresh, { recursive: true, force: true }));
    } catch (error) {
      await rm(fresh, { recursive: true, force: true });
      throw error;
    }
  }

  /** Keeps the whole cache within maxBytes: modules' caches first, least recently used first. */
  function reclaim(): Promise<CacheCollection> {
    // One at a time; one that failed (a file it could not remove) does not stop the next.
    reclaiming = reclaiming
      .catch(() => undefined)
      .then(async () => {
        await load();
        let removedEntries = 0;
        let freedBytes = 0;
        const total = () =>
          measured.baseBytes + measured.modBytes + [...modules.values()].reduce((sum, m) => sum + m.bytes, 0);
        const idle = [...modules.entries()]
          .filter(([id]) => !held.has(id))
          .sort(([, a], [, b]) => a.usedAt - b.usedAt);
        for (const [id, entry] of idle) {
          if (total() <= maxBytes) break;
          if (held.has(id)) continue;
          // Forgotten before the removal: a build of the module may start meanwhile and count its new cache.
          modules.delete(id);
          await removeTree(join(byModule, id));
          removedEntries++;
          freedBytes += entry.bytes;
          freed.builds.removedEntries++;
          freed.builds.freedBytes += entry.bytes;
        }
        // The module cache is read by every build, whatever module it builds:
        // it is emptied (modules are downloaded again) only while none runs.
        if (total() > maxBytes && sessions === 0 && measured.modBytes > 0) {
          const bytes = measured.modBytes;
          await removeTree(modCache);
          measured.modBytes = 0;
          freedBytes += bytes;
          removedEntries++;
          freed.modules.removedEntries++;
          freed.modules.freedBytes += bytes;
        }
        if (freedBytes > 0) {
          options.log?.info(
            { removedEntries, freedBytes, maxBytes },
            "Go caches reclaimed to stay within --go-cache-max-bytes",
          );
        }
        return { removedEntries, freedBytes };
      });
    return reclaiming;
  }

  /** What one kind of cache freed since the last report: gc reports reclaiming done after builds too. */
  function collected(kind: "builds" | "modules"): () => Promise<CacheCollection> {
    return async () => {
      await reclaim();
      const report = { ...freed[kind] };
      freed[kind] = { removedEntries: 0, freedBytes: 0 };
      return report;
    };
  }

  const caches: DiskCache[] = [
    {
      name: "go-build",
      usage: () => ({
        bytes: measured.baseBytes + [...modules.values()].reduce((sum, m) => sum + m.bytes, 0),
        entries: modules.size,
        maxBytes,
        maxEntries: 0,
      }),
      collect: collected("builds"),
    },
    {
      name: "go-modules",
      usage: () => ({ bytes: measured.modBytes, entries: 0, maxBytes, maxEntries: 0 }),
      collect: collected("modules"),
    },
  ];
  void load().catch(() => {});

  return {
    caches,
    async open() {
      // Counted first: a reclaim deciding from now on leaves the module cache alone,
      // and one that decided before is waited for.
      sessions++;
      try {
        await reclaiming.catch(() => {});
        await mkdir(modCache, { recursive: true });
      } catch (error) {
        sessions--;
        throw error;
      }
      let holding: { id: string; let: () => void } | undefined;
      let closed = false;
      return {
        async forModule(module, baseOptions) {
          if (holding) throw new Error("one module cache per build");
          await load();
          const id = digest(module);
          const letGo = await hold(id);
          holding = { id, let: letGo };
          const dir = join(byModule, id);
          await create(dir, baseOptions);
          return dir;
        },
        async close(succeeded) {
          if (closed) return;
          closed = true;
          try {
            if (holding) {
              const dir = join(byModule, holding.id);
              if (succeeded) {
                modules.set(holding.id, { bytes: await treeBytes(dir), usedAt: Date.now() });
              } else {
                // Whatever a failed build compiled (its own code, or objects it
                // planted) is not kept for the next build of the module to trust.
                await removeTree(dir);
                modules.delete(holding.id);
              }
            }
            measured.modBytes = await treeBytes(modCache);
          } finally {
            holding?.let();
            sessions--;
          }
          await reclaim().catch((error: unknown) =>
            options.log?.warn({ error: String(error) }, "the Go caches could not be reclaimed"),
          );
        },
      };
    },
  };
}

async function buildBase(dir: string, options: BaseOptions): Promise<string> {
  if (await exists(join(dir, COMPLETE))) return dir;
  const { installation, sandbox } = options;
  await mkdir(join(dir, ".."), { recursive: true });
  const work = await mkdtemp(`${dir}.work-`);
  const cache = join(work, "cache");
  try {
    const module = join(work, "module");
    await mkdir(module, { recursive: true });
    await mkdir(join(work, "home"));
    await mkdir(join(work, "tmp"));
    await mkdir(cache);
    await writeFile(join(module, "go.mod"), "module atomix.invalid/base\n\ngo 1.17\n");
    await writeFile(join(module, "main.go"), 'package main\n\nimport "C"\n\nvar Base int\n');
    const go = goCommand({
      installation,
      sandbox,
      ...(options.signal ? { signal: options.signal } : {}),
      env: {
        installation,
        workDir: work,
        buildCache: cache,
        modCache: join(work, "mod"),
        proxy: "off",
        sumdb: "off",
      },
    });
    await mkdir(join(work, "mod"));
    const result = await go.run(["build", ...options.flags, "-o", join(work, "base.so"), "."], module);
    if (result.exitCode !== 0) throw new Error(`the base build failed: ${result.stderr.slice(0, 500)}`);
    await writeFile(join(cache, COMPLETE), "");
    // A base is complete whenever its folder exists (it arrives by rename),
    // and is never replaced: another server sharing the cache may be copying it.
    await rename(cache, dir).catch(async (error: NodeJS.ErrnoException) => {
      if (!(await exists(join(dir, COMPLETE)))) throw error;
    });
    return dir;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function digest(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 32);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
