import { Command, Option } from "commander";
import pino from "pino";
import { createStoreOnlyCompiler } from "../compiler/store-only-compiler.js";
import { DEFAULT_LISTEN, parseServeConfig, SERVE_ENVIRONMENT, type ServeConfig } from "../config.js";
import { startServer } from "../server/server.js";
import { createStore } from "../store/create-store.js";
import { action } from "./cli-common.js";

function envFor(option: keyof ServeConfig): string {
  const variable = Object.entries(SERVE_ENVIRONMENT).find(([, o]) => o === option)?.[0];
  return variable ? ` [env ${variable}]` : "";
}

export function serveCommand(): Command {
  return new Command("serve")
    .description("run the plugin registry and compiler gRPC server")
    .addOption(
      new Option("-l, --listen <host:port>", `address to listen on${envFor("listen")}`).default(
        undefined,
        DEFAULT_LISTEN,
      ),
    )
    .addOption(
      new Option("-d, --data <dir>", `data directory of the embedded store${envFor("dataDir")}`).default(
        undefined,
        "./data",
      ),
    )
    .addOption(
      new Option("--chunk-size <bytes>", `bytes per pull message${envFor("chunkSize")}`).default(
        undefined,
        "262144",
      ),
    )
    .addOption(
      new Option(
        "--stream-buffer <bytes>",
        `bytes in flight per pull stream${envFor("streamBufferBytes")}`,
      ).default(undefined, "1048576"),
    )
    .addOption(
      new Option(
        "--max-artifact-size <bytes>",
        `largest artifact accepted${envFor("maxArtifactBytes")}`,
      ).default(undefined, "1073741824"),
    )
    .addOption(
      new Option("--pull-policy <policy>", `on a pull miss: build or never${envFor("pullPolicy")}`).choices([
        "build",
        "never",
      ]),
    )
    .addOption(
      new Option(
        "--shutdown-grace <ms>",
        `grace for in-flight calls on SIGTERM${envFor("shutdownGraceMs")}`,
      ).default(undefined, "10000"),
    )
    .addOption(new Option("--log-level <level>", `log level${envFor("logLevel")}`).default(undefined, "info"))
    .addHelpText(
      "after",
      "\nExamples:\n  atomix-plugins serve\n  atomix-plugins serve --listen 0.0.0.0:5679 --data /var/lib/atomix-plugins",
    )
    .action(
      action(async (options: Record<string, string | undefined>) => {
        const config = parseServeConfig({
          listen: options.listen,
          dataDir: options.data,
          chunkSize: options.chunkSize,
          streamBufferBytes: options.streamBuffer,
          maxArtifactBytes: options.maxArtifactSize,
          pullPolicy: options.pullPolicy,
          shutdownGraceMs: options.shutdownGrace,
          logLevel: options.logLevel,
        });
        await serve(config);
      }),
    );
}

/** Runs the server until SIGTERM or SIGINT, then shuts down gracefully and exits 0. */
export async function serve(config: ServeConfig): Promise<void> {
  const log = pino({ level: config.logLevel, base: { service: "atomix-plugins" } });
  const store = await createStore({ kind: "fs", dir: config.dataDir });
  const compiler = createStoreOnlyCompiler(store);
  const server = await startServer({ config, store, compiler, log });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.info({ signal }, "already shutting down");
      return;
    }
    stopping = true;
    log.info({ signal, graceMs: config.shutdownGraceMs }, "shutting down");
    await server.shutdown(config.shutdownGraceMs);
    await compiler.close();
    await store.close();
    log.info("stopped");
    log.flush();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
