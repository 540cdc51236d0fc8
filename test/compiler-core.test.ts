import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { type BuildCompilerOptions, createBuildCompiler } from "../src/compiler/build-compiler.js";
import type { BuildJob, Toolchain } from "../src/compiler/toolchain.js";
import { parseServeConfig } from "../src/config.js";
import { loadRuntimeCatalog, type RuntimeCatalog } from "../src/runtime-releases/runtime-catalog.js";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { createFsStore } from "../src/store/fs-store.js";
import { failure } from "./helpers/failure.js";

/**
 * The compiler core with a small real toolchain ("text"): it writes the key
 * as the artifact. Builds start only when a test lets them, so that
 * concurrency is controlled by the test, not by timing.
 */
function textToolchain(options: { gate?: Promise<void>; started?: (job: BuildJob) => void } = {}): Toolchain {
  return {
    name: "text",
    async build(job) {
      options.started?.(job);
      await options.gate;
      const artifactPath = join(job.workDir, "artifact.txt");
      await writeFile(artifactPath, `${job.key.plugin.name}@${job.key.plugin.version}`);
      return { artifactPath, mediaType: "text/plain", annotations: { "dev.atomix.source": "test" } };
    },
  };
}

function key(name: string, runtime = "1.0.0"): BuildKey {
  return { runtime: { version: runtime, buildVersion: "text1" }, plugin: { name, version: "1.0.0" } };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("build compiler", () => {
  let root: string;
  let runtimes: RuntimeCatalog;
  let store: ArtifactStore;
  let workRoot: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "atomix-compiler-core-"));
    for (const [version, toolchain] of [
      ["1.0.0", "text"],
      ["3.0.0", "go"],
    ] as const) {
      await mkdir(join(root, "runtimes", version), { recursive: true });
      await writeFile(join(root, "runtimes", version, "runtime.json"), JSON.stringify({ toolchain }));
    }
    runtimes = await loadRuntimeCatalog([join(root, "runtimes")]);
    store = await createFsStore({ dir: join(root, "store") });
    workRoot = join(root, "work");
    await mkdir(workRoot);
  });

  after(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  const compilerWith = (toolchain: Toolchain, options: Partial<BuildCompilerOptions> = {}) =>
    createBuildCompiler({ store, runtimes, toolchains: [toolchain], workRoot, ...options });

  it("builds on a miss, records the toolchain and duration, and answers later calls from the store", async () => {
    const compiler = compilerWith(textToolchain());
    const built = await compiler.compile(key("stored"));
    assert.equal(built.annotations["dev.atomix.toolchain"], "text");
    assert.match(built.annotations["dev.atomix.build.duration-ms"] ?? "", /^\d+$/);
    assert.equal(built.annotations["dev.atomix.source"], "test");
    const again = await compiler.compile(key("stored"));
    assert.equal(again.digest, built.digest);
    assert.deepEqual(
      { builds: compiler.stats().builds, hits: compiler.stats().hits },
      { builds: 1, hits: 1 },
    );
    assert.deepEqual(await readdir(workRoot), [], "work directories are removed");
    await compiler.close();
  });

  it("runs one build for concurrent calls on one key and gives all of them its answer", async () => {
    const gate = deferred();
    const compiler = compilerWith(textToolchain({ gate: gate.promise }));
    const calls = Array.from({ length: 20 }, () => compiler.compile(key("shared")));
    gate.resolve();
    const manifests = await Promise.all(calls);
    assert.equal(new Set(manifests.map((m) => m.digest)).size, 1);
    assert.equal(compiler.stats().builds, 1);
    assert.equal(compiler.stats().joined, 19);
    await compiler.close();
  });

  it("lets a caller that goes away stop waiting without cancelling the build others wait for", async () => {
    const gate = deferred();
    let signal: AbortSignal | undefined;
    const compiler = compilerWith(
      textToolchain({ gate: gate.promise, started: (job) => (signal = job.signal) }),
    );
    const leaving = new AbortController();
    const first = compiler.compile(key("abandoned"), { signal: leaving.signal });
    const second = compiler.compile(key("abandoned"));
    leaving.abort();
    const error = await failure(first);
    assert.equal(error.code, Code.Cancelled);
    gate.resolve();
    const manifest = await second;
    assert.equal(manifest.key.plugin.name, "abandoned");
    assert.equal(signal?.aborted, false, "the build was not aborted");
    assert.equal(compiler.stats().builds, 1);
    await compiler.close();
  });

  it("refuses a build at once with RESOURCE_EXHAUSTED when the pool and the queue are full", async () => {
    const gate = deferred();
    const compiler = compilerWith(textToolchain({ gate: gate.promise }), { concurrency: 1, queueLimit: 1 });
    const running = compiler.compile(key("busy-1"));
    const queued = compiler.compile(key("busy-2"));
    // Let the first call reach the pool and the second its queue.
    while (compiler.stats().queued < 1) await new Promise((r) => setImmediate(r));
    const error = await failure(compiler.compile(key("busy-3")));
    assert.equal(error.code, Code.ResourceExhausted);
    assert.match(error.message, /build queue is full \(1 build running, 1 waiting\)/);
    gate.resolve();
    await Promise.all([running, queued]);
    assert.equal(compiler.stats().builds, 2);
    await compiler.close();
  });

  it("kills a build that passes the time limit and reports DEADLINE_EXCEEDED", async () => {
    let pid: number | undefined;
    const sleeper: Toolchain = {
      name: "text",
      async build(job) {
        // A toolchain's child process, killed through the job's signal.
        const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], {
          signal: job.signal,
          killSignal: "SIGKILL",
          stdio: "ignore",
        });
        child.on("error", () => {});
        pid = child.pid;
        await new Promise((resolve) => child.on("close", resolve));
        throw job.signal.reason;
      },
    };
    const compiler = compilerWith(sleeper, { timeoutMs: 300 });
    const error = await failure(compiler.compile(key("slow")));
    assert.equal(error.code, Code.DeadlineExceeded);
    assert.match(error.message, /took longer than 300 ms and was stopped/);
    assert.ok(pid && pid > 0, "the child was running");
    // The caller hears at once; the slot is freed once the toolchain has stopped.
    while (compiler.stats().running > 0) await new Promise((r) => setTimeout(r, 10));
    assert.throws(() => process.kill(pid as number, 0), "the child process is gone");
    assert.deepEqual(await readdir(workRoot), []);
    await compiler.close();
  });

  it("a caller asking for a key that pre-warm has queued joins that build, which starts ahead of the rest of pre-warm", async () => {
    const gates = new Map([
      ["warm-a", deferred()],
      ["warm-b", deferred()],
    ]);
    const started: string[] = [];
    const gated: Toolchain = {
      name: "text",
      async build(job) {
        started.push(job.key.plugin.name);
        await gates.get(job.key.plugin.name)?.promise;
        return textToolchain().build(job);
      },
    };
    const compiler = compilerWith(gated, { concurrency: 2, backgroundSlots: 1 });
    const a = compiler.compile(key("warm-a"), { background: true });
    const b = compiler.compile(key("warm-b"), { background: true });
    // Pre-warm's one slot runs one of them (whichever got ready first); the
    // other waits although a slot is free.
    while (started.length < 1 || compiler.stats().queued < 1) await new Promise((r) => setTimeout(r, 5));
    const [running] = started as [string];
    const waiting = running === "warm-a" ? "warm-b" : "warm-a";
    assert.deepEqual(started, [running]);
    gates.get(waiting)?.resolve();
    const caller = await compiler.compile(key(waiting));
    assert.equal(caller.key.plugin.name, waiting);
    // The running one still waits on its gate: the caller's build did not wait behind it.
    assert.deepEqual(started, [running, waiting]);
    assert.deepEqual(
      { builds: compiler.stats().builds, joined: compiler.stats().joined },
      { builds: 2, joined: 1 },
    );
    gates.get(running)?.resolve();
    await Promise.all([a, b]);
    await compiler.close();
  });

  it("reports DEADLINE_EXCEEDED even when a toolchain ignores its signal", async () => {
    const stuck = deferred();
    const compiler = compilerWith(textToolchain({ gate: stuck.promise }), { timeoutMs: 50 });
    const error = await failure(compiler.compile(key("stuck")));
    assert.equal(error.code, Code.DeadlineExceeded);
    stuck.resolve();
    await compiler.close();
  });

  it("does not remember failures: the next call builds again", async () => {
    let attempts = 0;
    const flaky: Toolchain = {
      name: "text",
      async build(job) {
        attempts++;
        if (attempts === 1) throw new PluginError(Code.FailedPrecondition, "first attempt fails");
        return textToolchain().build(job);
      },
    };
    const compiler = compilerWith(flaky);
    assert.equal((await failure(compiler.compile(key("flaky")))).code, Code.FailedPrecondition);
    assert.equal((await compiler.compile(key("flaky"))).key.plugin.name, "flaky");
    assert.equal(attempts, 2);
    await compiler.close();
  });

  it("answers NOT_FOUND with the available versions for an unknown runtime", async () => {
    const compiler = compilerWith(textToolchain());
    const error = await failure(compiler.compile(key("any", "9.9.9")));
    assert.equal(error.code, Code.NotFound);
    assert.equal(
      error.message,
      "cannot build any@1.0.0 for runtime 9.9.9/text1: runtime 9.9.9 is unknown to this server; available runtimes: 1.0.0, 3.0.0",
    );
    assert.equal(compiler.stats().builds, 0);
    await compiler.close();
  });

  it("answers FAILED_PRECONDITION for a runtime whose toolchain this server lacks", async () => {
    const compiler = compilerWith(textToolchain());
    const error = await failure(compiler.compile(key("any", "3.0.0")));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(
      error.message,
      /runtime 3\.0\.0 is built by the go toolchain, which this server does not have \(it has: text\)/,
    );
    await compiler.close();
  });

  it("close() returns only once every running build has stopped and its work directory is gone", async () => {
    const gate = deferred();
    let started: (() => void) | undefined;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const compiler = compilerWith(textToolchain({ gate: gate.promise, started: () => started?.() }));
    const call = compiler.compile(key("closing"));
    call.catch(() => {});
    await running;
    assert.equal((await readdir(workRoot)).length, 1, "the build has its work directory");
    const closed = compiler.close();
    // The toolchain ignores its signal for a while, as a slow step would.
    setTimeout(gate.resolve, 200);
    await closed;
    assert.deepEqual(await readdir(workRoot), [], "nothing of the build is left when close() returns");
    const error = await failure(call);
    assert.equal(error.code, Code.Unavailable);
  });

  it("refuses new builds with UNAVAILABLE once closed", async () => {
    const compiler = compilerWith(textToolchain());
    await compiler.close();
    assert.equal((await failure(compiler.compile(key("late")))).code, Code.Unavailable);
  });

  it("refuses a runtime described in two directories", async () => {
    const other = join(root, "runtimes-copy", "1.0.0");
    await mkdir(other, { recursive: true });
    await writeFile(join(other, "runtime.json"), JSON.stringify({ toolchain: "text" }));
    const error = await failure(loadRuntimeCatalog([join(root, "runtimes"), join(root, "runtimes-copy")]));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /runtime 1\.0\.0 is described twice/);
  });
});

describe("build configuration", () => {
  it("reads directory lists and build limits from flags and environment", () => {
    const config = parseServeConfig(
      { runtimes: ["/a", "/b"], buildQueue: "0" },
      {
        ATOMIX_PLUGINS_SOURCES: "/s1:/s2",
        ATOMIX_PLUGINS_BUILD_CONCURRENCY: "3",
        ATOMIX_PLUGINS_BUILD_TIMEOUT_MS: "5000",
        ATOMIX_PLUGINS_NPM_REGISTRY: "http://127.0.0.1:4873/",
      },
    );
    assert.deepEqual(config.runtimes, ["/a", "/b"]);
    assert.deepEqual(config.sources, ["/s1", "/s2"]);
    assert.equal(config.buildConcurrency, 3);
    assert.equal(config.buildQueue, 0);
    assert.equal(config.buildTimeoutMs, 5000);
    assert.equal(config.npmRegistry, "http://127.0.0.1:4873/");
  });

  it("defaults to the bundled examples and no npm registry", () => {
    const config = parseServeConfig({}, {});
    assert.match(config.runtimes[0] ?? "", /examples\/runtimes$/);
    assert.match(config.sources[0] ?? "", /examples\/plugins$/);
    assert.equal(config.npmRegistry, undefined);
  });

  it("names the option in a bad value", () => {
    assert.throws(() => parseServeConfig({ npmRegistry: "ftp://x" }, {}), /npmRegistry: /);
    assert.throws(() => parseServeConfig({ buildConcurrency: "0" }, {}), /buildConcurrency: /);
    assert.throws(() => parseServeConfig({ buildsPerCaller: "0" }, {}), /buildsPerCaller: /);
    assert.throws(
      () => parseServeConfig({ trustedProxies: ["10.0.0.0/40"] }, {}),
      /trustedProxies\.0: "10\.0\.0\.0\/40" is not an IP address or CIDR block/,
    );
  });

  it("reads trusted proxies from the environment, comma-separated, and defaults builds per caller to 8", () => {
    const config = parseServeConfig({}, { ATOMIX_PLUGINS_TRUSTED_PROXIES: "10.0.0.0/8, fd00::/8" });
    assert.deepEqual(config.trustedProxies, ["10.0.0.0/8", "fd00::/8"]);
    assert.equal(config.buildsPerCaller, 8);
  });
});
