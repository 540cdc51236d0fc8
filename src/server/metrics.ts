import { type Code, codeName } from "atomix-plugins-core/errors/plugin-error";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { DiskCache } from "../compiler/disk-cache.js";

/** The server's Prometheus metrics, served at /metrics on the HTTP port. */
export interface ServerMetrics {
  readonly registry: Registry;
  pullStarted(): void;
  pullFinished(outcome: { code: Code; bytes: number; seconds: number }): void;
  compileFinished(outcome: { code: Code; seconds: number }): void;
  /** Reports, at each scrape, what the pull streams' shared chunks hold (src/server/shared-chunks.ts). */
  observePullMemory(read: () => { chunkBytes: number; openBlobs: number }): void;
  /** Reports, at each scrape, how many builds were refused because their caller had its share already. */
  observeCallerRefusals(read: () => number): void;
  /** Reports, at each scrape, what each cache kept on disk between builds holds, and its bound. */
  observeCaches(caches: readonly DiskCache[]): void;
}

export function createMetrics(): ServerMetrics {
  const registry = new Registry();
  // prom-client's names already start with process_ or nodejs_:
  // atomix_plugins_process_cpu_seconds_total, atomix_plugins_nodejs_heap_size_used_bytes.
  collectDefaultMetrics({ register: registry, prefix: "atomix_plugins_" });
  const pullsInFlight = new Gauge({
    name: "atomix_plugins_pulls_in_flight",
    help: "PullPlugin streams being served now",
    registers: [registry],
  });
  const pulls = new Counter({
    name: "atomix_plugins_pulls_total",
    help: "PullPlugin calls by gRPC status code",
    labelNames: ["code"],
    registers: [registry],
  });
  const pulledBytes = new Counter({
    name: "atomix_plugins_pulled_bytes_total",
    help: "Artifact bytes handed to PullPlugin streams",
    registers: [registry],
  });
  const pullSeconds = new Histogram({
    name: "atomix_plugins_pull_duration_seconds",
    help: "PullPlugin call duration",
    buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 60],
    registers: [registry],
  });
  const compiles = new Counter({
    name: "atomix_plugins_compiles_total",
    help: "CompilePlugin calls by gRPC status code",
    labelNames: ["code"],
    registers: [registry],
  });
  const compileSeconds = new Histogram({
    name: "atomix_plugins_compile_duration_seconds",
    help: "CompilePlugin call duration (store hits and builds)",
    buckets: [0.0005, 0.001, 0.005, 0.05, 0.5, 2, 10, 60, 300],
    registers: [registry],
  });
  let pullMemory: () => { chunkBytes: number; openBlobs: number } = () => ({ chunkBytes: 0, openBlobs: 0 });
  new Gauge({
    name: "atomix_plugins_pull_chunk_bytes",
    help: "Bytes of artifact chunks pull streams hold now, a chunk shared by many streams counted once",
    registers: [registry],
    collect() {
      this.set(pullMemory().chunkBytes);
    },
  });
  new Gauge({
    name: "atomix_plugins_pull_open_blobs",
    help: "Artifacts open for pull streams now, one for all the streams pulling it",
    registers: [registry],
    collect() {
      this.set(pullMemory().openBlobs);
    },
  });
  let callerRefusals: () => number = () => 0;
  new Counter({
    name: "atomix_plugins_builds_refused_per_caller_total",
    help: "Builds refused with RESOURCE_EXHAUSTED because their caller had --builds-per-caller builds running or waiting",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(callerRefusals());
    },
  });
  let caches: readonly DiskCache[] = [];
  new Gauge({
    name: "atomix_plugins_build_cache_bytes",
    help: "Bytes a cache kept on disk between builds holds now (go-build, go-modules, build-records)",
    labelNames: ["cache"],
    registers: [registry],
    collect() {
      for (const cache of caches) this.set({ cache: cache.name }, cache.usage().bytes);
    },
  });
  new Gauge({
    name: "atomix_plugins_build_cache_entries",
    help: "Entries a cache kept on disk between builds holds now: modules' build caches, build records",
    labelNames: ["cache"],
    registers: [registry],
    collect() {
      for (const cache of caches) this.set({ cache: cache.name }, cache.usage().entries);
    },
  });
  new Gauge({
    name: "atomix_plugins_build_cache_max_bytes",
    help: "The bound in bytes of a cache kept on disk between builds (absent: bounded by entries)",
    labelNames: ["cache"],
    registers: [registry],
    collect() {
      for (const cache of caches) {
        const { maxBytes } = cache.usage();
        if (maxBytes > 0) this.set({ cache: cache.name }, maxBytes);
      }
    },
  });
  const pullsBy = byCode(pulls);
  const compilesBy = byCode(compiles);
  return {
    registry,
    pullStarted: () => pullsInFlight.inc(),
    pullFinished({ code, bytes, seconds }) {
      pullsInFlight.dec();
      pullsBy(code).inc();
      pulledBytes.inc(bytes);
      pullSeconds.observe(seconds);
    },
    compileFinished({ code, seconds }) {
      compilesBy(code).inc();
      compileSeconds.observe(seconds);
    },
    observePullMemory(read) {
      pullMemory = read;
    },
    observeCallerRefusals(read) {
      callerRefusals = read;
    },
    observeCaches(observed) {
      caches = observed;
    },
  };
}

/**
 * The counter's child for each code, made once: prom-client hashes the labels
 * on every `inc({ code })`, a measurable share of a cache-hit CompilePlugin.
 */
function byCode(counter: Counter<"code">): (code: Code) => { inc(): void } {
  const children = new Map<Code, { inc(): void }>();
  return (code) => {
    let child = children.get(code);
    if (!child) {
      child = counter.labels({ code: codeName(code) });
      children.set(code, child);
    }
    return child;
  };
}
