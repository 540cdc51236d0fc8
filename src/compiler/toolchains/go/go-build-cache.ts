import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
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
 */
export interface GoBuildCaches {
  /** The build cache of `module`, created (from the base) on first use. */
  forModule(module: string, base: BaseOptions): Promise<string>;
}

interface BaseOptions {
  readonly installation: GoInstallation;
  readonly flags: readonly string[];
  readonly sandbox: Sandbox;
  readonly signal?: AbortSignal;
}

const COMPLETE = "atomix-base-complete";

export function createGoBuildCaches(cacheDir: string): GoBuildCaches {
  const bases = new Map<string, Promise<string | undefined>>();

  /** The base for an installation and flags, built once; undefined if it cannot be (a cold start then). */
  function base(options: BaseOptions): Promise<string | undefined> {
    const id = digest(
      [options.installation.goroot, options.installation.release, ...options.flags].join("\0"),
    );
    let pending = bases.get(id);
    if (!pending) {
      pending = buildBase(join(cacheDir, "build-base", id), options).catch(() => undefined);
      // A failed attempt (a build stopped half-way) is tried again next time.
      void pending.then((dir) => {
        if (dir === undefined) bases.delete(id);
      });
      bases.set(id, pending);
    }
    return pending;
  }

  return {
    async forModule(module, options) {
      const dir = join(cacheDir, "build-by-module", digest(module));
      if (await exists(dir)) return dir;
      const seed = await base(options);
      await mkdir(join(cacheDir, "build-by-module"), { recursive: true });
      const fresh = await mkdtemp(`${dir}.new-`);
      try {
        if (seed) await cp(seed, fresh, { recursive: true });
        await rm(join(fresh, COMPLETE), { force: true });
        // Two first builds of one module at once: the first rename wins, the other copy goes.
        await rename(fresh, dir).catch(() => rm(fresh, { recursive: true, force: true }));
      } catch (error) {
        await rm(fresh, { recursive: true, force: true });
        throw error;
      }
      return dir;
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
