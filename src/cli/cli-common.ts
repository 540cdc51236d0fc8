import { type Command, Option } from "commander";
import { DEFAULT_LISTEN } from "../config.js";
import { Code, codeName, PluginError } from "../errors/plugin-error.js";
import { type BuildKey, parseBuildKey, parsePluginSpec } from "../model/build-key.js";

/** Exit codes, one per class of failure, so scripts can tell them apart. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  failedPrecondition: 4,
  unavailable: 5,
} as const;

export function exitCodeFor(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return EXIT.usage;
    case Code.NotFound:
      return EXIT.notFound;
    case Code.FailedPrecondition:
      return EXIT.failedPrecondition;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return EXIT.unavailable;
    default:
      return EXIT.failure;
  }
}

export const SERVER_ENV = "ATOMIX_PLUGINS_SERVER";

export function serverOption(): Option {
  return new Option("-s, --server <address>", "server host:port").env(SERVER_ENV).default(DEFAULT_LISTEN);
}

/** Adds `--runtime` and `--build`, required. */
export function withRuntimeOptions(command: Command): Command {
  return command
    .requiredOption("-r, --runtime <version>", "runtime release the plugin is built for, e.g. 1.0.0")
    .requiredOption("-b, --build <build_version>", "runtime build, e.g. node20 or go1.19.8");
}

/** The build key named by `name@version` and the runtime flags. */
export function keyFromArgs(spec: string, options: { runtime: string; build: string }): BuildKey {
  const plugin = parsePluginSpec(spec);
  return parseBuildKey({ runtime: { version: options.runtime, buildVersion: options.build }, plugin });
}

/** Prints one line naming the gRPC code and the message, and exits with its class. */
export function fail(error: unknown): never {
  const pluginError = PluginError.from(error);
  process.stderr.write(`atomix-plugins: ${codeName(pluginError.code)}: ${pluginError.message}\n`);
  process.exit(exitCodeFor(pluginError.code));
}

/** Wraps an action so that every error ends in `fail`. */
export function action<Args extends unknown[]>(
  run: (...args: Args) => Promise<void>,
): (...args: Args) => Promise<void> {
  return async (...args: Args) => {
    try {
      await run(...args);
    } catch (error) {
      fail(error);
    }
  };
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
