import { format } from "node:util";
import { setLogger } from "@grpc/grpc-js";
import { Command, Option } from "commander";
import { parseServeConfig, SERVE_OPTIONS, type ServeConfig, serveConfigSchema } from "../config.js";
import { serviceLog, startService } from "../start-service.js";
import { action } from "./cli-common.js";

type ServeFlag = (typeof SERVE_OPTIONS)[number] & { flag: string };

/** The options a flag sets (secrets have none); config.ts defines them, with their text and defaults. */
const SERVE_FLAGS: ServeFlag[] = SERVE_OPTIONS.filter(
  (option): option is ServeFlag => option.flag !== undefined,
);

/** commander's camel-cased key of a flag: "--chunk-size <bytes>" → "chunkSize". */
function flagKey(flags: string): string {
  const long = /--([a-z-]+)/.exec(flags)?.[1] ?? "";
  return long.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function helpFor(flag: ServeFlag, defaults: ServeConfig): string {
  const value = flag.defaultText ?? defaults[flag.option];
  return `${flag.what}${value === undefined ? "" : ` (default ${String(value)})`} [env ${flag.env}]`;
}

export function serveCommand(): Command {
  const defaults = serveConfigSchema.parse({});
  const command = new Command("serve").description("run the plugin registry and compiler gRPC server");
  for (const flag of SERVE_FLAGS) {
    const option = new Option(flag.flag, helpFor(flag, defaults));
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
          Object.fromEntries(SERVE_FLAGS.map((flag) => [flag.option, options[flagKey(flag.flag)]])),
          process.env,
          (option) => SERVE_FLAGS.find((flag) => flag.option === option)?.flag.split(" ")[0],
        );
        await serve(config);
      }),
    );
}

/** Runs the server until SIGTERM or SIGINT, then shuts down gracefully and exits 0. */
export async function serve(config: ServeConfig): Promise<void> {
  const log = serviceLog(config);
  // grpc-js's own messages become log lines like ours, not raw text on stderr.
  setLogger({
    error: (...parts: unknown[]) => log.warn({ grpc: format(...parts) }, "grpc-js"),
    info: (...parts: unknown[]) => log.debug({ grpc: format(...parts) }, "grpc-js"),
    debug: (...parts: unknown[]) => log.trace({ grpc: format(...parts) }, "grpc-js"),
  });
  const service = await startService(config, { log });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.info({ signal }, "already shutting down");
      return;
    }
    stopping = true;
    log.info({ signal, graceMs: config.shutdownGraceMs }, "shutting down");
    await service.close(config.shutdownGraceMs);
    log.info("stopped");
    log.flush();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
