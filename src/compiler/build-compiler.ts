import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { abandonable, Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { ANNOTATIONS } from "atomix-plugins-core/model/annotations";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, buildKeyId, formatBuildKey } from "atomix-plugins-core/model/build-key";
import type { Logger } from "pino";
import type { Attestor } from "../provenance/attestor.js";
import type { RuntimeCatalog } from "../runtime-releases/runtime-catalog.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import type { BuildRecordStore } from "../store/build-record-store.js";
import { DEFAULT_BUILD_QUEUE, DEFAULT_BUILD_TIMEOUT_MS } from "./build-defaults.js";
import { BuildOutputLog, withBuildOutput } from "./build-output.js";
import { createBuildPool, type PoolTicket } from "./build-pool.js";
import { type BuildRecordContext, rememberedFailure, writeBuildRecord } from "./build-records.js";
import type { Compiler } from "./compiler.js";
import type { Sandbox } from "./sandbox/sandbox.js";
import type { SourceStamp } from "./sources/source-stamp.js";
import type { BuildOutput, RuntimeDescriptor, Toolchain } from "./toolchain.js";

/**
 * After a build is stopped, how long its toolchain may take to return
 * before the slot is freed anyway: every step runs in a child process that
 * is killed with the build, so this only bounds a toolchain bug.
 */
const STOPPED_BUILD_GRACE_MS = 5_000;

export interface BuildCompilerOptions {
  store: ArtifactStore;
  runtimes: RuntimeCatalog;
  toolchains: readonly Toolchain[];
  /** Builds running at once; the machine's cores by default. */
  concurrency?: number;
  /** Builds waiting for a slot before RESOURCE_EXHAUSTED; 64 by default. */
  queueLimit?: number;
  /** Slots background builds (pre-warm) may take at once; `concurrency` by default. */
  backgroundSlots?: number;
  /**
   * Builds one caller may have running and waiting together (the caller
   * that started them; joining a build costs nothing); more are refused with
   * RESOURCE_EXHAUSTED, and one caller runs at most `concurrency - 1` (at
   * least 1) at once. Unlimited by default.
   */
  buildsPerCaller?: number;
  /** A build running longer is aborted and reported as DEADLINE_EXCEEDED; 120 s by default. */
  timeoutMs?: number;
  /** Largest artifact a build may store (RESOURCE_EXHAUSTED beyond). */
  maxArtifactBytes?: number;
  /** Where builds get their private work directories; os.tmpdir() by default. */
  workRoot?: string;
  log?: Logger;
  /**
   * The sandbox the toolchains run their steps in: when it is unavailable
   * every build is refused at once (FAILED_PRECONDITION naming the fix), and
   * when it is off every build logs a warning.
   */
  sandbox?: Sandbox;
  /** Signs the provenance of every artifact built; absent, artifacts are stored unsigned. */
  attestor?: Attestor | undefined;
  /** Called when a toolchain run starts: tests and benchmarks count builds with it. */
  onBuild?: (key: BuildKey) => void;
  /** Where every toolchain run leaves its record (outcome, code, message, output); none by default. */
  records?: BuildRecordStore;
  /**
   * A FAILED_PRECONDITION recorded less than this long ago, for the same
   * runtime release and source, is answered again without building. 0 or
   * unset: every call builds.
   */
  failureTtlMs?: number;
  /** Tells whether a plugin's source changed since a recorded failure. */
  sourceStamp?: SourceStamp;
}

export interface BuildStats {
  /** Toolchain runs started. */
  builds: number;
  /** Calls answered from the store without building. */
  hits: number;
  /** Calls that joined a lookup or build another call had started. */
  joined: number;
  /** Calls answered with a remembered failure, without building. */
  remembered: number;
  /** Builds refused because their caller had its share of the slots and queue already (--builds-per-caller). */
  refusedOverShare: number;
  running: number;
  queued: number;
}

export interface BuildCompiler extends Compiler {
  stats(): BuildStats;
}

/**
 * The compiler behind CompilePlugin and pull-through: store hit → answer;
 * otherwise one build per build key at a time (concurrent callers share it),
 * in a bounded pool with a bounded queue and a time limit, by the toolchain
 * the runtime's descriptor names, in a fresh work directory that is removed
 * afterwards. It knows nothing of Node.js or Go: toolchains do.
 */
export function createBuildCompiler(options: BuildCompilerOptions): BuildCompiler {
  const { store, runtimes, log } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_BUILD_TIMEOUT_MS;
  const toolchains = new Map(options.toolchains.map((toolchain) => [toolchain.name, toolchain]));
  const pool = createBuildPool({
    concurrency: options.concurrency ?? availableParallelism(),
    queueLimit: options.queueLimit ?? DEFAULT_BUILD_QUEUE,
    ...(options.backgroundSlots ? { backgroundLimit: options.backgroundSlots } : {}),
    ...(options.buildsPerCaller ? { perCaller: options.buildsPerCaller } : {}),
  });
  const flights = new Map<string, Promise<ArtifactManifest>>();
  /**
   * The pool tickets of flights: a caller joining pre-warm work promotes it,
   * and one joining another caller's build may start it within its own share.
   */
  const tickets = new Map<string, PoolTicket>();
  const running = new Set<AbortController>();
  /** Pool tasks not yet finished, cleanup included: close() waits for them. */
  const tasks = new Set<Promise<void>>();
  const counts = { builds: 0, hits: 0, joined: 0, remembered: 0 };
  const recordContext: BuildRecordContext = {
    records: options.records,
    failureTtlMs: options.failureTtlMs ?? 0,
    sourceStamp: options.sourceStamp,
    log,
  };
  let closed = false;

  /** Builds under way by runtime release, from the release's lookup until the artifact is stored. */
  const underWay = new Map<string, number>();

  function build(key: BuildKey, ticket: PoolTicket, caller?: string): Promise<ArtifactManifest> {
    const version = key.runtime.version;
    underWay.set(version, (underWay.get(version) ?? 0) + 1);
    const done = () => {
      const left = (underWay.get(version) ?? 1) - 1;
      if (left > 0) underWay.set(version, left);
      else underWay.delete(version);
    };
    const building = buildUnderWay(key, ticket, caller);
    building.then(done, done);
    return building;
  }

  async function buildUnderWay(
    key: BuildKey,
    ticket: PoolTicket,
    caller?: string,
  ): Promise<ArtifactManifest> {
    // Resolved before queueing, so that an unknown runtime or a missing
    // toolchain is answered at once instead of after a wait for a slot.
    let runtime: RuntimeDescriptor;
    try {
      runtime = await runtimes.get(key.runtime.version);
    } catch (error) {
      const failure = PluginError.from(error);
      throw new PluginError(failure.code, `cannot build ${formatBuildKey(key)}: ${failure.message}`, {
        cause: error,
      });
    }
    try {
      await options.sandbox?.ready();
    } catch (error) {
      const failure = PluginError.from(error);
      throw new PluginError(failure.code, `cannot build ${formatBuildKey(key)}: ${failure.message}`, {
        cause: error,
      });
    }
    const toolchain = toolchains.get(runtime.toolchain);
    if (!toolchain) {
      throw new PluginError(
        Code.FailedPrecondition,
        `cannot build ${formatBuildKey(key)}: runtime ${runtime.version} is built by the ${runtime.toolchain} toolchain, which this server does not have (it has: ${[...toolchains.keys()].join(", ") || "none"})`,
      );
    }
    // A build version is built and stored as the one its runtime declares:
    // asking for another patch release makes no new build or artifact.
    const buildVersion = toolchain.buildVersionFor?.(runtime, key.runtime.buildVersion);
    if (buildVersion !== undefined && buildVersion !== key.runtime.buildVersion) {
      return shared({ ...key, runtime: { ...key.runtime, buildVersion } }, ticket.background, caller);
    }
    const remembered = await rememberedFailure(recordContext, key, runtime);
    if (remembered) {
      counts.remembered++;
      throw remembered;
    }
    // Background work (pre-warm) waits in the pool's own queue, within its
    // share of the slots; a caller's build, within that caller's share.
    const slots = {
      run: <T>(task: () => Promise<T>) =>
        pool.run(task, caller === undefined ? { ticket } : { ticket, caller }),
    };
    // Callers get their answer as soon as it is known (a deadline rejects at
    // once); the pool slot and the work directory are released only when the
    // toolchain has really stopped, so the pool bounds work actually running.
    return new Promise<ArtifactManifest>((resolve, reject) => {
      let queued = false;
      const task = slots
        .run(async () => {
          // A build that finished while this one queued for a slot (or
          // another replica's) wins. One that started at once comes straight
          // from a lookup that missed: it does not ask the store again.
          const stored = queued ? await store.get(key) : undefined;
          if (stored) {
            resolve(stored);
            return;
          }
          counts.builds++;
          options.onBuild?.(key);
          if (options.sandbox?.kind === "off") {
            log?.warn({ key: formatBuildKey(key) }, "building without a sandbox (--sandbox off)");
          }
          const controller = new AbortController();
          running.add(controller);
          const timer = setTimeout(
            () =>
              controller.abort(
                new PluginError(
                  Code.DeadlineExceeded,
                  `building ${formatBuildKey(key)} took longer than ${timeoutMs} ms and was stopped; raise --build-timeout if it needs more`,
                ),
              ),
            timeoutMs,
          );
          const started = performance.now();
          const startedOn = new Date();
          const output = new BuildOutputLog();
          // Fresh: the record must name the source this build is about to copy, not an earlier check's.
          const sourceStamp =
            (await options.sourceStamp?.(key.plugin, { fresh: true }).catch(() => undefined)) ?? "";
          const record = (outcome: Parameters<typeof writeBuildRecord>[3]) =>
            writeBuildRecord(recordContext, key, runtime, {
              ...outcome,
              toolchainName: toolchain.name,
              durationMs: Math.round(performance.now() - started),
              sourceStamp,
              output: output.recorded(workDir),
            });
          let workDir: string | undefined;
          let built: Promise<BuildOutput> | undefined;
          let cleaned: Promise<void> | undefined;
          const cleanUp = () =>
            (cleaned ??= (async () => {
              clearTimeout(timer);
              await settledWithin(built, controller.signal.aborted ? STOPPED_BUILD_GRACE_MS : undefined, () =>
                log?.warn(
                  { key: formatBuildKey(key) },
                  "a stopped build did not return in time; its slot is freed",
                ),
              );
              running.delete(controller);
              if (workDir) await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
            })());

          try {
            workDir = await mkdtemp(join(options.workRoot ?? tmpdir(), "atomix-build-"));
            const aborted = new Promise<never>((_, rejectAbort) => {
              // The time limit may have passed already, while the work directory was made.
              if (controller.signal.aborted) rejectAbort(controller.signal.reason);
              controller.signal.addEventListener("abort", () => rejectAbort(controller.signal.reason), {
                once: true,
              });
            });
            aborted.catch(() => {});
            const job = { key, runtime, workDir, signal: controller.signal };
            built = withBuildOutput(output, () => toolchain.build(job));
            built.catch(() => {});
            // The time limit holds even for a toolchain slow to notice its signal.
            const result = await Promise.race([built, aborted]).catch((error: unknown) => {
              throw controller.signal.aborted ? PluginError.from(controller.signal.reason) : error;
            });
            const durationMs = Math.round(performance.now() - started);
            const manifest = await store.put(key, createReadStream(result.artifactPath), {
              mediaType: result.mediaType,
              annotations: {
                [ANNOTATIONS.toolchain]: toolchain.name,
                ...result.annotations,
                ...(runtime.digest ? { [ANNOTATIONS.runtimeDigest]: runtime.digest } : {}),
                [ANNOTATIONS.buildDurationMs]: String(durationMs),
                [ANNOTATIONS.builtAt]: new Date().toISOString(),
              },
              ...(options.maxArtifactBytes === undefined ? {} : { maxSize: options.maxArtifactBytes }),
              ...(options.attestor ? { attest: attestBuild(options.attestor, startedOn) } : {}),
            });
            log?.info(
              { key: formatBuildKey(key), digest: manifest.digest, size: manifest.size, durationMs },
              "built",
            );
            await cleanUp();
            await record({ manifest });
            resolve(manifest);
          } catch (error) {
            const failure = PluginError.from(error, `building ${formatBuildKey(key)}`);
            log?.info(
              { key: formatBuildKey(key), code: failure.code, error: failure.message },
              "build failed",
            );
            // A plugin that exists nowhere was not built: a record of it
            // would only let every caller fill the store with names.
            if (failure.code !== Code.NotFound) await record({ failure });
            reject(failure);
          } finally {
            await cleanUp();
          }
        })
        .catch(reject);
      // Set after run() returns: a task the pool started at once has read it as false already.
      queued = true;
      tasks.add(task);
      void task.finally(() => tasks.delete(task));
    });
  }

  /**
   * The store lookup is part of the shared flight: 100 identical calls for a
   * key not yet built make one lookup and one build, not 100 lookups first
   * (which delayed the build by about 50 ms, measured). A caller whose own
   * lookup just missed (`missed`) is not looked up for again.
   */
  async function lookUpOrBuild(
    key: BuildKey,
    ticket: PoolTicket,
    caller: string | undefined,
    missed: boolean,
  ): Promise<ArtifactManifest> {
    const stored = missed ? undefined : await store.get(key);
    if (stored) {
      counts.hits++;
      return stored;
    }
    return build(key, ticket, caller);
  }

  function shared(
    key: BuildKey,
    background: boolean,
    caller?: string,
    missed = false,
  ): Promise<ArtifactManifest> {
    const id = buildKeyId(key);
    const flight = flights.get(id);
    if (flight) {
      counts.joined++;
      const ticket = tickets.get(id);
      // A caller joining pre-warm work waits no longer than for its own build would.
      if (ticket?.background && !background) {
        pool.promote(ticket);
        log?.info({ key: formatBuildKey(key) }, "a caller joined a pre-warm build");
      }
      if (ticket && caller !== undefined) pool.join(ticket, caller);
      return flight;
    }
    const ticket: PoolTicket = { background };
    tickets.set(id, ticket);
    const started = lookUpOrBuild(key, ticket, caller, missed).finally(() => {
      flights.delete(id);
      tickets.delete(id);
    });
    // Callers may all have gone away; the build's outcome is still wanted
    // (it is stored), but its rejection must not be reported as unhandled.
    started.catch(() => {});
    flights.set(id, started);
    return started;
  }

  return {
    async compile(key, callOptions) {
      const signal = callOptions?.signal;
      if (closed) throw new PluginError(Code.Unavailable, "the server is shutting down");
      if (signal?.aborted) throw PluginError.from(signal.reason ?? new DOMException("aborted", "AbortError"));
      return abandonable(
        shared(key, callOptions?.background === true, callOptions?.caller, callOptions?.missed === true),
        signal,
        "the caller went away; the build goes on",
      );
    },
    async storedKey(key) {
      try {
        const runtime = await runtimes.get(key.runtime.version);
        const buildVersion = toolchains
          .get(runtime.toolchain)
          ?.buildVersionFor?.(runtime, key.runtime.buildVersion);
        return buildVersion === undefined || buildVersion === key.runtime.buildVersion
          ? key
          : { ...key, runtime: { ...key.runtime, buildVersion } };
      } catch {
        return key;
      }
    },
    building: (version) => underWay.has(version),
    stats() {
      return {
        ...counts,
        refusedOverShare: pool.refusedOverShare,
        running: pool.running,
        queued: pool.queued,
      };
    },
    async close() {
      closed = true;
      pool.close();
      for (const controller of running) {
        controller.abort(new PluginError(Code.Unavailable, "the server is shutting down"));
      }
      await Promise.allSettled([...flights.values(), ...tasks]);
    },
  };
}

/** Waits for `promise` to settle, or at most `limitMs` (then calls `onLate`). */
async function settledWithin(
  promise: Promise<unknown> | undefined,
  limitMs: number | undefined,
  onLate: () => void,
): Promise<void> {
  if (!promise) return;
  const settled = promise.then(
    () => true,
    () => true,
  );
  if (limitMs === undefined) {
    await settled;
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), limitMs);
  });
  if (!(await Promise.race([settled, late]))) onLate();
  clearTimeout(timer);
}

function attestBuild(attestor: Attestor, startedOn: Date) {
  return (manifest: ArtifactManifest) =>
    attestor.attest(manifest, { kind: "built", startedOn, finishedOn: new Date() });
}
