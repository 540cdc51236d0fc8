import { join } from "node:path";
import { format } from "node:util";
import { setLogger } from "@grpc/grpc-js";
import { Command, Option } from "commander";
import pino, { type Logger } from "pino";
import { createBuildCompiler } from "../compiler/build-compiler.js";
import { loadRuntimeCatalog } from "../compiler/runtime-catalog.js";
import { createSandbox, type Sandbox } from "../compiler/sandbox/sandbox.js";
import { createCatalogSource } from "../compiler/sources/catalog-source.js";
import { createNpmRegistrySource } from "../compiler/sources/npm-registry-source.js";
import { createSourceUnpacker } from "../compiler/sources/source-unpacker.js";
import { createGoToolchain } from "../compiler/toolchains/go/go-toolchain.js";
import { createNodeToolchain } from "../compiler/toolchains/node/node-toolchain.js";
import {
  parseServeConfig,
  SERVE_ENVIRONMENT,
  type ServeConfig,
  serveConfigSchema,
  storeConfigOf,
} from "../config.js";
import { loadAdminAuth, loadServerCredentials } from "../server/credentials.js";
import { createMetrics } from "../server/metrics.js";
import { startServer } from "../server/server.js";
import { createStore } from "../store/create-store.js";
import { startHttpServer } from "../web/http-server.js";
import { action } from "./cli-common.js";

interface ServeFlag {
  flags: string;
  option: keyof ServeConfig;
  what: string;
  /** May be given more than once; the values form a list. */
  repeatable?: boolean;
  /** Shown instead of the schema's default value. */
  defaultText?: string;
}

/** One flag per config option; the config schema owns the defaults, the help text shows them. */
const SERVE_FLAGS: ServeFlag[] = [
  { flags: "-l, --listen <host:port>", option: "listen", what: "gRPC address to listen on" },
  {
    flags: "--http <host:port|off>",
    option: "httpListen",
    what: "catalog page, /metrics and /healthz address",
  },
  { flags: "-d, --data <dir>", option: "dataDir", what: "data directory of the embedded store" },
  {
    flags: "--store <url>",
    option: "store",
    what: "keep artifacts in an OCI registry, oci://host:port/repository, instead of --data",
    defaultText: "the embedded store in --data",
  },
  {
    flags: "--oci-credentials <file>",
    option: "ociCredentialsFile",
    what: "docker-style config.json with the OCI registry's credentials (or ATOMIX_PLUGINS_OCI_USERNAME/PASSWORD)",
  },
  {
    flags: "--store-probe-interval <ms>",
    option: "storeProbeIntervalMs",
    what: "how often the OCI registry is probed; health is NOT_SERVING while it is unreachable",
  },
  { flags: "--chunk-size <bytes>", option: "chunkSize", what: "bytes per pull message" },
  { flags: "--stream-buffer <bytes>", option: "streamBufferBytes", what: "bytes in flight per pull stream" },
  { flags: "--pull-memory <bytes>", option: "pullMemoryBytes", what: "chunk bytes all pulls hold" },
  { flags: "--max-artifact-size <bytes>", option: "maxArtifactBytes", what: "largest artifact accepted" },
  {
    flags: "--pull-policy <build|never>",
    option: "pullPolicy",
    what: "on a pull miss: build it, or answer NOT_FOUND",
  },
  {
    flags: "--runtimes <dir>",
    option: "runtimes",
    what: "runtime descriptors, <dir>/<version>/runtime.json; repeatable",
    repeatable: true,
    defaultText: "the bundled examples/runtimes",
  },
  {
    flags: "--sources <dir>",
    option: "sources",
    what: "plugin source catalog, <dir>/<name>/<version>/; repeatable",
    repeatable: true,
    defaultText: "the bundled examples/plugins",
  },
  { flags: "--npm-registry <url>", option: "npmRegistry", what: "fetch plugins from this npm registry too" },
  {
    flags: "--go <goroot-or-command>",
    option: "goInstallations",
    what: "a Go installation for Go plugins (GOROOT or go binary); repeatable",
    repeatable: true,
    defaultText: "the go on PATH",
  },
  {
    flags: "--go-proxy <GOPROXY>",
    option: "goProxy",
    what: "Go module proxy: off, URLs or directories",
    defaultText: "the bundled examples/goproxy",
  },
  { flags: "--go-sumdb <GOSUMDB>", option: "goSumdb", what: "Go checksum database" },
  { flags: "--go-nosumdb <patterns>", option: "goNoSumdb", what: "GONOSUMDB for Go builds" },
  {
    flags: "--go-cache <dir>",
    option: "goCacheDir",
    what: "GOCACHE and GOMODCACHE of Go builds",
    defaultText: "<data>/go-cache",
  },
  {
    flags: "--build-concurrency <n>",
    option: "buildConcurrency",
    what: "builds running at once",
    defaultText: "the number of cores",
  },
  { flags: "--build-queue <n>", option: "buildQueue", what: "builds waiting before RESOURCE_EXHAUSTED" },
  { flags: "--build-timeout <ms>", option: "buildTimeoutMs", what: "time limit of one build" },
  {
    flags: "--sandbox <bwrap|off>",
    option: "sandbox",
    what: "what contains build steps: bubblewrap, or off (steps run on the host)",
  },
  { flags: "--bwrap <path>", option: "bwrap", what: "the bubblewrap program" },
  { flags: "--build-memory <bytes>", option: "buildMemoryBytes", what: "all memory of one build step" },
  {
    flags: "--max-build-output <bytes>",
    option: "maxBuildOutputBytes",
    what: "largest file a build may produce (a bundle, a Go plugin)",
  },
  {
    flags: "--max-source-size <bytes>",
    option: "maxSourceBytes",
    what: "bytes a plugin source may unpack to",
  },
  { flags: "--max-source-files <n>", option: "maxSourceFiles", what: "files a plugin source may hold" },
  {
    flags: "--shutdown-grace <ms>",
    option: "shutdownGraceMs",
    what: "grace for in-flight calls after SIGTERM",
  },
  {
    flags: "--handshake-timeout <ms>",
    option: "handshakeTimeoutMs",
    what: "close a connection that has not sent the HTTP/2 preface (after TLS) by then",
  },
  {
    flags: "--idle-timeout <ms>",
    option: "idleTimeoutMs",
    what: "close a connection with no call for this long",
  },
  { flags: "--tls-cert <file>", option: "tlsCert", what: "PEM certificate chain: serve gRPC over TLS" },
  { flags: "--tls-key <file>", option: "tlsKey", what: "PEM private key of --tls-cert" },
  {
    flags: "--tls-client-ca <file>",
    option: "tlsClientCa",
    what: "PEM CA bundle: require client certificates (mutual TLS)",
  },
  {
    flags: "--admin-token-file <file>",
    option: "adminTokenFile",
    what: "token that push, rm and gc must present (or ATOMIX_PLUGINS_ADMIN_TOKEN)",
  },
  { flags: "--log-level <level>", option: "logLevel", what: "log level" },
];

/** commander's camel-cased key of a flag: "--chunk-size <bytes>" → "chunkSize". */
function flagKey(flags: string): string {
  const long = /--([a-z-]+)/.exec(flags)?.[1] ?? "";
  return long.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function envFor(option: keyof ServeConfig): string {
  const variable = Object.entries(SERVE_ENVIRONMENT).find(([, o]) => o === option)?.[0];
  return variable ? ` [env ${variable}]` : "";
}

function helpFor(flag: ServeFlag, defaults: ServeConfig): string {
  const value = flag.defaultText ?? defaults[flag.option];
  return `${flag.what}${value === undefined ? "" : ` (default ${String(value)})`}${envFor(flag.option)}`;
}

export function serveCommand(): Command {
  const defaults = serveConfigSchema.parse({});
  const command = new Command("serve").description("run the plugin registry and compiler gRPC server");
  for (const flag of SERVE_FLAGS) {
    const option = new Option(flag.flags, helpFor(flag, defaults));
    command.addOption(
      flag.repeatable
        ? option.argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value])
        : option.argParser((value: string) => value),
    );
  }
  return command
    .addHelpText(
      "after",
      "\nExamples:\n  atomix-plugins serve\n  atomix-plugins serve --listen 0.0.0.0:5679 --data /var/lib/atomix-plugins\n  atomix-plugins serve --listen 0.0.0.0:5679 --store oci://registry.internal:5000/atomix/plugins",
    )
    .action(
      action(async (options: Record<string, string | string[] | undefined>) => {
        const config = parseServeConfig(
          Object.fromEntries(SERVE_FLAGS.map((flag) => [flag.option, options[flagKey(flag.flags)]])),
          process.env,
          (option) => SERVE_FLAGS.find((flag) => flag.option === option)?.flags.split(" ")[0],
        );
        await serve(config);
      }),
    );
}

/** Says at start what contains the builds; a missing or disabled sandbox is a warning an operator must see. */
function logSandbox(log: Logger, sandbox: Sandbox): void {
  if (sandbox.kind === "bwrap") log.info({ sandbox: sandbox.kind }, `build sandbox: ${sandbox.description}`);
  else if (sandbox.kind === "off")
    log.warn({ sandbox: sandbox.kind }, `build sandbox ${sandbox.description}`);
  else log.error({ sandbox: sandbox.kind }, `builds will be refused: ${sandbox.description}`);
}

/** Runs the server until SIGTERM or SIGINT, then shuts down gracefully and exits 0. */
export async function serve(config: ServeConfig): Promise<void> {
  const log = pino({ level: config.logLevel, base: { service: "atomix-plugins" } });
  // grpc-js's own messages become log lines like ours, not raw text on stderr.
  setLogger({
    error: (...parts: unknown[]) => log.warn({ grpc: format(...parts) }, "grpc-js"),
    info: (...parts: unknown[]) => log.debug({ grpc: format(...parts) }, "grpc-js"),
    debug: (...parts: unknown[]) => log.trace({ grpc: format(...parts) }, "grpc-js"),
  });
  const store = await createStore(storeConfigOf(config));
  const sources = [
    ...config.sources.map((dir) => createCatalogSource(dir)),
    ...(config.npmRegistry ? [createNpmRegistrySource({ url: config.npmRegistry })] : []),
  ];
  const sandbox = await createSandbox({
    mode: config.sandbox,
    bwrap: config.bwrap,
    limits: { memoryBytes: config.buildMemoryBytes, cpuSeconds: Math.ceil(config.buildTimeoutMs / 1000) },
  });
  logSandbox(log, sandbox);
  const unpacker = createSourceUnpacker({
    sandbox,
    limits: { maxBytes: config.maxSourceBytes, maxFiles: config.maxSourceFiles },
  });
  const compiler = createBuildCompiler({
    store,
    runtimes: await loadRuntimeCatalog(config.runtimes),
    sandbox,
    toolchains: [
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
        ...(config.goNoSumdb ? { noSumCheck: config.goNoSumdb } : {}),
      }),
    ],
    concurrency: config.buildConcurrency,
    queueLimit: config.buildQueue,
    timeoutMs: config.buildTimeoutMs,
    maxArtifactBytes: config.maxArtifactBytes,
    log,
  });
  const metrics = createMetrics();
  const auth = await loadAdminAuth(config);
  const credentials = await loadServerCredentials(config);
  const server = await startServer({ config, store, compiler, log, metrics, auth, credentials });
  const http =
    config.httpListen === "off"
      ? undefined
      : await startHttpServer({
          listen: config.httpListen,
          store,
          metrics,
          log,
          grpcAddress: server.address,
          isServing: () => server.isServing(),
        });
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

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.info({ signal }, "already shutting down");
      return;
    }
    stopping = true;
    log.info({ signal, graceMs: config.shutdownGraceMs }, "shutting down");
    await server.shutdown(config.shutdownGraceMs);
    await http?.close();
    await compiler.close();
    await store.close();
    log.info("stopped");
    log.flush();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
