import { createRequire } from "node:module";
import { dirname } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { nodeProgram } from "../../sandbox/node-program.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import { stepReports } from "../../sandbox/step-report.js";
import type { NodeRuntime } from "./node-runtime-spec.js";
import { isOutside, OUTSIDE_FILE } from "./package-rules.js";
import type { PluginPackage } from "./plugin-package.js";

// From its package.json: esbuild runs in the sandboxed bundle step, and
// loading its JavaScript API into the server only to read the version
// cost memory that serves no call.
export const ESBUILD_VERSION = (createRequire(import.meta.url)("esbuild/package.json") as { version: string })
  .version;

const MAX_ERRORS = 5;

/**
 * Bundles the plugin into one ES module (written to `outfile`, whose path is returned) for the runtime's Node.js release,
 * with esbuild in the sandbox. The runtime's modules (and their subpaths)
 * stay imports, Node built-ins stay imports, everything else is inlined, and
 * everything inlined must come from inside the package: a bundle that read
 * any other file is refused, whatever resolved it (an absolute or `../`
 * import, a tsconfig path, a link). Deterministic: esbuild writes paths
 * relative to the package folder, no timestamps and no source maps.
 */
export async function bundlePlugin(options: {
  pkg: PluginPackage;
  runtime: NodeRuntime;
  target: string;
  tsconfig: string;
  outfile: string;
  sandbox: Sandbox;
  signal: AbortSignal;
  timeoutMs: number;
  /** Largest bundle (--max-build-output): refused before it is written. */
  maxBytes: number;
}): Promise<string> {
  const { pkg, runtime, target } = options;
  const what = `${pkg.name}@${pkg.version}`;
  const request = {
    entry: pkg.entry,
    dir: pkg.dir,
    outfile: options.outfile,
    target,
    external: runtime.modules.flatMap((module) => [module.name, `${module.name}/*`]),
    tsconfig: options.tsconfig,
    maxBytes: options.maxBytes,
  };
  const program = nodeProgram(
    new URL("./bundle-step.js", import.meta.url),
    [JSON.stringify(request)],
    "esbuild",
  );
  const result = await options.sandbox.run({
    ...program,
    cwd: pkg.dir,
    readable: [...program.readable, pkg.dir],
    writable: [dirname(options.outfile)],
    limits: { fileBytes: options.maxBytes },
    signal: options.signal,
    timeoutMs: options.timeoutMs,
    maxOutputBytes: 256 * 1024,
  });
  if (result.timedOut) {
    throw new PluginError(
      Code.DeadlineExceeded,
      `bundling ${what} took longer than ${options.timeoutMs} ms and was stopped`,
    );
  }
  const report = stepReports(result.stdout).at(-1) as
    | { ok?: boolean; inputs?: string[]; errors?: { text: string; file?: string; line?: number }[] }
    | undefined;
  if (report?.ok) {
    const outside = (report.inputs ?? []).filter((input) => isOutside(input));
    if (outside.length > 0) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${what} does not bundle for ${target}: it imports ${outside.length} ${outside.length === 1 ? "file" : "files"} from outside the package; imports must resolve inside the package or to a module the runtime supplies`,
      );
    }
    return options.outfile;
  }
  if (report?.errors) {
    const shown = report.errors.slice(0, MAX_ERRORS).map((error) =>
      // A message about a file outside the package may quote it: not shown.
      (error.file && isOutside(error.file)) || error.text.startsWith("outside the package:")
        ? OUTSIDE_FILE
        : error.file
          ? `${error.file}:${error.line ?? 0}: ${error.text}`
          : error.text,
    );
    throw new PluginError(
      Code.FailedPrecondition,
      `${what} does not bundle for ${target}: ${[...new Set(shown)].join("; ")}`,
    );
  }
  throw new PluginError(
    Code.FailedPrecondition,
    `${what} does not bundle for ${target}: ${result.outOfMemory ? "esbuild ran out of memory" : `esbuild stopped (exit ${result.exitCode ?? result.signal}) without a report`}`,
  );
}
