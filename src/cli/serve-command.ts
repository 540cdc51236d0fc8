import { join } from "node:path";
import { Command, Option } from "commander";
import pino from "pino";
import { createBuildCompiler } from "../compiler/build-compiler.js";
import { loadRuntimeCatalog } from "../compiler/runtime-catalog.js";
import { createCatalogSource } from "../compiler/sources/catalog-source.js";
import { createNpmRegistrySource } from "../compiler/sources/npm-registry-source.js";
import { createGoToolchain } from "../compiler/toolchains/go/go-toolchain.js";
import { createNodeToolchain } from "../compiler/toolchains/node/node-toolchain.js";
import { DEFAULT_LISTEN, parseServeConfig, SERVE_ENVIRONMENT, type ServeConfig } from "../config.js";
import { startServer } from "../server/server.js";
import { createStore } from "../store/create-store.js";
import { action } from "./cli-common.js";

/** Collects a repeatable flag's values. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

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
      ).default(undefined, "524288"),
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
        "--runtimes <dir>",
        `runtime descriptors, <dir>/<version>/runtime.json; repeatable${envFor("runtimes")}`,
      )
        .argParser(collect)
        .default(undefined, "the bundled examples/runtimes"),
    )
    .addOption(
      new Option(
        "--sources <dir>",
        `plugin source catalog, <dir>/<name>/<version>/; repeatable${envFor("sources")}`,
      )
        .argParser(collect)
        .default(undefined, "the bundled examples/plugins"),
    )
    .addOption(
      new Option("--npm-registry <url>", `fetch plugins from this npm registry too${envFor("npmRegistry")}`),
    )
    .addOption(
      new Option(
        "--go <goroot-or-command>",
        `a Go installation for Go plugins (GOROOT or go binary); repeatable${envFor("goInstallations")}`,
      )
        .argParser(collect)
        .default(undefined, "the go on PATH"),
    )
    .addOption(
      new Option(
        "--go-proxy <GOPROXY>",
        `Go module proxy: off, URLs or directories${envFor("goProxy")}`,
      ).default(undefined, "the bundled examples/goproxy"),
    )
    .addOption(
      new Option("--go-sumdb <GOSUMDB>", `Go checksum database${envFor("goSumdb")}`).default(
        undefined,
        "off",
      ),
    )
    .addOption(new Option("--go-nosumdb <patterns>", `GONOSUMDB for Go builds${envFor("goNoSumdb")}`))
    .addOption(
      new Option("--go-cache <dir>", `GOCACHE and GOMODCACHE of Go builds${envFor("goCacheDir")}`).default(
        undefined,
        "<data>/go-cache",
      ),
    )
    .addOption(
      new Option("--build-concurrency <n>", `builds running at once${envFor("buildConcurrency")}`).default(
        undefined,
        "the number of cores",
      ),
    )
    .addOption(
      new Option(
        "--build-queue <n>",
        `builds waiting before RESOURCE_EXHAUSTED${envFor("buildQueue")}`,
      ).default(undefined, "64"),
    )
    .addOption(
      new Option("--build-timeout <ms>", `time limit of one build${envFor("buildTimeoutMs")}`).default(
        undefined,
        "120000",
      ),
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
      action(async (options: Record<string, string | string[] | undefined>) => {
        const config = parseServeConfig({
          listen: options.listen,
          dataDir: options.data,
          chunkSize: options.chunkSize,
          streamBufferBytes: options.streamBuffer,
          maxArtifactBytes: options.maxArtifactSize,
          pullPolicy: options.pullPolicy,
          runtimes: options.runtimes,
          sources: options.sources,
          npmRegistry: options.npmRegistry,
          goInstallations: options.go,
          goProxy: options.goProxy,
          goSumdb: options.goSumdb,
          goNoSumdb: options.goNosumdb,
          goCacheDir: options.goCache,
          buildConcurrency: options.buildConcurrency,
          buildQueue: options.buildQueue,
          buildTimeoutMs: options.buildTimeout,
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
  const sources = [
    ...config.sources.map((dir) => createCatalogSource(dir)),
    ...(config.npmRegistry ? [createNpmRegistrySource({ url: config.npmRegistry })] : []),
  ];
  const compiler = createBuildCompiler({
    store,
    runtimes: await loadRuntimeCatalog(config.runtimes),
    toolchains: [
      createNodeToolchain({ sources }),
      createGoToolchain({
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
  const server = await startServer({ config, store, compiler, log });

  const stop = async (signal: string) => {
    log.info({ signal, graceMs: config.shutdownGraceMs }, "shutting down");
    await server.shutdown(config.shutdownGraceMs);
    await compiler.close();
    await store.close();
    log.info("stopped");
    log.flush();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
}
