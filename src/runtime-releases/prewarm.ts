import { codeName, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { PrewarmFailure, PrewarmProgress } from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { type BuildKey, formatBuildKey, parseBuildKey } from "atomix-plugins-core/model/build-key";
import type { RuntimeReleaseSummary } from "atomix-plugins-core/model/runtime-release";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import semver from "semver";
import type { Compiler } from "../compiler/compiler.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import type { RuntimeReleases } from "./runtime-releases.js";

/** Failures kept per release for listings; the count goes on. */
const MAX_LISTED_FAILURES = 100;

export interface PrewarmOptions {
  runtimes: RuntimeReleases;
  store: ArtifactStore;
  compiler: Compiler;
  /** `previous`: build the previous release's plugins; `off`: nothing. */
  mode: "previous" | "off";
  /** Pre-warm builds asked for at once (the compiler's pool bounds the slots they take). */
  parallel: number;
  /** Where `atomix_plugins_prewarm_builds_total{outcome}` is registered. */
  registry?: Registry;
  log?: Logger;
}

export interface Prewarmer {
  /** What pre-warm did for release `version` in this process, or undefined. */
  progress(version: string): PrewarmProgress | undefined;
  /** Resolves when every pre-warm started so far has finished (tests, shutdown). */
  idle(): Promise<void>;
  close(): void;
}

/**
 * Builds, when a runtime release is registered, every plugin `name@version`
 * stored for the previous release of the same toolchain, for each build
 * version of the new one, so that the runtimes of a rollout find their
 * plugins built. The builds go through the compiler as background work:
 * they take at most their share of the build slots, start only when no
 * caller waits, and a caller asking for one of them joins it.
 */
export function createPrewarmer(options: PrewarmOptions): Prewarmer {
  const { runtimes, store, compiler, log } = options;
  const progress = new Map<string, PrewarmProgress>();
  const running = new Set<Promise<void>>();
  let closed = false;
  const builds = new Counter({
    name: "atomix_plugins_prewarm_builds_total",
    help: "Pre-warm builds of registered runtime releases by outcome: built, skipped (already stored), failed",
    labelNames: ["outcome"],
    registers: options.registry ? [options.registry] : [],
  });

  async function plan(release: RuntimeReleaseSummary): Promise<{ previous?: string; keys: BuildKey[] }> {
    const bare = (version: string) => version.replace(/^v/, "");
    const previous = (await runtimes.releases())
      .filter(
        (other) =>
          other.toolchain === release.toolchain && semver.lt(bare(other.version), bare(release.version)),
      )
      .sort((a, b) => semver.compare(bare(b.version), bare(a.version)))[0];
    if (!previous) return { keys: [] };
    const plugins = new Map<string, { name: string; version: string }>();
    for (const manifest of await store.list({ runtimeVersion: previous.version })) {
      plugins.set(`${manifest.key.plugin.name}@${manifest.key.plugin.version}`, manifest.key.plugin);
    }
    const keys: BuildKey[] = [];
    for (const buildVersion of release.buildVersions) {
      for (const plugin of plugins.values()) {
        keys.push(parseBuildKey({ runtime: { version: release.version, buildVersion }, plugin }));
      }
    }
    return { previous: previous.version, keys };
  }

  async function prewarm(release: RuntimeReleaseSummary): Promise<void> {
    const state = startingProgress("running");
    progress.set(release.version, state);
    const { previous, keys } = await plan(release);
    if (!previous) {
      // The first release of its toolchain: nothing was built before it.
      state.state = "none";
      return;
    }
    state.previousVersion = previous;
    state.planned = keys.length;
    log?.info({ runtime: release.version, previous, builds: keys.length }, "pre-warm started");
    let next = 0;
    const worker = async () => {
      while (next < keys.length && !closed) {
        const key = keys[next++] as BuildKey;
        try {
          if (await store.get(key)) {
            state.skipped++;
            builds.inc({ outcome: "skipped" });
            continue;
          }
          await compiler.compile(key, { background: true });
          state.built++;
          builds.inc({ outcome: "built" });
        } catch (error) {
          const failure = PluginError.from(error);
          state.failed++;
          builds.inc({ outcome: "failed" });
          if (state.failures.length < MAX_LISTED_FAILURES) {
            const listed: PrewarmFailure = {
              plugin: { ...key.plugin },
              buildVersion: key.runtime.buildVersion,
              code: codeName(failure.code),
              message: failure.message,
            };
            state.failures.push(listed);
          }
          log?.info({ key: formatBuildKey(key), code: codeName(failure.code) }, "pre-warm build failed");
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, options.parallel) }, worker));
    state.state = "done";
    log?.info(
      { runtime: release.version, built: state.built, skipped: state.skipped, failed: state.failed },
      "pre-warm done",
    );
  }

  runtimes.onRegistered((release) => {
    if (options.mode === "off") {
      progress.set(release.version, startingProgress("off"));
      return;
    }
    const run = prewarm(release).catch((error: unknown) => {
      const state = progress.get(release.version);
      if (state) state.state = "done";
      log?.warn({ runtime: release.version, error: PluginError.from(error).message }, "pre-warm stopped");
    });
    running.add(run);
    void run.finally(() => running.delete(run));
  });

  return {
    progress: (version) => progress.get(version),
    async idle() {
      await Promise.allSettled([...running]);
    },
    close() {
      closed = true;
    },
  };
}

/** A release's pre-warm progress before any build: nothing planned yet. */
function startingProgress(state: PrewarmProgress["state"]): PrewarmProgress {
  return { state, previousVersion: "", planned: 0, built: 0, failed: 0, skipped: 0, failures: [] };
}
