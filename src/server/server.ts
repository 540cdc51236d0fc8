import { Server, ServerCredentials } from "@grpc/grpc-js";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { PluginCompilerDefinition } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import { type ServeConfig, splitHostPort } from "../config.js";
import type { Attestor } from "../provenance/attestor.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import { type AdminAuth, createAdminAuth } from "./admin-auth.js";
import { type AdminDeps, createAdminService, pluginAdminDefinition } from "./admin-service.js";
import { CallTracker } from "./call-tracker.js";
import { trustedProxyList } from "./caller-identity.js";
import { createCompilerService } from "./compiler-service.js";
import { guardConnections } from "./connection-guard.js";
import { grpcService } from "./grpc-service.js";
import { addHealthService, HEALTH_SERVICE_NAME, HEALTH_WATCH_PATH } from "./health-service.js";
import { listenError } from "./listen-error.js";
import { createMetrics, type ServerMetrics } from "./metrics.js";
import { addReflectionService, REFLECTION_SERVICE_NAMES } from "./reflection-service.js";
import { createRegistryService, pluginRegistryDefinition } from "./registry-service.js";
import {
  createRuntimeAdminService,
  type RuntimeAdminDeps,
  registerRuntimeDefinition,
} from "./runtime-admin-service.js";

export const SERVICE_NAMES = [
  "atomix.runtime.v1.PluginRegistry",
  "atomix.runtime.v1.PluginCompiler",
  "atomix.plugins.admin.v1.PluginAdmin",
] as const;

/** The services that cannot work without the store: NOT_SERVING while it is unreachable. */
const NEEDS_STORE = ["atomix.runtime.v1.PluginCompiler", "atomix.plugins.admin.v1.PluginAdmin"];

export interface ServerDeps {
  config: ServeConfig;
  store: ArtifactStore;
  compiler: Compiler;
  log: Logger;
  /** Default: a fresh registry, not exposed anywhere. */
  metrics?: ServerMetrics;
  /** Default: no admin token required. */
  auth?: AdminAuth;
  /** TLS or plaintext (the default); see loadServerCredentials. */
  credentials?: ServerCredentials;
  /** Signs the provenance of pushed artifacts (the compiler has its own for builds). */
  attestor?: Attestor | undefined;
  /** Runtime releases behind the admin API's runtime calls; UNIMPLEMENTED without. */
  runtimes?: RuntimeAdminDeps["runtimes"];
  prewarmProgress?: RuntimeAdminDeps["prewarmProgress"];
  /** Build records behind GetBuildLog; UNIMPLEMENTED without. */
  records?: RuntimeAdminDeps["records"];
  /** What the server keeps on disk between builds, reclaimed and reported by `gc`. */
  caches?: AdminDeps["caches"];
}

export interface RunningServer {
  /** The bound host:port (the real port when the config asked for 0). */
  readonly address: string;
  readonly port: number;
  /**
   * Stops accepting calls, reports NOT_SERVING, ends health watches, lets
   * in-flight calls finish for `graceMs`, then ends what is left with
   * UNAVAILABLE (dropping the connections of clients that stopped reading).
   */
  shutdown(graceMs: number): Promise<void>;
  /**
   * False once shutdown began, or while the store cannot be reached (a
   * replica with a content cache goes on serving the keys it holds).
   */
  isServing(): boolean;
  /** True while the store cannot be reached: builds and pushes fail, held keys are served. */
  isDegraded(): boolean;
}

/** Starts the gRPC server with every service, health and reflection. */
export async function startServer(deps: ServerDeps): Promise<RunningServer> {
  const { config } = deps;
  const metrics = deps.metrics ?? createMetrics();
  const auth = deps.auth ?? createAdminAuth(undefined, config);
  const calls = new CallTracker();
  const server = new Server({
    // Chunks are at most 4 MiB; pushes stream in messages of the same size.
    "grpc.max_receive_message_length": 8 * 1024 * 1024,
    "grpc.max_send_message_length": 8 * 1024 * 1024,
    // Clients of a sidecar fleet hold connections for a long time, and may
    // ping them meanwhile (connection-guard.ts limits how often).
    "grpc.keepalive_permit_without_calls": 1,
    // A connection with no call for this long gets GOAWAY and is closed.
    "grpc.max_connection_idle_ms": config.idleTimeoutMs,
    // The server pings too: a peer that vanished without a FIN (a node lost,
    // a NAT entry dropped) frees its connection and its calls in minutes.
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    // grpc-js binds with SO_REUSEPORT by default: a second server on a port
    // in use would start and silently take half its connections.
    "grpc.so_reuseport": 0,
    interceptors: [calls.interceptor],
  });
  const connections = guardConnections(server, {
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    log: deps.log,
  });
  const trustedProxies =
    config.trustedProxies.length > 0 ? trustedProxyList(config.trustedProxies) : undefined;
  server.addService(pluginRegistryDefinition, createRegistryService({ ...deps, metrics, trustedProxies }));
  server.addService(
    grpcService(PluginCompilerDefinition),
    createCompilerService({ ...deps, metrics, trustedProxies }),
  );
  server.addService(
    { ...pluginAdminDefinition, registerRuntime: registerRuntimeDefinition },
    { ...createAdminService({ ...deps, auth }), ...createRuntimeAdminService({ ...deps, auth }) },
  );

  const health = addHealthService(server, SERVICE_NAMES, deps.log);

  addReflectionService(
    server,
    [...SERVICE_NAMES, HEALTH_SERVICE_NAME, ...REFLECTION_SERVICE_NAMES],
    deps.log,
  );

  const { host, port } = splitHostPort(config.listen);
  const hostPart = host.includes(":") ? `[${host}]` : host;
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      `${hostPart}:${port}`,
      deps.credentials ?? ServerCredentials.createInsecure(),
      (error, p) => (error ? reject(listenError(`${hostPart}:${port}`, "gRPC", error)) : resolve(p)),
    );
  });
  const address = `${hostPart}:${bound}`;

  let stopping: Promise<void> | undefined;
  const servesHeld = deps.store.servesWhileUnreachable === true;
  const store = watchStoreReachable(deps, (reachable) => {
    if (stopping !== undefined) return;
    if (reachable) health.setStatus("SERVING");
    // A replica with a content cache still serves the keys it holds: only
    // what needs the registry (builds, pushes, admin calls) is NOT_SERVING.
    else if (servesHeld) health.setStatus("NOT_SERVING", NEEDS_STORE);
    else health.setStatus("NOT_SERVING");
  });
  return {
    address,
    port: bound,
    isServing: () => stopping === undefined && (servesHeld || store.reachable()),
    isDegraded: () => stopping === undefined && !store.reachable(),
    shutdown(graceMs) {
      stopping ??= (async () => {
        store.stop();
        health.setStatus("NOT_SERVING");
        // A watcher has just been told NOT_SERVING; left open, its stream
        // would hold its connection, and the process, for the whole grace.
        calls.endCalls(
          new PluginError(Code.Unavailable, "the server is shutting down"),
          (path) => path === HEALTH_WATCH_PATH,
        );
        const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
        if (await settlesWithin(drained, graceMs)) return;
        const ended = calls.endCalls(
          new PluginError(Code.Unavailable, "the server is shutting down; retry on another replica"),
        );
        deps.log.warn(
          { graceMs, calls: ended },
          "grace period over: ending the calls still running with UNAVAILABLE",
        );
        // A call whose client stopped reading cannot take its trailers (they
        // queue behind its data): its connection is dropped, which gRPC
        // clients report as UNAVAILABLE too, where grpc-js's stream resets
        // read as CANCELLED.
        if (!(await settlesWithin(drained, TRAILERS_FLUSH_MS))) connections.dropAll();
        server.forceShutdown();
      })();
      return stopping;
    },
  };
}

/** How long calls ended by shutdown get to send their status before their connections are dropped. */
const TRAILERS_FLUSH_MS = 200;
/** The server pings a connection this long after the last frame it received on it... */
const KEEPALIVE_TIME_MS = 120_000;
/** ...and closes it if the answer takes longer than this. */
const KEEPALIVE_TIMEOUT_MS = 20_000;

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A probe slower than this counts as a failure: a registry that slow fails calls too. */
const STORE_PROBE_TIMEOUT_MS = 3_000;

/**
 * Probes a store behind a network (an OCI registry) every few seconds and
 * reports each change, so that health checks answer NOT_SERVING while every
 * call would fail with UNAVAILABLE, and a load balancer or an orchestrator
 * can tell. A store on local disk is always reachable.
 */
function watchStoreReachable(
  deps: Pick<ServerDeps, "store" | "log" | "config">,
  onChange: (reachable: boolean) => void,
): { reachable(): boolean; stop(): void } {
  const check = deps.store.checkReachable?.bind(deps.store);
  if (!check) return { reachable: () => true, stop() {} };
  let reachable = true;
  let probing = false;
  const probe = async () => {
    if (probing) return;
    probing = true;
    let failure: unknown;
    try {
      await check(AbortSignal.timeout(STORE_PROBE_TIMEOUT_MS));
    } catch (error) {
      failure = error;
    } finally {
      probing = false;
    }
    const now = failure === undefined;
    if (now === reachable) return;
    reachable = now;
    if (now) deps.log.info({ store: deps.store.description }, "store reachable again: serving");
    else {
      const reason = failure instanceof Error ? failure.message : String(failure);
      deps.log.warn(
        { store: deps.store.description, error: reason },
        "store unreachable: health NOT_SERVING",
      );
    }
    onChange(now);
  };
  const timer = setInterval(probe, deps.config.storeProbeIntervalMs);
  timer.unref();
  return {
    reachable: () => reachable,
    stop: () => clearInterval(timer),
  };
}
