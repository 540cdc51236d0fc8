import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ConnectionOptions } from "atomix-plugins-client/connection-options";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { BYTE_SIZE_EXAMPLE, parseByteSize } from "atomix-plugins-core/model/byte-size";
import { Secret } from "atomix-plugins-core/model/secret";
import { z } from "zod";
import {
  DEFAULT_BUILD_QUEUE,
  DEFAULT_BUILD_TIMEOUT_MS,
  DEFAULT_GO_CACHE_MAX_BYTES,
  DEFAULT_MAX_BUILD_OUTPUT,
  DEFAULT_MAX_SOURCE_BYTES,
  DEFAULT_MAX_SOURCE_FILES,
  DEFAULT_STEP_LIMITS,
} from "./compiler/build-defaults.js";
import {
  DEFAULT_MAX_PACKUMENT_BYTES,
  DEFAULT_PACKUMENT_TTL_MS,
} from "./compiler/sources/npm-registry-source.js";
import { trustedProxyList } from "./server/caller-identity.js";
import { DEFAULT_MAX_BUILD_RECORDS } from "./store/build-record-store.js";
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

/**
 * A file option. Orchestrators often hand secrets over as variables: a key
 * or token given in place of its file must stop the start without being
 * echoed into a log (readFile's error would quote it as a path).
 */
const fileName = z
  .string()
  .min(1)
  .refine(
    (value) => !value.includes("-----BEGIN") && !/[\r\n]/.test(value),
    "holds PEM text, not a file name: write it to a file only the server can read and give its path (the value is not shown)",
  );
const listenAddress = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, "expected host:port");

const byteSize = z.coerce.number().int().positive();

const ociStoreUrl = z.string().superRefine((value, context) => {
  try {
    parseOciLocation(value);
  } catch (error) {
    context.addIssue({ code: "custom", message: (error as Error).message });
  }
});

/**
 * The admin token: printable ASCII without spaces, so that it travels in an
 * `authorization: Bearer` header as written. No message shows the value.
 */
export const adminTokenSchema = z
  .string()
  .regex(/^[\x21-\x7e]+$/, "expected printable ASCII characters without spaces (the value is not shown)")
  .transform((value) => new Secret(value));

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

/**
 * How a person writes one serve option. Each option's schema below carries
 * its text, so that adding an option is one entry: the flag, the
 * environment variable, `serve --help` and error messages follow from it.
 */
export interface ServeOptionText {
  /**
   * commander's syntax, e.g. "-l, --listen <host:port>". None for a secret:
   * every user of the host sees a process's flags.
   */
  flag?: string;
  env: string;
  /** What it does, for `serve --help`. */
  what: string;
  /** The flag may be given more than once; the values form a list. */
  repeatable?: boolean;
  /** Shown instead of the schema's default value. */
  defaultText?: string;
}

/** The text of each serve option, attached where the option is defined. */
const serveOptionText = z.registry<ServeOptionText>();

export const serveConfigSchema = z
  .object({
    /** host:port of the gRPC server. */
    listen: listenAddress.default(DEFAULT_LISTEN).register(serveOptionText, {
      flag: "-l, --listen <host:port>",
      env: "ATOMIX_PLUGINS_LISTEN",
      what: "gRPC address to listen on",
    }),
    /** host:port of the HTTP side port (catalog page, /metrics, /healthz), or "off". */
    httpListen: z
      .union([z.literal("off"), listenAddress])
      .default(DEFAULT_HTTP_LISTEN)
      .register(serveOptionText, {
        flag: "--http <host:port|off>",
        env: "ATOMIX_PLUGINS_HTTP",
        what: "catalog page, /metrics and /healthz address",
      }),
    /** The filesystem store's directory. */
    dataDir: z.string().min(1).default("./data").register(serveOptionText, {
      flag: "-d, --data <dir>",
      env: "ATOMIX_PLUGINS_DATA",
      what: "data directory of the embedded store",
    }),
    /**
     * An OCI registry repository to keep artifacts in instead of dataDir:
     * `oci://host:port/repository` (https; plain http for loopback hosts),
     * `oci+http://...` or `oci+https://...`. Unset: the filesystem store.
     */
    store: ociStoreUrl.optional().register(serveOptionText, {
      flag: "--store <url>",
      env: "ATOMIX_PLUGINS_STORE",
      what: "keep artifacts in an OCI registry, oci://host:port/repository, instead of --data",
      defaultText: "the embedded store in --data",
    }),
    /** A docker-style config.json holding the OCI registry's credentials. */
    ociCredentialsFile: fileName.optional().register(serveOptionText, {
      flag: "--oci-credentials <file>",
      env: "ATOMIX_PLUGINS_OCI_CREDENTIALS",
      what: "docker-style config.json with the OCI registry's credentials (or ATOMIX_PLUGINS_OCI_USERNAME/PASSWORD)",
    }),
    /**
     * The OCI registry's user name and password, from the environment only
     * (a flag would show in every process listing); they win over the file.
     */
    ociUsername: z.string().min(1).optional().register(serveOptionText, {
      env: "ATOMIX_PLUGINS_OCI_USERNAME",
      what: "the OCI registry's user name",
    }),
    ociPassword: z
      .string()
      .min(1)
      .transform((value) => new Secret(value))
      .optional()
      .register(serveOptionText, { env: "ATOMIX_PLUGINS_OCI_PASSWORD", what: "the OCI registry's password" }),
    /**
     * How often a store behind a network (an OCI registry) is probed; health
     * checks answer NOT_SERVING while it cannot be reached.
     */
    storeProbeIntervalMs: z.coerce.number().int().positive().default(5_000).register(serveOptionText, {
      flag: "--store-probe-interval <ms>",
      env: "ATOMIX_PLUGINS_STORE_PROBE_INTERVAL_MS",
      what: "how often the OCI registry is probed; health is NOT_SERVING while it is unreachable",
    }),
    /**
     * A replica over an OCI registry keeps the blobs it serves on its own
     * disk, here, fetched once per digest; unused with the embedded store,
     * whose blobs are local already.
     */
    cacheDir: z.string().min(1).optional().register(serveOptionText, {
      flag: "--cache-dir <dir>",
      env: "ATOMIX_PLUGINS_CACHE_DIR",
      what: "a replica's local content cache (with --store)",
      defaultText: "<--data>/content-cache",
    }),
    /** Bytes of blobs the content cache keeps once no pull reads the least recently used; 0 turns it off. */
    cacheMaxBytes: z.coerce
      .number()
      .int()
      .nonnegative()
      .default(8 * 1024 * 1024 * 1024)
      .register(serveOptionText, {
        flag: "--cache-max-bytes <bytes>",
        env: "ATOMIX_PLUGINS_CACHE_MAX_BYTES",
        what: "bytes the content cache keeps (with --store); 0: every pull reads the registry",
      }),
    /**
     * How long a replica trusts a key it resolved in the registry: the bound
     * on how long a key pushed or removed through another replica may look
     * as it was here. The replica that pushes or removes sees it at once.
     */
    resolveTtlMs: z.coerce.number().int().nonnegative().default(2_000).register(serveOptionText, {
      flag: "--resolve-ttl <ms>",
      env: "ATOMIX_PLUGINS_RESOLVE_TTL_MS",
      what: "how long a replica trusts a key it resolved in the registry (with --store)",
    }),
    /**
     * Whether the OCI registry takes writes: a registry mirror (Distribution
     * in proxy mode, Harbor's proxy cache) refuses them; a replica over one
     * serves what it finds and forwards builds to `--upstream`. `detect`
     * starts an upload at start and cancels it (Distribution keeps the
     * cancelled upload's folder until its upload purging runs), so it is
     * the default only beside `--upstream`.
     */
    storeWrites: z.enum(["detect", "read-write", "read-only"]).optional().register(serveOptionText, {
      flag: "--store-writes <detect|read-write|read-only>",
      env: "ATOMIX_PLUGINS_STORE_WRITES",
      what: "whether the OCI registry takes writes (a mirror does not)",
      defaultText: "detect with --upstream, else read-write",
    }),
    /**
     * Another atomix-plugins server this one is a tier in front of: builds
     * are forwarded to it, and without --store it is the store too (its
     * artifacts cached here as a registry's are).
     */
    upstream: z.string().min(1).optional().register(serveOptionText, {
      flag: "--upstream <host:port>",
      env: "ATOMIX_PLUGINS_UPSTREAM",
      what: "an atomix-plugins server to forward builds to (and, without --store, to mirror)",
    }),
    upstreamTls: z.enum(["off", "on"]).default("off").register(serveOptionText, {
      flag: "--upstream-tls <off|on>",
      env: "ATOMIX_PLUGINS_UPSTREAM_TLS",
      what: "TLS to --upstream (system roots unless --upstream-ca)",
    }),
    upstreamCa: fileName.optional().register(serveOptionText, {
      flag: "--upstream-ca <file>",
      env: "ATOMIX_PLUGINS_UPSTREAM_CA",
      what: "PEM CA bundle for --upstream (implies --upstream-tls on)",
    }),
    upstreamTokenFile: fileName.optional().register(serveOptionText, {
      flag: "--upstream-token-file <file>",
      env: "ATOMIX_PLUGINS_UPSTREAM_TOKEN_FILE",
      what: "token sent to --upstream, as the client's --token-file",
    }),
    upstreamTrustKeys: directories.optional().register(serveOptionText, {
      flag: "--upstream-trust-key <file>",
      env: "ATOMIX_PLUGINS_UPSTREAM_TRUST_KEYS",
      what: "public key whose signed provenance an artifact from --upstream must carry before it is cached; repeatable",
      repeatable: true,
    }),
    /** Bytes per PullPluginResponse message. */
    chunkSize: byteSize.max(MAX_CHUNK_SIZE).default(DEFAULT_CHUNK_SIZE).register(serveOptionText, {
      flag: "--chunk-size <bytes>",
      env: "ATOMIX_PLUGINS_CHUNK_SIZE",
      what: "bytes per pull message",
    }),
    /**
     * Artifact bytes one pull stream may have handed to the transport and not
     * yet seen written: the bound on the server's memory per stream. 512 KiB
     * (two default chunks) keeps 100 concurrent pulls near 200 MiB of RSS
     * and was no slower than 1 MiB in the benchmark (bench/, README).
     */
    streamBufferBytes: byteSize.default(512 * 1024).register(serveOptionText, {
      flag: "--stream-buffer <bytes>",
      env: "ATOMIX_PLUGINS_STREAM_BUFFER",
      what: "bytes in flight per pull stream",
    }),
    /**
     * Artifact bytes all pull streams together may hold in memory. Streams
     * pulling one artifact at once share its chunks, each counted once, so
     * a rollout of a thousand runtimes pulling a few artifacts holds a few
     * MiB; past the limit a stream waits for room before it reads a chunk
     * nobody holds. 64 MiB.
     */
    pullMemoryBytes: byteSize.default(64 * 1024 * 1024).register(serveOptionText, {
      flag: "--pull-memory <bytes>",
      env: "ATOMIX_PLUGINS_PULL_MEMORY",
      what: "chunk bytes all pulls hold",
    }),
    /** Largest artifact accepted by push or produced by a build. */
    maxArtifactBytes: byteSize.default(1024 * 1024 * 1024).register(serveOptionText, {
      flag: "--max-artifact-size <bytes>",
      env: "ATOMIX_PLUGINS_MAX_ARTIFACT_SIZE",
      what: "largest artifact accepted",
    }),
    /** What PullPlugin does when the store has no artifact for the key. */
    pullPolicy: z.enum(["build", "never"]).default("build").register(serveOptionText, {
      flag: "--pull-policy <build|never>",
      env: "ATOMIX_PLUGINS_PULL_POLICY",
      what: "on a pull miss: build it, or answer NOT_FOUND",
    }),
    /** Directories of runtime descriptors (`<dir>/<version>/runtime.json`). */
    runtimes: directories.default([EXAMPLE_RUNTIMES_DIR]).register(serveOptionText, {
      flag: "--runtimes <dir>",
      env: "ATOMIX_PLUGINS_RUNTIMES",
      what: "runtime descriptors, <dir>/<version>/runtime.json; repeatable",
      repeatable: true,
      defaultText: "the bundled examples/runtimes",
    }),
    /** Plugin source catalogs (`<dir>/<name>/<version>/`), asked in order before the npm registry. */
    sources: directories.default([EXAMPLE_PLUGINS_DIR]).register(serveOptionText, {
      flag: "--sources <dir>",
      env: "ATOMIX_PLUGINS_SOURCES",
      what: "plugin source catalog, <dir>/<name>/<version>/; repeatable",
      repeatable: true,
      defaultText: "the bundled examples/plugins",
    }),
    /** npm registry to fetch plugins from when no catalog has them; none by default. */
    npmRegistry: z
      .url({ protocol: /^https?$/ })
      .optional()
      .register(serveOptionText, {
        flag: "--npm-registry <url>",
        env: "ATOMIX_PLUGINS_NPM_REGISTRY",
        what: "fetch plugins from this npm registry too",
      }),
    /**
     * Hosts besides the registry's own origin that npm tarballs may come from
     * (`host` on its protocol's default port, or `host:port`). A packument
     * pointing anywhere else, or a redirect leaving these, is refused.
     */
    npmTarballHosts: z
      .preprocess(
        (value) =>
          typeof value === "string"
            ? value
                .split(",")
                .map((host) => host.trim())
                .filter(Boolean)
            : value,
        z.array(
          z
            .string()
            .regex(
              /^([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(:\d{1,5})?$/i,
              "expected host or host:port",
            ),
        ),
      )
      .default([])
      .register(serveOptionText, {
        flag: "--npm-tarball-host <host[:port]>",
        env: "ATOMIX_PLUGINS_NPM_TARBALL_HOSTS",
        what: "another host npm tarballs may come from; repeatable (`,`-separated in the environment)",
        repeatable: true,
        defaultText: "none: the registry's origin only",
      }),
    /** How long an npm packument (or its absence) is used before the registry is asked again, conditionally. */
    npmPackumentTtlMs: z.coerce
      .number()
      .int()
      .nonnegative()
      .default(DEFAULT_PACKUMENT_TTL_MS)
      .register(serveOptionText, {
        flag: "--npm-packument-ttl <ms>",
        env: "ATOMIX_PLUGINS_NPM_PACKUMENT_TTL_MS",
        what: "how long an npm packument is used before the registry is asked again (conditionally)",
      }),
    /** Largest npm packument read; a larger one is refused. */
    maxPackumentBytes: byteSize.default(DEFAULT_MAX_PACKUMENT_BYTES).register(serveOptionText, {
      flag: "--max-packument-size <bytes>",
      env: "ATOMIX_PLUGINS_MAX_PACKUMENT_SIZE",
      what: "largest npm packument read",
    }),
    /**
     * Go installations (GOROOT directories or `go` commands) that build Go
     * plugins; a build uses the one whose `go version` is the request's
     * build_version. Default: the `go` on PATH.
     */
    goInstallations: directories.default(["go"]).register(serveOptionText, {
      flag: "--go <goroot-or-command>",
      env: "ATOMIX_PLUGINS_GO",
      what: "a Go installation for Go plugins (GOROOT or go binary); repeatable",
      repeatable: true,
      defaultText: "the go on PATH",
    }),
    /**
     * GOPROXY for Go plugin modules no catalog has and for their dependencies:
     * `off`, URLs, or directories in the proxy layout (made `file://` URLs).
     * Default: the bundled examples' proxy on disk; builds never reach the
     * network unless this names a network proxy.
     */
    goProxy: z.string().min(1).default(EXAMPLE_GOPROXY_URL).register(serveOptionText, {
      flag: "--go-proxy <GOPROXY>",
      env: "ATOMIX_PLUGINS_GO_PROXY",
      what: "Go module proxy: off, URLs or directories",
      defaultText: "the bundled examples/goproxy",
    }),
    /** GOSUMDB for Go builds; `off` by default (go.sum files still pin what they list). */
    goSumdb: z.string().min(1).default("off").register(serveOptionText, {
      flag: "--go-sumdb <GOSUMDB>",
      env: "ATOMIX_PLUGINS_GO_SUMDB",
      what: "Go checksum database",
    }),
    /** GONOSUMDB patterns: modules never looked up in the sum database. */
    goNoSumdb: z.string().min(1).optional().register(serveOptionText, {
      flag: "--go-nosumdb <patterns>",
      env: "ATOMIX_PLUGINS_GO_NOSUMDB",
      what: "GONOSUMDB for Go builds",
    }),
    /** GOCACHE and GOMODCACHE of Go builds (warm: about 1 s a build, cold: 10 s or more). Default `<data>/go-cache`. */
    goCacheDir: z.string().min(1).optional().register(serveOptionText, {
      flag: "--go-cache <dir>",
      env: "ATOMIX_PLUGINS_GO_CACHE",
      what: "GOCACHE and GOMODCACHE of Go builds",
      defaultText: "<data>/go-cache",
    }),
    /**
     * Bytes the Go caches (module build caches, their bases, the module
     * cache) may hold together; beyond, the least recently used module's
     * build cache goes first, and the module cache is emptied while no
     * build runs.
     */
    goCacheMaxBytes: byteSize.default(DEFAULT_GO_CACHE_MAX_BYTES).register(serveOptionText, {
      flag: "--go-cache-max-bytes <bytes>",
      env: "ATOMIX_PLUGINS_GO_CACHE_MAX_BYTES",
      what: "bytes the Go caches may hold; least recently used modules' build caches are removed beyond",
    }),
    /** Builds that run at once. */
    buildConcurrency: z.coerce
      .number()
      .int()
      .positive()
      .default(availableParallelism())
      .register(serveOptionText, {
        flag: "--build-concurrency <n>",
        env: "ATOMIX_PLUGINS_BUILD_CONCURRENCY",
        what: "builds running at once",
        defaultText: "the number of cores",
      }),
    /** Builds that may wait for a slot; one more is refused with RESOURCE_EXHAUSTED. */
    buildQueue: z.coerce.number().int().nonnegative().default(DEFAULT_BUILD_QUEUE).register(serveOptionText, {
      flag: "--build-queue <n>",
      env: "ATOMIX_PLUGINS_BUILD_QUEUE",
      what: "builds waiting before RESOURCE_EXHAUSTED",
    }),
    /**
     * Builds one caller (a client certificate's identity, else its IP
     * address, IPv6 by /64) may have running and waiting together; one more
     * is refused with RESOURCE_EXHAUSTED at once. A caller runs at most
     * --build-concurrency - 1 of them at once (at least 1).
     */
    buildsPerCaller: z.coerce.number().int().positive().default(8).register(serveOptionText, {
      flag: "--builds-per-caller <n>",
      env: "ATOMIX_PLUGINS_BUILDS_PER_CALLER",
      what: "builds one caller may have running and waiting before RESOURCE_EXHAUSTED",
    }),
    /**
     * Load balancers that end clients' connections (addresses or CIDR
     * blocks): a call from one counts as the client it names last in
     * x-forwarded-for, for --builds-per-caller. None by default: the header
     * is ignored, since any client can write it.
     */
    trustedProxies: z
      .preprocess(
        (value) =>
          typeof value === "string"
            ? value
                .split(",")
                .map((entry) => entry.trim())
                .filter((entry) => entry !== "")
            : value,
        z.array(
          z.string().superRefine((value, context) => {
            try {
              trustedProxyList([value]);
            } catch (error) {
              context.addIssue({ code: "custom", message: (error as Error).message });
            }
          }),
        ),
      )
      .default([])
      .register(serveOptionText, {
        flag: "--trusted-proxy <cidr>",
        env: "ATOMIX_PLUGINS_TRUSTED_PROXIES",
        what: "a load balancer (address or CIDR block) whose x-forwarded-for names the caller; repeatable",
        repeatable: true,
        defaultText: "none",
      }),
    /** A build running longer is killed and reported as DEADLINE_EXCEEDED. */
    buildTimeoutMs: z.coerce
      .number()
      .int()
      .positive()
      .default(DEFAULT_BUILD_TIMEOUT_MS)
      .register(serveOptionText, {
        flag: "--build-timeout <ms>",
        env: "ATOMIX_PLUGINS_BUILD_TIMEOUT_MS",
        what: "time limit of one build",
      }),
    /**
     * A build that failed with FAILED_PRECONDITION is answered again, without
     * building, for this long, unless its source or runtime release changed;
     * 0 builds every time.
     */
    failureTtlMs: z.coerce.number().int().nonnegative().default(600_000).register(serveOptionText, {
      flag: "--failure-ttl <ms>",
      env: "ATOMIX_PLUGINS_FAILURE_TTL_MS",
      what: "answer a FAILED_PRECONDITION build again without building for this long (0: never)",
    }),
    /** Build records kept (the catalog page's recent builds, `logs`, remembered failures); the oldest go first. */
    buildRecordsMax: z.coerce
      .number()
      .int()
      .positive()
      .default(DEFAULT_MAX_BUILD_RECORDS)
      .register(serveOptionText, {
        flag: "--build-records-max <n>",
        env: "ATOMIX_PLUGINS_BUILD_RECORDS_MAX",
        what: "build records kept; beyond, the oldest are removed",
      }),
    /**
     * When a runtime release is registered, build in the background every
     * plugin stored for the previous release of the same toolchain
     * (`previous`), or nothing (`off`).
     */
    prewarm: z.enum(["previous", "off"]).default("previous").register(serveOptionText, {
      flag: "--prewarm <previous|off>",
      env: "ATOMIX_PLUGINS_PREWARM",
      what: "on registering a runtime release, build the previous release's plugins for it in the background",
    }),
    /** Build slots pre-warm may take at once; callers always go first. Default: half of --build-concurrency, at least 1. */
    prewarmSlots: z.coerce.number().int().positive().optional().register(serveOptionText, {
      flag: "--prewarm-slots <n>",
      env: "ATOMIX_PLUGINS_PREWARM_SLOTS",
      what: "build slots pre-warm may take at once",
      defaultText: "half of --build-concurrency, at least 1",
    }),
    /**
     * What contains each build step: `bwrap` (bubblewrap: no network, own
     * PID namespace, only the toolchain and the build directory; builds are
     * refused when it cannot start) or `off` (steps run on the host: only
     * for hosts that contain the server some other way; logged as a warning).
     */
    sandbox: z.enum(["bwrap", "off"]).default("bwrap").register(serveOptionText, {
      flag: "--sandbox <bwrap|off>",
      env: "ATOMIX_PLUGINS_SANDBOX",
      what: "what contains build steps: bubblewrap, or off (steps run on the host)",
    }),
    /** The bubblewrap program: a name looked up on PATH, or a path. */
    bwrap: z.string().min(1).default("bwrap").register(serveOptionText, {
      flag: "--bwrap <path>",
      env: "ATOMIX_PLUGINS_BWRAP",
      what: "the bubblewrap program",
    }),
    /** All memory one build step may use (cgroup): heap, buffers, children, its tmpfs. */
    buildMemoryBytes: byteSize.default(DEFAULT_STEP_LIMITS.memoryBytes).register(serveOptionText, {
      flag: "--build-memory <bytes>",
      env: "ATOMIX_PLUGINS_BUILD_MEMORY",
      what: "all memory of one build step",
    }),
    /** Largest file a build may produce (a bundle, a Go plugin); larger is FAILED_PRECONDITION. */
    maxBuildOutputBytes: byteSize.default(DEFAULT_MAX_BUILD_OUTPUT).register(serveOptionText, {
      flag: "--max-build-output <bytes>",
      env: "ATOMIX_PLUGINS_MAX_BUILD_OUTPUT",
      what: "largest file a build may produce (a bundle, a Go plugin)",
    }),
    /** Bytes a plugin source may unpack to; a larger one is refused. */
    maxSourceBytes: byteSize.default(DEFAULT_MAX_SOURCE_BYTES).register(serveOptionText, {
      flag: "--max-source-size <bytes>",
      env: "ATOMIX_PLUGINS_MAX_SOURCE_SIZE",
      what: "bytes a plugin source may unpack to",
    }),
    /** Files and folders a plugin source may hold; more is refused. */
    maxSourceFiles: z.coerce
      .number()
      .int()
      .positive()
      .default(DEFAULT_MAX_SOURCE_FILES)
      .register(serveOptionText, {
        flag: "--max-source-files <n>",
        env: "ATOMIX_PLUGINS_MAX_SOURCE_FILES",
        what: "files a plugin source may hold",
      }),
    /** How long in-flight calls may run after SIGTERM before they end with UNAVAILABLE. */
    shutdownGraceMs: z.coerce.number().int().nonnegative().default(10_000).register(serveOptionText, {
      flag: "--shutdown-grace <ms>",
      env: "ATOMIX_PLUGINS_SHUTDOWN_GRACE_MS",
      what: "grace for in-flight calls after SIGTERM",
    }),
    /**
     * A connection that has not finished TLS and sent the HTTP/2 preface this
     * long after it was accepted is closed: a peer that says nothing holds a
     * socket for this long, not for ever.
     */
    handshakeTimeoutMs: z.coerce.number().int().positive().default(10_000).register(serveOptionText, {
      flag: "--handshake-timeout <ms>",
      env: "ATOMIX_PLUGINS_HANDSHAKE_TIMEOUT_MS",
      what: "close a connection that has not sent the HTTP/2 preface (after TLS) by then",
    }),
    /**
     * A connection with no call for this long is closed (GOAWAY): a fleet of
     * sidecars keeps connections it uses, and gives back the others.
     */
    idleTimeoutMs: z.coerce.number().int().positive().default(300_000).register(serveOptionText, {
      flag: "--idle-timeout <ms>",
      env: "ATOMIX_PLUGINS_IDLE_TIMEOUT_MS",
      what: "close a connection with no call for this long",
    }),
    /** PEM certificate chain and key: serve gRPC over TLS. */
    tlsCert: fileName.optional().register(serveOptionText, {
      flag: "--tls-cert <file>",
      env: "ATOMIX_PLUGINS_TLS_CERT",
      what: "PEM certificate chain: serve gRPC over TLS",
    }),
    tlsKey: fileName.optional().register(serveOptionText, {
      flag: "--tls-key <file>",
      env: "ATOMIX_PLUGINS_TLS_KEY",
      what: "PEM private key of --tls-cert",
    }),
    /** PEM CA bundle: require client certificates signed by it (mutual TLS). */
    tlsClientCa: fileName.optional().register(serveOptionText, {
      flag: "--tls-client-ca <file>",
      env: "ATOMIX_PLUGINS_TLS_CLIENT_CA",
      what: "PEM CA bundle: require client certificates (mutual TLS)",
    }),
    /**
     * The token admin calls that change the store must present, from the
     * environment only (a flag would show in every process listing)...
     */
    adminToken: adminTokenSchema.optional().register(serveOptionText, {
      env: "ATOMIX_PLUGINS_ADMIN_TOKEN",
      what: "the token push, rm and gc must present",
    }),
    /** ...or from a file (read at start; see loadAdminAuth). */
    adminTokenFile: fileName.optional().register(serveOptionText, {
      flag: "--admin-token-file <file>",
      env: "ATOMIX_PLUGINS_ADMIN_TOKEN_FILE",
      what: "token that push, rm and gc must present (or ATOMIX_PLUGINS_ADMIN_TOKEN)",
    }),
    /**
     * PEM private key (ECDSA P-256 or Ed25519, `atomix-plugins keygen`) that
     * signs the provenance of every artifact built or pushed. Replicas of one
     * deployment share it. Absent, artifacts are stored without provenance
     * and runtimes that verify refuse them.
     */
    signingKey: fileName.optional().register(serveOptionText, {
      flag: "--signing-key <file>",
      env: "ATOMIX_PLUGINS_SIGNING_KEY",
      what: "PEM private key (ECDSA P-256 or Ed25519) that signs the provenance of every artifact",
    }),
    /** builder.id of the provenance this deployment signs: a URI naming it. */
    builderId: z.string().url().default("https://atomix.dev/plugins/server").register(serveOptionText, {
      flag: "--builder-id <uri>",
      env: "ATOMIX_PLUGINS_BUILDER_ID",
      what: "builder.id of the signed provenance",
    }),
    logLevel: z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .default("info")
      .register(serveOptionText, {
        flag: "--log-level <level>",
        env: "ATOMIX_PLUGINS_LOG_LEVEL",
        what: "log level",
      }),
  })
  .strict()
  .refine((c) => (c.tlsCert === undefined) === (c.tlsKey === undefined), {
    message: "tlsCert and tlsKey go together",
    path: ["tlsKey"],
  })
  .refine((c) => c.tlsClientCa === undefined || c.tlsCert !== undefined, {
    message: "tlsClientCa needs tlsCert and tlsKey",
    path: ["tlsClientCa"],
  })
  .refine((c) => c.adminToken === undefined || c.adminTokenFile === undefined, {
    message: "give the admin token in the environment or in a file (--admin-token-file), not both",
    path: ["adminToken"],
  })
  .refine((c) => (c.ociUsername === undefined) === (c.ociPassword === undefined), {
    message: "set both ATOMIX_PLUGINS_OCI_USERNAME and ATOMIX_PLUGINS_OCI_PASSWORD, or neither",
    path: ["ociPassword"],
  });

export type ServeConfig = z.infer<typeof serveConfigSchema>;

/** Every serve option as a person writes it: its flag, environment variable and help. */
export const SERVE_OPTIONS: readonly ({ option: keyof ServeConfig } & ServeOptionText)[] = Object.entries(
  serveConfigSchema.shape,
).map(([option, schema]) => {
  const text = serveOptionText.get(schema);
  if (!text) throw new Error(`serve option ${option} has no flag or environment text (config.ts)`);
  return { option: option as keyof ServeConfig, ...text };
});

/** Environment variables that set serve options, and the option each sets. */
export const SERVE_ENVIRONMENT: Readonly<Record<string, keyof ServeConfig>> = Object.fromEntries(
  SERVE_OPTIONS.map((option) => [option.env, option.option]),
);

/**
 * Builds the config from environment variables overlaid by explicit options
 * (flags win). Throws INVALID_ARGUMENT naming each bad option as the person
 * wrote it: the flag (`flagOf` gives it), or the environment variable. No
 * message quotes a secret's value (the schema's messages never quote input).
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
  // A size may be written with a unit (64KiB); anything else is left for the schema to refuse.
  for (const [option, value] of Object.entries(input)) {
    if (typeof value === "string" && unitOf(option) === "bytes")
      input[option] = parseByteSize(value) ?? value;
  }
  const parsed = serveConfigSchema.safeParse(input);
  if (!parsed.success) {
    const variableOf = (option: string, set: boolean) =>
      Object.entries(SERVE_ENVIRONMENT).find(([variable, o]) => o === option && (!set || env[variable]))?.[0];
    const fromEnv = (option: string) =>
      options[option] === undefined ? variableOf(option, true) : undefined;
    const problems = parsed.error.issues.map((issue) => {
      const option = String(issue.path[0] ?? "");
      const name =
        fromEnv(option) ??
        flagOf(option) ??
        (options[option] === undefined ? variableOf(option, false) : undefined) ??
        (issue.path.join(".") || "config");
      const numeric = ["invalid_type", "too_small", "too_big"].includes(issue.code);
      return `${name}: ${(numeric && numberProblem(option)) || issue.message}`;
    });
    throw new PluginError(Code.InvalidArgument, `invalid configuration: ${problems.join("; ")}`);
  }
  return resolveServePaths(parsed.data);
}

/** Options that name files or folders (see resolveServePaths). */
const PATH_OPTIONS = [
  "dataDir",
  "cacheDir",
  "ociCredentialsFile",
  "upstreamCa",
  "upstreamTokenFile",
  "upstreamTrustKeys",
  "runtimes",
  "sources",
  "goCacheDir",
  "tlsCert",
  "tlsKey",
  "tlsClientCa",
  "adminTokenFile",
  "signingKey",
] as const satisfies readonly (keyof ServeConfig)[];

/** Options that name programs: a bare name is looked up on PATH, anything with a `/` is a path. */
const PROGRAM_OPTIONS = ["bwrap", "goInstallations"] as const satisfies readonly (keyof ServeConfig)[];

/**
 * The config with every path made absolute against `cwd`, once, as the
 * person who started `serve` meant them: build steps, bubblewrap and go run
 * in folders of their own, where a relative path would name another file
 * (`--data ./data`, `npm start`'s default, is the common case). GOPROXY
 * directories are made `file://` URLs, resolved the same way, where the Go
 * toolchain is created (normalizeGoProxy).
 */
export function resolveServePaths(config: ServeConfig, cwd: string = process.cwd()): ServeConfig {
  const resolved: Record<string, unknown> = { ...config };
  const each = (value: unknown, one: (path: string) => string) =>
    Array.isArray(value)
      ? value.map((entry: string) => one(entry))
      : typeof value === "string"
        ? one(value)
        : value;
  for (const option of PATH_OPTIONS) resolved[option] = each(config[option], (path) => resolve(cwd, path));
  for (const option of PROGRAM_OPTIONS) {
    resolved[option] = each(config[option], (program) =>
      program.includes("/") ? resolve(cwd, program) : program,
    );
  }
  return resolved as ServeConfig;
}

/** What a numeric option counts, from its flag's placeholder (`--chunk-size <bytes>`). */
function unitOf(option: string): "bytes" | "ms" | "n" | undefined {
  const placeholder = SERVE_OPTIONS.find((o) => o.option === option)?.flag?.match(/<(bytes|ms|n)>$/)?.[1];
  return placeholder as "bytes" | "ms" | "n" | undefined;
}

/**
 * What a numeric option takes, said for a person ("must be a positive
 * number of bytes (such as 65536 or 64KiB)") in place of the schema's
 * "expected number, received NaN"; undefined for other options.
 */
function numberProblem(option: string): string | undefined {
  const unit = unitOf(option);
  const schema = serveConfigSchema.shape[option as keyof typeof serveConfigSchema.shape];
  if (!unit || !schema) return undefined;
  const zero = schema.safeParse(0).success;
  const [kind, range] = zero ? ["", ", 0 or more"] : ["positive ", ""];
  const most = option === "chunkSize" ? `, at most ${MAX_CHUNK_SIZE}` : "";
  if (unit === "bytes") return `must be a ${kind}number of bytes${range} (${BYTE_SIZE_EXAMPLE})${most}`;
  if (unit === "ms") return `must be a ${kind}whole number of milliseconds${range} (such as 5000)`;
  return `must be a ${kind}whole number${range}`;
}

/** Splits `host:port` (IPv6 hosts in brackets). */
export function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(address.slice(colon + 1)) };
}

/** How this server reaches `--upstream`, as the client library takes it; undefined without one. */
export function upstreamConnectionOf(config: ServeConfig): ConnectionOptions | undefined {
  if (!config.upstream) return undefined;
  const read = (path: string, what: string) => {
    try {
      return readFileSync(path, "utf8");
    } catch (error) {
      throw PluginError.from(error, `reading ${what} ${path}`);
    }
  };
  const token = config.upstreamTokenFile
    ? read(config.upstreamTokenFile, "the upstream token file").trim()
    : undefined;
  const trustedKeys = (config.upstreamTrustKeys ?? []).map((file) => read(file, "the upstream trusted key"));
  const tls = config.upstreamTls === "on" || config.upstreamCa !== undefined;
  return {
    address: config.upstream,
    // An operator's tier reaches its upstream as configured, whatever proxy the environment names.
    proxy: false,
    ...(token ? { token } : {}),
    ...(trustedKeys.length > 0 ? { trustedKeys } : {}),
    ...(tls ? { tls: config.upstreamCa ? { caFile: config.upstreamCa } : {} } : {}),
  };
}

/** The content cache a replica keeps in front of a shared store; undefined when turned off. */
function cacheConfigOf(config: ServeConfig) {
  return config.cacheMaxBytes > 0
    ? {
        cache: {
          dir: config.cacheDir ?? join(config.dataDir, "content-cache"),
          maxBytes: config.cacheMaxBytes,
          resolveTtlMs: config.resolveTtlMs,
        },
      }
    : {};
}

/**
 * The store a serve config asks for: the OCI registry if `store` is set,
 * else the upstream server if `upstream` is, else the data directory.
 */
export function storeConfigOf(config: ServeConfig): StoreConfig {
  const upstream = upstreamConnectionOf(config);
  if (!config.store && upstream) {
    return {
      kind: "upstream",
      connection: upstream,
      dataDir: config.dataDir,
      maxArtifactBytes: config.maxArtifactBytes,
      ...cacheConfigOf(config),
    };
  }
  return config.store
    ? {
        kind: "oci",
        url: config.store,
        credentialsFile: config.ociCredentialsFile,
        ...(config.ociUsername && config.ociPassword
          ? { credentials: { username: config.ociUsername, password: config.ociPassword } }
          : {}),
        spoolDir: join(config.dataDir, "oci-spool"),
        writes: config.storeWrites ?? (upstream ? "detect" : "read-write"),
        ...cacheConfigOf(config),
      }
    : { kind: "fs", dir: config.dataDir };
}
