import { availableParallelism } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { Code, PluginError } from "./errors/plugin-error.js";
import type { StoreConfig } from "./store/create-store.js";
import { parseOciLocation } from "./store/oci/oci-location.js";

/**
 * The server's configuration as one complete, typed value. People write it as
 * flags or environment variables (see `serve --help` and the README); this
 * schema normalizes both and names the option in every error.
 */
export const DEFAULT_LISTEN = "127.0.0.1:5679";
export const DEFAULT_HTTP_LISTEN = "127.0.0.1:5680";
export const DEFAULT_CHUNK_SIZE = 256 * 1024;
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024 - 64;

const listenAddress = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, "expected host:port");

const byteSize = z.coerce.number().int().positive();

const ociStoreUrl = z.string().superRefine((value, context) => {
  try {
    parseOciLocation(value);
  } catch (error) {
    context.addIssue({ code: "custom", message: (error as Error).message });
  }
});

/** The bundled examples: what `npm start` and the tests build from when no directory is given. */
export const EXAMPLE_RUNTIMES_DIR = fileURLToPath(new URL("../../examples/runtimes", import.meta.url));
export const EXAMPLE_PLUGINS_DIR = fileURLToPath(new URL("../../examples/plugins", import.meta.url));
/** A Go module proxy on disk (GOPROXY=file://) with the modules the bundled Go examples need. */
export const EXAMPLE_GOPROXY_URL = new URL("../../examples/goproxy", import.meta.url).href;

/** A list of directories: repeated flags give an array, an environment variable a `:`-separated string. */
const directories = z.preprocess(
  (value) => (typeof value === "string" ? value.split(delimiter).filter((dir) => dir !== "") : value),
  z.array(z.string().min(1)).min(1),
);

export const serveConfigSchema = z
  .object({
    /** host:port of the gRPC server. */
    listen: listenAddress.default(DEFAULT_LISTEN),
    /** host:port of the HTTP side port (catalog page, /metrics, /healthz), or "off". */
    httpListen: z.union([z.literal("off"), listenAddress]).default(DEFAULT_HTTP_LISTEN),
    /** The filesystem store's directory. */
    dataDir: z.string().min(1).default("./data"),
    /**
     * An OCI registry repository to keep artifacts in instead of dataDir:
     * `oci://host:port/repository` (https; plain http for loopback hosts),
     * `oci+http://...` or `oci+https://...`. Unset: the filesystem store.
     */
    store: ociStoreUrl.optional(),
    /** A docker-style config.json holding the OCI registry's credentials. */
    ociCredentialsFile: z.string().min(1).optional(),
    /**
     * How often a store behind a network (an OCI registry) is probed; health
     * checks answer NOT_SERVING while it cannot be reached.
     */
    storeProbeIntervalMs: z.coerce.number().int().positive().default(5_000),
    /** Bytes per PullPluginResponse message. */
    chunkSize: byteSize.max(MAX_CHUNK_SIZE).default(DEFAULT_CHUNK_SIZE),
    /**
     * Artifact bytes one pull stream may have handed to the transport and not
     * yet seen written: the bound on the server's memory per stream. 512 KiB
     * (two default chunks) keeps 100 concurrent pulls near 200 MiB of RSS
     * and was no slower than 1 MiB in the benchmark (bench/, README).
     */
    streamBufferBytes: byteSize.default(512 * 1024),
    /**
     * Artifact bytes all pull streams together may hold in memory. Streams
     * pulling one artifact at once share its chunks, each counted once, so
     * a rollout of a thousand runtimes pulling a few artifacts holds a few
     * MiB; past the limit a stream waits for room before it reads a chunk
     * nobody holds. 64 MiB.
     */
    pullMemoryBytes: byteSize.default(64 * 1024 * 1024),
    /** Largest artifact accepted by push or produced by a build. */
    maxArtifactBytes: byteSize.default(1024 * 1024 * 1024),
    /** What PullPlugin does when the store has no artifact for the key. */
    pullPolicy: z.enum(["build", "never"]).default("build"),
    /** Directories of runtime descriptors (`<dir>/<version>/runtime.json`). */
    runtimes: directories.default([EXAMPLE_RUNTIMES_DIR]),
    /** Plugin source catalogs (`<dir>/<name>/<version>/`), asked in order before the npm registry. */
    sources: directories.default([EXAMPLE_PLUGINS_DIR]),
    /** npm registry to fetch plugins from when no catalog has them; none by default. */
    npmRegistry: z.url({ protocol: /^https?$/ }).optional(),
    /**
     * Go installations (GOROOT directories or `go` commands) that build Go
     * plugins; a build uses the one whose `go version` is the request's
     * build_version. Default: the `go` on PATH.
     */
    goInstallations: directories.default(["go"]),
    /**
     * GOPROXY for Go plugin modules no catalog has and for their dependencies:
     * `off`, URLs, or directories in the proxy layout (made `file://` URLs).
     * Default: the bundled examples' proxy on disk; builds never reach the
     * network unless this names a network proxy.
     */
    goProxy: z.string().min(1).default(EXAMPLE_GOPROXY_URL),
    /** GOSUMDB for Go builds; `off` by default (go.sum files still pin what they list). */
    goSumdb: z.string().min(1).default("off"),
    /** GONOSUMDB patterns: modules never looked up in the sum database. */
    goNoSumdb: z.string().min(1).optional(),
    /** GOCACHE and GOMODCACHE of Go builds (warm: about 1 s a build, cold: 10 s or more). Default `<data>/go-cache`. */
    goCacheDir: z.string().min(1).optional(),
    /** Builds that run at once. */
    buildConcurrency: z.coerce.number().int().positive().default(availableParallelism()),
    /** Builds that may wait for a slot; one more is refused with RESOURCE_EXHAUSTED. */
    buildQueue: z.coerce.number().int().nonnegative().default(64),
    /** A build running longer is killed and reported as DEADLINE_EXCEEDED. */
    buildTimeoutMs: z.coerce.number().int().positive().default(120_000),
    /**
     * What contains each build step: `bwrap` (bubblewrap: no network, own
     * PID namespace, only the toolchain and the build directory; builds are
     * refused when it cannot start) or `off` (steps run on the host: only
     * for hosts that contain the server some other way; logged as a warning).
     */
    sandbox: z.enum(["bwrap", "off"]).default("bwrap"),
    /** The bubblewrap program: a name looked up on PATH, or a path. */
    bwrap: z.string().min(1).default("bwrap"),
    /** All memory one build step may use (cgroup): heap, buffers, children, its tmpfs. */
    buildMemoryBytes: byteSize.default(2 * 1024 * 1024 * 1024),
    /** Largest file a build may produce (a bundle, a Go plugin); larger is FAILED_PRECONDITION. */
    maxBuildOutputBytes: byteSize.default(128 * 1024 * 1024),
    /** Bytes a plugin source may unpack to; a larger one is refused. */
    maxSourceBytes: byteSize.default(64 * 1024 * 1024),
    /** Files and folders a plugin source may hold; more is refused. */
    maxSourceFiles: z.coerce.number().int().positive().default(10_000),
    /** How long in-flight calls may run after SIGTERM before they end with UNAVAILABLE. */
    shutdownGraceMs: z.coerce.number().int().nonnegative().default(10_000),
    /**
     * A connection that has not finished TLS and sent the HTTP/2 preface this
     * long after it was accepted is closed: a peer that says nothing holds a
     * socket for this long, not for ever.
     */
    handshakeTimeoutMs: z.coerce.number().int().positive().default(10_000),
    /**
     * A connection with no call for this long is closed (GOAWAY): a fleet of
     * sidecars keeps connections it uses, and gives back the others.
     */
    idleTimeoutMs: z.coerce.number().int().positive().default(300_000),
    /** PEM certificate chain and key: serve gRPC over TLS. */
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    /** PEM CA bundle: require client certificates signed by it (mutual TLS). */
    tlsClientCa: z.string().min(1).optional(),
    /** File holding the token admin calls that change the store must present. */
    adminTokenFile: z.string().min(1).optional(),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  })
  .strict()
  .refine((c) => (c.tlsCert === undefined) === (c.tlsKey === undefined), {
    message: "tlsCert and tlsKey go together",
    path: ["tlsKey"],
  })
  .refine((c) => c.tlsClientCa === undefined || c.tlsCert !== undefined, {
    message: "tlsClientCa needs tlsCert and tlsKey",
    path: ["tlsClientCa"],
  });

export type ServeConfig = z.infer<typeof serveConfigSchema>;

/** Environment variables that set serve options, and the option each sets. */
export const SERVE_ENVIRONMENT: Readonly<Record<string, keyof ServeConfig>> = {
  ATOMIX_PLUGINS_LISTEN: "listen",
  ATOMIX_PLUGINS_HTTP: "httpListen",
  ATOMIX_PLUGINS_DATA: "dataDir",
  ATOMIX_PLUGINS_STORE: "store",
  ATOMIX_PLUGINS_OCI_CREDENTIALS: "ociCredentialsFile",
  ATOMIX_PLUGINS_STORE_PROBE_INTERVAL_MS: "storeProbeIntervalMs",
  ATOMIX_PLUGINS_CHUNK_SIZE: "chunkSize",
  ATOMIX_PLUGINS_STREAM_BUFFER: "streamBufferBytes",
  ATOMIX_PLUGINS_PULL_MEMORY: "pullMemoryBytes",
  ATOMIX_PLUGINS_MAX_ARTIFACT_SIZE: "maxArtifactBytes",
  ATOMIX_PLUGINS_PULL_POLICY: "pullPolicy",
  ATOMIX_PLUGINS_RUNTIMES: "runtimes",
  ATOMIX_PLUGINS_SOURCES: "sources",
  ATOMIX_PLUGINS_NPM_REGISTRY: "npmRegistry",
  ATOMIX_PLUGINS_GO: "goInstallations",
  ATOMIX_PLUGINS_GO_PROXY: "goProxy",
  ATOMIX_PLUGINS_GO_SUMDB: "goSumdb",
  ATOMIX_PLUGINS_GO_NOSUMDB: "goNoSumdb",
  ATOMIX_PLUGINS_GO_CACHE: "goCacheDir",
  ATOMIX_PLUGINS_BUILD_CONCURRENCY: "buildConcurrency",
  ATOMIX_PLUGINS_BUILD_QUEUE: "buildQueue",
  ATOMIX_PLUGINS_BUILD_TIMEOUT_MS: "buildTimeoutMs",
  ATOMIX_PLUGINS_SANDBOX: "sandbox",
  ATOMIX_PLUGINS_BWRAP: "bwrap",
  ATOMIX_PLUGINS_BUILD_MEMORY: "buildMemoryBytes",
  ATOMIX_PLUGINS_MAX_SOURCE_SIZE: "maxSourceBytes",
  ATOMIX_PLUGINS_MAX_BUILD_OUTPUT: "maxBuildOutputBytes",
  ATOMIX_PLUGINS_MAX_SOURCE_FILES: "maxSourceFiles",
  ATOMIX_PLUGINS_SHUTDOWN_GRACE_MS: "shutdownGraceMs",
  ATOMIX_PLUGINS_HANDSHAKE_TIMEOUT_MS: "handshakeTimeoutMs",
  ATOMIX_PLUGINS_IDLE_TIMEOUT_MS: "idleTimeoutMs",
  ATOMIX_PLUGINS_TLS_CERT: "tlsCert",
  ATOMIX_PLUGINS_TLS_KEY: "tlsKey",
  ATOMIX_PLUGINS_TLS_CLIENT_CA: "tlsClientCa",
  ATOMIX_PLUGINS_ADMIN_TOKEN_FILE: "adminTokenFile",
  ATOMIX_PLUGINS_LOG_LEVEL: "logLevel",
};

/**
 * Builds the config from environment variables overlaid by explicit options
 * (flags win). Throws INVALID_ARGUMENT naming each bad option as the person
 * wrote it: the flag (`flagOf` gives it), or the environment variable.
 */
export function parseServeConfig(
  options: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
  flagOf: (option: string) => string | undefined = () => undefined,
): ServeConfig {
  const input: Record<string, unknown> = {};
  for (const [variable, option] of Object.entries(SERVE_ENVIRONMENT)) {
    const value = env[variable];
    if (value !== undefined && value !== "") input[option] = value;
  }
  for (const [option, value] of Object.entries(options)) {
    if (value !== undefined) input[option] = value;
  }
  const parsed = serveConfigSchema.safeParse(input);
  if (!parsed.success) {
    const fromEnv = (option: string) =>
      options[option] === undefined
        ? Object.entries(SERVE_ENVIRONMENT).find(([variable, o]) => o === option && env[variable])?.[0]
        : undefined;
    const problems = parsed.error.issues.map((issue) => {
      const option = String(issue.path[0] ?? "");
      const name = fromEnv(option) ?? flagOf(option) ?? (issue.path.join(".") || "config");
      return `${name}: ${issue.message}`;
    });
    throw new PluginError(Code.InvalidArgument, `invalid configuration: ${problems.join("; ")}`);
  }
  return parsed.data;
}

/** Splits `host:port` (IPv6 hosts in brackets). */
export function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(address.slice(colon + 1)) };
}

/** The store a serve config asks for: the OCI registry if `store` is set, else the data directory. */
export function storeConfigOf(config: ServeConfig): StoreConfig {
  return config.store
    ? {
        kind: "oci",
        url: config.store,
        credentialsFile: config.ociCredentialsFile,
        spoolDir: join(config.dataDir, "oci-spool"),
      }
    : { kind: "fs", dir: config.dataDir };
}
