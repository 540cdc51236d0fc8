import { rm } from "node:fs/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { RuntimeReleaseSummary } from "atomix-plugins-core/model/runtime-release";
import type { Logger } from "pino";
import semver from "semver";
import type { RuntimeDescriptor } from "../compiler/toolchain.js";
import type { RuntimeReleaseStore } from "../store/runtime-release-store.js";
import { loadRuntimeCatalog, type RuntimeCatalog } from "./runtime-catalog.js";
import { gatherRuntimeRelease } from "./runtime-release-layout.js";
import {
  checkReleaseDescriptor,
  gatheredFiles,
  type IncomingReleaseFile,
  stageRuntimeRelease,
} from "./runtime-release-staging.js";

/**
 * The runtime releases a server knows: registered ones, from the store that
 * every replica shares. A catalog for the compiler (`get` looks in the store
 * before answering NOT_FOUND, so a release registered through another
 * replica builds at once), and the registration behind the admin API and
 * `--runtimes` at start.
 */
export interface RuntimeReleases extends RuntimeCatalog {
  /** Checks, stores and learns a release; see RuntimeReleaseStore.putRuntimeRelease. */
  register(
    version: string,
    files: AsyncIterable<IncomingReleaseFile> | Iterable<IncomingReleaseFile>,
    options?: { signal?: AbortSignal },
  ): Promise<{ release: RuntimeReleaseSummary; created: boolean }>;
  /** Registers every `<dir>/<version>/runtime.json` (the `--runtimes` directories). */
  registerDirectories(dirs: readonly string[]): Promise<void>;
  /** Every registered release, as the store lists them now, oldest version first. */
  releases(): Promise<RuntimeReleaseSummary[]>;
  /** One registered release; NOT_FOUND naming the known ones. */
  inspect(version: string): Promise<RuntimeReleaseSummary>;
  /**
   * Removes a registered release from the store (see
   * RuntimeReleaseStore.removeRuntimeRelease); NOT_FOUND naming the known
   * ones. The caller checks first that no artifact records it, and that it
   * is not one of this server's `--runtimes` directories (`installedFrom`),
   * in `check`: while it runs, no build can look the release up (`get` is
   * FAILED_PRECONDITION), so none can start between the check and the removal.
   */
  remove(version: string, options?: { check?: () => Promise<void> }): Promise<RuntimeReleaseSummary>;
  /** The `--runtimes` directory this server registered `version` from at start, if any. */
  installedFrom(version: string): string | undefined;
  /** Asks the store for releases registered or removed elsewhere (called every store probe interval). */
  refresh(): Promise<void>;
  /** `listener` hears of every release this process registers (not of those it learns). */
  onRegistered(listener: (release: RuntimeReleaseSummary) => void): void;
  close(): void;
}

export interface RuntimeReleasesOptions {
  store: RuntimeReleaseStore;
  log?: Logger;
  /** How often the store is asked for releases registered elsewhere; never when unset. */
  refreshIntervalMs?: number;
}

export async function createRuntimeReleases(options: RuntimeReleasesOptions): Promise<RuntimeReleases> {
  const { store, log } = options;
  /** What this process has learnt of the store's releases: summaries only, opened when built for. */
  const known = new Map<string, RuntimeReleaseSummary>();
  const descriptors = new Map<string, Promise<RuntimeDescriptor>>();
  const listeners: ((release: RuntimeReleaseSummary) => void)[] = [];
  const byVersion = (a: { version: string }, b: { version: string }) =>
    semver.compare(a.version.replace(/^v/, ""), b.version.replace(/^v/, ""));

  const learn = (release: RuntimeReleaseSummary) => {
    if (!known.has(release.version)) {
      known.set(release.version, release);
      log?.info({ runtime: release.version, digest: release.digest }, "runtime release known");
    }
  };

  /** Versions registered from --runtimes directories at start, and the directory of each. */
  const installed = new Map<string, string>();

  const forget = (version: string) => {
    known.delete(version);
    descriptors.delete(version);
  };

  async function refresh(): Promise<void> {
    const listed = await store.listRuntimeReleases();
    for (const release of listed) learn(release);
    // A release removed through another replica, or removed and registered
    // again with other content, is read afresh from the store.
    for (const [version, release] of known) {
      if (!listed.some((current) => current.version === version && current.digest === release.digest)) {
        forget(version);
      }
    }
  }
  await refresh();

  /** The stored release of `version`, from memory or the store; undefined if none. */
  async function find(version: string): Promise<RuntimeReleaseSummary | undefined> {
    const cached = known.get(version);
    if (cached) return cached;
    const stored = await store.getRuntimeRelease(version).catch((error: unknown) => {
      // A version that is no version is simply unknown here; the caller's error names the known ones.
      if (error instanceof PluginError && error.code === Code.InvalidArgument) return undefined;
      throw error;
    });
    if (stored) learn(stored);
    return stored;
  }

  async function open(release: RuntimeReleaseSummary): Promise<RuntimeDescriptor> {
    const dir = await store.openRuntimeRelease(release);
    // A store (a registry above all) is hostile until checked: what it holds
    // passes registration's checks again before a build touches a file of it.
    const checked = await checkReleaseDescriptor(dir, release.version).catch((error: unknown) => {
      const failure = PluginError.from(error);
      throw new PluginError(
        Code.FailedPrecondition,
        `runtime ${release.version} as stored (${release.digest}) cannot be built for: ${failure.message}`,
        { cause: error },
      );
    });
    return { ...checked, digest: release.digest };
  }

  function notFound(version: string): PluginError {
    const versions = [...known.values()].sort(byVersion).map((release) => release.version);
    return new PluginError(
      Code.NotFound,
      `runtime ${version} is unknown to this server; available runtimes: ${versions.length ? versions.join(", ") : "none (register one with atomix-plugins runtime add DIR, or --runtimes DIR)"}`,
    );
  }

  async function register(
    version: string,
    files: AsyncIterable<IncomingReleaseFile> | Iterable<IncomingReleaseFile>,
    registerOptions?: { signal?: AbortSignal },
  ) {
    const staged = await stageRuntimeRelease({
      version,
      files,
      stagingRoot: store.stagingDir,
      ...(registerOptions?.signal ? { signal: registerOptions.signal } : {}),
    });
    try {
      const outcome = await store.putRuntimeRelease(staged, registerOptions);
      learn(outcome.release);
      if (outcome.created) {
        log?.info(
          { runtime: version, digest: outcome.release.digest, files: outcome.release.fileCount },
          "runtime release registered",
        );
        for (const listener of listeners) listener(outcome.release);
      }
      return outcome;
    } finally {
      await rm(staged.dir, { recursive: true, force: true });
    }
  }

  const timer = options.refreshIntervalMs
    ? setInterval(() => {
        refresh().catch((error: unknown) =>
          log?.debug({ error: (error as Error).message }, "runtime releases not refreshed"),
        );
      }, options.refreshIntervalMs)
    : undefined;
  timer?.unref();

  /** Versions being removed: builds may not start for them meanwhile. */
  const removing = new Set<string>();

  return {
    get(version) {
      if (removing.has(version)) {
        return Promise.reject(
          new PluginError(Code.FailedPrecondition, `runtime ${version} is being removed (runtime rm)`),
        );
      }
      let pending = descriptors.get(version);
      if (!pending) {
        pending = (async () => {
          const release = await find(version);
          if (!release) throw notFound(version);
          return open(release);
        })();
        descriptors.set(version, pending);
        // Only a found release is kept: an unknown version may be registered any moment.
        pending.catch(() => descriptors.delete(version));
      }
      return pending;
    },
    register,
    async registerDirectories(dirs) {
      // The same checks (names, duplicates, parsing) as ever, then each is registered.
      const catalog = await loadRuntimeCatalog(dirs);
      for (const descriptor of catalog.list()) {
        const gathered = await gatherRuntimeRelease(descriptor.dir, descriptor.version);
        try {
          await register(descriptor.version, gatheredFiles(gathered));
          installed.set(descriptor.version, descriptor.dir);
        } catch (error) {
          const failure = PluginError.from(error);
          throw new PluginError(failure.code, `--runtimes ${descriptor.dir}: ${failure.message}`, {
            cause: error,
          });
        }
      }
    },
    async releases() {
      await refresh();
      return [...known.values()].sort(byVersion);
    },
    async inspect(version) {
      const release = await find(version);
      if (!release) throw notFound(version);
      return release;
    },
    async remove(version, options) {
      if (removing.has(version)) {
        throw new PluginError(Code.Aborted, `runtime ${version} is being removed by another call`);
      }
      removing.add(version);
      let removed: RuntimeReleaseSummary | undefined;
      try {
        await options?.check?.();
        removed = await store.removeRuntimeRelease(version).catch((error: unknown) => {
          if (error instanceof PluginError && error.code === Code.InvalidArgument) return undefined;
          throw error;
        });
      } finally {
        removing.delete(version);
      }
      forget(version);
      if (!removed) throw notFound(version);
      log?.info({ runtime: version, digest: removed.digest }, "runtime release removed");
      return removed;
    },
    installedFrom: (version) => installed.get(version),
    refresh,
    onRegistered(listener) {
      listeners.push(listener);
    },
    close() {
      if (timer) clearInterval(timer);
    },
  };
}
