import { build, version as esbuildVersion } from "esbuild";
import { Code, PluginError } from "../../../errors/plugin-error.js";
import type { NodeRuntime } from "./node-runtime-spec.js";
import type { PluginPackage } from "./plugin-package.js";

export const ESBUILD_VERSION = esbuildVersion;

/**
 * Bundles the plugin into one ESM module for the runtime's Node.js release.
 * The runtime's modules (and their subpaths) stay imports, Node built-ins
 * stay imports, everything else is inlined. Deterministic: esbuild writes
 * paths relative to the package folder, no timestamps and no source maps, so
 * equal inputs give equal bytes.
 */
export async function bundlePlugin(options: {
  pkg: PluginPackage;
  runtime: NodeRuntime;
  target: string;
}): Promise<Uint8Array> {
  const { pkg, runtime, target } = options;
  try {
    const result = await build({
      entryPoints: [pkg.entry],
      absWorkingDir: pkg.dir,
      bundle: true,
      format: "esm",
      platform: "node",
      target: [target],
      external: runtime.modules.flatMap((module) => [module.name, `${module.name}/*`]),
      write: false,
      outfile: "plugin.mjs",
      sourcemap: false,
      charset: "utf8",
      legalComments: "eof",
      logLevel: "silent",
    });
    const output = result.outputFiles[0];
    if (!output) throw new Error("esbuild produced no output");
    return output.contents;
  } catch (error) {
    const errors = (
      error as { errors?: { text: string; location?: { file: string; line: number } | null }[] }
    ).errors;
    if (!errors) throw error;
    const shown = errors
      .slice(0, 5)
      .map((e) => (e.location ? `${e.location.file}:${e.location.line}: ${e.text}` : e.text));
    throw new PluginError(
      Code.FailedPrecondition,
      `${pkg.name}@${pkg.version} does not bundle for ${target}: ${shown.join("; ")}`,
      { cause: error },
    );
  }
}
