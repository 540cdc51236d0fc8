import { Command, Option } from "commander";
import pino from "pino";
import { createStoreOnlyCompiler } from "../compiler/store-only-compiler.js";
import { parseServeConfig, SERVE_ENVIRONMENT, type ServeConfig, serveConfigSchema } from "../config.js";
import { loadAdminAuth, loadServerCredentials } from "../server/credentials.js";
import { createMetrics } from "../server/metrics.js";
import { startServer } from "../server/server.js";
import { createStore } from "../store/create-store.js";
import { startHttpServer } from "../web/http-server.js";
import { action } from "./cli-common.js";

/** commander's camel-cased key of a flag: "--chunk-size <bytes>" → "chunkSize". */
function flagKey(flags: string): string {
  const long = /--([a-z-]+)/.exec(flags)?.[1] ?? "";
  return long.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function envFor(option: keyof ServeConfig): string {
  const variable = Object.entries(SERVE_ENVIRONMENT).find(([, o]) => o === option)?.[0];
  return variable ? ` [env ${variable}]` : "";
}

/** One flag per config option; the config schema owns the defaults, the help text shows them. */
const SERVE_FLAGS: [flags: string, option: keyof ServeConfig, what: string][] = [
  ["-l, --listen <host:port>", "listen", "gRPC address to listen on"],
  ["--http <host:port|off>", "httpListen", "catalog page, /metrics and /healthz address"],
  ["-d, --data <dir>", "dataDir", "data directory of the embedded store"],
  ["--chunk-size <bytes>", "chunkSize", "bytes per pull message"],
  ["--stream-buffer <bytes>", "streamBufferBytes", "bytes in flight per pull stream"],
  ["--max-artifact-size <bytes>", "maxArtifactBytes", "largest artifact accepted"],
  ["--pull-policy <build|never>", "pullPolicy", "on a pull miss: build it, or answer NOT_FOUND"],
  ["--shutdown-grace <ms>", "shutdownGraceMs", "grace for in-flight calls after SIGTERM"],
  ["--tls-cert <file>", "tlsCert", "PEM certificate chain: serve gRPC over TLS"],
  ["--tls-key <file>", "tlsKey", "PEM private key of --tls-cert"],
  ["--tls-client-ca <file>", "tlsClientCa", "PEM CA bundle: require client certificates (mutual TLS)"],
  [
    "--admin-token-file <file>",
    "adminTokenFile",
    "token that push, rm and gc must present (or ATOMIX_PLUGINS_ADMIN_TOKEN)",
  ],
  ["--log-level <level>", "logLevel", "log level"],
];

export function serveCommand(): Command {
  const defaults = serveConfigSchema.parse({});
  const command = new Command("serve").description("run the plugin registry and compiler gRPC server");
  for (const [flags, option, what] of SERVE_FLAGS) {
    command.addOption(
      new Option(
        flags,
        `${what}${defaults[option] === undefined ? "" : ` (default ${String(defaults[option])})`}${envFor(option)}`,
      ).argParser((v) => v),
    );
  }
  return command
    .addHelpText(
      "after",
      "\nExamples:\n  atomix-plugins serve\n  atomix-plugins serve --listen 0.0.0.0:5679 --data /var/lib/atomix-plugins",
    )
    .action(
      action(async (options: Record<string, string | undefined>) => {
        const config = parseServeConfig(
          Object.fromEntries(SERVE_FLAGS.map(([flags, option]) => [option, options[flagKey(flags)]])),
        );
        await serve(config);
      }),
    );
}

/** Runs the server until SIGTERM or SIGINT, then shuts down gracefully and exits 0. */
export async function serve(config: ServeConfig): Promise<void> {
  const log = pino({ level: config.logLevel, base: { service: "atomix-plugins" } });
  const store = await createStore({ kind: "fs", dir: config.dataDir });
  const compiler = createStoreOnlyCompiler(store);
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
