import { join } from "node:path";
import { inertJson } from "atomix-plugins-core/errors/visible-text";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import pino, { type Logger } from "pino";
import { createBuildCompiler } from "./compiler/build-compiler.js";
import type { Compiler } from "./compiler/compiler.js";
import { createSandbox, type Sandbox } from "./compiler/sandbox/sandbox.js";
import { createCatalogSource } from "./compiler/sources/catalog-source.js";
import { createNpmRegistrySource } from "./compiler/sources/npm-registry-source.js";
import { createSourceStamp } from "./compiler/sources/source-stamp.js";
import { createSourceUnpacker } from "./compiler/sources/source-unpacker.js";
import { createGoToolchain } from "./compiler/toolchains/go/go-toolchain.js";
import { createNodeToolchain } from "./compiler/toolchains/node/node-toolchain.js";
import { createUpstreamCompiler } from "./compiler/upstream-compiler.js";
import { type ServeConfig, storeConfigOf, upstreamConnectionOf } from "./config.js";
import { type Attestor, createAttestor } from "./provenance/attestor.js";
import { loadSigningKey } from "./provenance/signing-key.js";
import { createPrewarmer } from "./runtime-releases/prewarm.js";
import { createRuntimeReleases } from "./runtime-releases/runtime-releases.js";
import { isReplicaStore, registerCacheMetrics } from "./server/cache-metrics.js";
import { loadAdminAuth, loadServerCredentials } from "./server/credentials.js";
import { createMetrics, type ServerMetrics } from "./server/metrics.js";
import { type RunningServer, startServer } from "./server/server.js";
import type { ArtifactStore } from "./store/artifact-store.js";
import { createBuildRecordStore, createRuntimeReleaseStore } from "./store/create-runtime-release-store.js";
import { createStore } from "./store/create-store.js";
import { type RunningHttpServer, startHttpServer } from "./web/http-server.js";

/** What a caller may supply instead of what the config implies. */
export interface ServiceOptions {
  /** Default: JSON lines on stdout at `config.logLevel`. */
  log?: Logger;
  /** Default: a fresh registry, served on the HTTP port's /metrics. */
  metrics?: ServerMetrics;
  /** Told of every build the compiler starts. */
  onBuild?: (key: BuildKey) => void;
}

/** The whole server, running: the gRPC services, the HTTP side port, and what they share. */
export interface RunningService {
  /** The bound gRPC host:port (the real port when the config asked for 0). */
  readonly address: string;
  /** The bound HTTP host:port, or "off". */
  readonly http: string;
  readonly store: ArtifactStore;
  readonly compiler: Compiler;
  readonly server: RunningServer;
  readonly log: Logger;
  /**
   * Stops in order: gRPC (in-flight calls get `graceMs`, by default the
   * config's shutdown grace), the HTTP port, running builds, the store.
   */
  close(graceMs?: number): Promise<void>;
}

/** The signer of provenance, and a start-up line that says whether runtimes can verify what they pull. */
async function loadAttestor(config: ServeConfig, log: Logger): Promise<Attestor | undefined> {
  if (!config.signingKey) {
    log.warn(
      "no --signing-key: artifacts are stored without signed provenance, and runtimes that verify will refuse them",
    );
    return undefined;
  }
  const key = await loadSigningKey(config.signingKey);
  if (key.readableByOthers) {
    log.warn({ file: config.signingKey }, "the signing key file is readable by other users: chmod 600 it");
  }
  log.info({ keyId: key.keyId, algorithm: key.algorithm, builderId: config.builderId }, "signing provenance");
  if (!config.adminToken && !config.adminTokenFile) {
    log.warn("no admin token: pushed artifacts are stored without signed provenance, since anyone may push");
  }
  return createAttestor(key, config.builderId);
}

/**
 * Wires and starts the server from one config: store, sandbox, toolchains,
 * compiler, the gRPC services and the HTTP port. `serve` runs this, and so do
 * the tests, so what they check is what runs. A new option is read here from
 * the config (defined once in config.ts).
 */
export async function startService(
  config: ServeConfig,
  options: ServiceOptions = {},
): Promise<RunningService> {
  const log = options.log ?? serviceLog(config);
  // Before anything opens: a key that does not load stops the start.
  const attestor = await loadAttestor(config, log);
  const store = await createStore(storeConfigOf(config), log);
  const sources = [
    ...config.sources.map((dir) => createCatalogSource(dir)),
    ...(config.npmRegistry
      ? [
          createNpmRegistrySource({
            url: config.npmRegistry,
            tarballHosts: config.npmTarballHosts,
            packumentTtlMs: config.npmPackumentTtlMs,
            maxPackumentBytes: config.maxPackumentBytes,
          }),
        ]
      : []),
  ];
  const sandbox = await createSandbox({
    mode: config.sandbox,
    bwrap: config.bwrap,
    log,
    limits: { memoryBytes: config.buildMemoryBytes, cpuSeconds: Math.ceil(config.buildTimeoutMs / 1000) },
  });
  logSandbox(log, sandbox);
  const unpacker = createSourceUnpacker({
    sandbox,
    limits: { maxBytes: config.maxSourceBytes, maxFiles: config.maxSourceFiles },
  });
  // Runtime releases live in the store; --runtimes directories are registered there at start.
  const runtimes = await createRuntimeReleases({
    store: await createRuntimeReleaseStore(storeConfigOf(config), {
      cacheDir: join(config.dataDir, "runtime-cache"),
    }),
    log,
    ...(config.store ? { refreshIntervalMs: config.storeProbeIntervalMs } : {}),
  });
  const records = await createBuildRecordStore(storeConfigOf(config), { maxRecords: config.buildRecordsMax });
  const toolchains = [
    createNodeToolchain({ sources, sandbox, unpacker, maxOutputBytes: config.maxBuildOutputBytes }),
    createGoToolchain({
      sandbox,
      unpacker,
      maxOutputBytes: config.maxBuildOutputBytes,
      sources: config.sources,
      installations: config.goInstallations,
      proxy: config.goProxy,
      sumdb: config.goSumdb,
      cacheDir: config.goCacheDir ?? join(config.dataDir, "go-cache"),
      maxCacheBytes: config.goCacheMaxBytes,
      log,
      ...(config.goNoSumdb ? { noSumCheck: config.goNoSumdb } : {}),
    }),
  ];
  const prewarmSlots = config.prewarmSlots ?? Math.max(1, Math.floor(config.buildConcurrency / 2));
  const upstream = upstreamConnectionOf(config);
  const builder = createBuildCompiler({
    store,
    attestor,
    runtimes,
    records,
    failureTtlMs: config.failureTtlMs,
    sourceStamp: createSourceStamp(config.sources),
    backgroundSlots: prewarmSlots,
    sandbox,
    toolchains,
    concurrency: config.buildConcurrency,
    queueLimit: config.buildQueue,
    buildsPerCaller: config.buildsPerCaller,
    timeoutMs: config.buildTimeoutMs,
    maxArtifactBytes: config.maxArtifactBytes,
    log,
    ...(options.onBuild ? { onBuild: options.onBuild } : {}),
  });
  // A tier in front of another server builds nothing itself: its upstream
  // has the toolchains and the writable store.
  const compiler: Compiler = upstream ? createUpstreamCompiler({ connection: upstream, store }) : builder;
  if (upstream) {
    await builder.close();
    log.info({ upstream: upstream.address }, "builds are forwarded to the upstream server");
  } else if (store.readOnly) {
    log.warn(
      { store: store.description },
      "the store takes no writes and no --upstream was given: builds will fail",
    );
  }
  const metrics = options.metrics ?? createMetrics();
  if (isReplicaStore(store)) registerCacheMetrics(metrics.registry, store);
  metrics.observeCallerRefusals(() => builder.stats().refusedOverShare);
  const caches = [...toolchains.flatMap((toolchain) => toolchain.caches ?? []), records.cache];
  metrics.observeCaches(caches);
  // Subscribed before the --runtimes directories are registered: a new one pre-warms too.
  const prewarmer = createPrewarmer({
    runtimes,
    store,
    compiler,
    mode: config.prewarm,
    parallel: prewarmSlots,
    registry: metrics.registry,
    log,
  });
  const prewarmProgress = (version: string) => prewarmer.progress(version);
  // Releases are registered where builds run: not by a tier, nor into a store that takes no writes.
  if (!upstream && !store.readOnly) await runtimes.registerDirectories(config.runtimes);
  const auth = await loadAdminAuth(config);
  if (auth.refusal) log.warn({ listen: config.listen }, auth.refusal);
  const credentials = await loadServerCredentials(config);
  let server: RunningServer | undefined;
  let http: RunningHttpServer | undefined;
  try {
    server = await startServer({
      config,
      store,
      compiler,
      log,
      metrics,
      auth,
      credentials,
      attestor,
      runtimes,
      records,
      prewarmProgress,
      caches,
    });
    const grpc = server;
    http =
      config.httpListen === "off"
        ? undefined
        : await startHttpServer({
            listen: config.httpListen,
            store,
            metrics,
            log,
            grpcAddress: grpc.address,
            isServing: () => grpc.isServing(),
            isDegraded: () => grpc.isDegraded(),
            runtimes,
            records,
            prewarmProgress,
          });
  } catch (error) {
    // A port in use, say: what started is stopped, so a caller that goes on (a test) leaks nothing.
    await server?.shutdown(0);
    prewarmer.close();
    await compiler.close();
    runtimes.close();
    await store.close();
    throw error;
  }
  log.info(
    {
      address: server.address,
      http: http?.address ?? "off",
      store: store.description,
      pullPolicy: config.pullPolicy,
      tls: config.tlsCert ? (config.tlsClientCa ? "mutual" : "server") : "off",
      adminToken: auth.required,
    },
    "serving",
  );
  const running = server;
  let closing: Promise<void> | undefined;
  return {
    address: server.address,
    http: http?.address ?? "off",
    store,
    compiler,
    server,
    log,
    close(graceMs = config.shutdownGraceMs) {
      closing ??= (async () => {
        await running.shutdown(graceMs);
        await http?.close();
        prewarmer.close();
        await compiler.close();
        runtimes.close();
        await store.close();
      })();
      return closing;
    },
  };
}

/** The server's log: JSON lines on stdout at the config's level. */
export function serviceLog(config: Pick<ServeConfig, "logLevel">): Logger {
  // pino's own destination, as it makes one by default. Log lines quote builds' messages: what a
  // terminal showing them would act on and JSON leaves raw (C1, bidi) is written as \u escapes.
  const out = pino.destination({ fd: process.stdout.fd || 1 });
  const stream = {
    write: (line: string) => out.write(inertJson(line)),
    flush: (done: (error?: Error) => void) => out.flush(done),
  };
  return pino({ level: config.logLevel, base: { service: "atomix-plugins" } }, stream);
}

/** Says at start what contains the builds; a missing or disabled sandbox is a warning an operator must see. */
function logSandbox(log: Logger, sandbox: Sandbox): void {
  if (sandbox.kind === "bwrap") log.info({ sandbox: sandbox.kind }, `build sandbox: ${sandbox.description}`);
  else if (sandbox.kind === "off")
    log.warn({ sandbox: sandbox.kind }, `build sandbox ${sandbox.description}`);
  else log.error({ sandbox: sandbox.kind }, `builds will be refused: ${sandbox.description}`);
}
