import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { ANNOTATIONS } from "atomix-plugins-core/model/annotations";
import { DEFAULT_MAX_BUILD_OUTPUT } from "../../build-defaults.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import { fetchPlugin, type PluginSource } from "../../sources/plugin-source.js";
import { createSourceUnpacker, type SourceUnpacker } from "../../sources/source-unpacker.js";
import type { BuildJob, BuildOutput, Toolchain } from "../../toolchain.js";
import { alignDependencies } from "./align-dependencies.js";
import { bundlePlugin, ESBUILD_VERSION } from "./bundle-plugin.js";
import { nodeBuildVersion, nodeTarget, readNodeRuntime } from "./node-runtime-spec.js";
import { checkConfigFiles, checkReservedNames, installSuppliedModules } from "./package-rules.js";
import { readPluginPackage } from "./plugin-package.js";
import { TYPESCRIPT_VERSION, typeCheck, typeCheckConfigPath } from "./type-check.js";
import { verifyBundle } from "./verify-bundle.js";

/** Media type of a Node.js plugin artifact: one ES module. */
export const NODE_PLUGIN_MEDIA_TYPE = "text/javascript";

export interface NodeToolchainOptions {
  /** Where plugin packages come from, asked in order. */
  sources: readonly PluginSource[];
  /** The sandbox every step that reads the package runs in. */
  sandbox: Sandbox;
  /** Unpacks sources into the build, within the source limits; default limits in the sandbox if unset. */
  unpacker?: SourceUnpacker;
  /** Time the sandboxed load of a bundle may take; 10 s by default. */
  verifyTimeoutMs?: number;
  /** Time the type check and the bundle may each take; 60 s by default. */
  stepTimeoutMs?: number;
  /** Largest bundle (--max-build-output); 128 MiB by default. */
  maxOutputBytes?: number;
}

/**
 * Builds Node.js plugins: fetch and unpack the package (sandbox) → check its
 * rules (no link, import or config pointing outside it) → align its
 * dependencies with the modules the runtime supplies → type-check it against
 * the runtime's declarations and bundle it into one ES module for the
 * runtime's Node.js release, side by side (sandbox) → load it and check the
 * export the runtime calls (sandbox).
 */
export function createNodeToolchain(options: NodeToolchainOptions): Toolchain {
  const verifyTimeoutMs = options.verifyTimeoutMs ?? 10_000;
  const stepTimeoutMs = options.stepTimeoutMs ?? 60_000;
  const { sandbox } = options;
  const unpacker = options.unpacker ?? createSourceUnpacker({ sandbox });
  return {
    name: "node",
    buildVersionFor: nodeBuildVersion,
    async build(job: BuildJob): Promise<BuildOutput> {
      const { key, workDir } = job;
      const runtime = await readNodeRuntime(job.runtime);
      const target = nodeTarget(runtime, key.runtime.buildVersion);
      const scratchDir = join(workDir, "download");
      await mkdir(scratchDir, { recursive: true });
      const fetched = await fetchPlugin(options.sources, key.plugin, {
        destDir: join(workDir, "package"),
        scratchDir,
        unpacker,
        signal: job.signal,
      });
      await rm(scratchDir, { recursive: true, force: true });
      const pkg = await readPluginPackage(fetched.dir, key.plugin);
      await alignDependencies(pkg, runtime);
      await checkReservedNames(pkg);
      await checkConfigFiles(
        pkg,
        runtime.modules.map((module) => module.name),
      );
      job.signal.throwIfAborted();

      await installSuppliedModules(pkg, runtime.modules);
      const hasOwnConfig =
        (await stat(join(pkg.dir, "tsconfig.json")).catch(() => undefined))?.isFile() ?? false;
      // Both only read the package: they run side by side, and the first
      // failure stops the other.
      const steps = new AbortController();
      const stopOnAbort = () => steps.abort(job.signal.reason);
      job.signal.addEventListener("abort", stopOnAbort, { once: true });
      const outDir = join(workDir, "out");
      await mkdir(outDir);
      let bundle: string;
      try {
        const checked = typeCheck({ pkg, runtime, sandbox, signal: steps.signal, timeoutMs: stepTimeoutMs });
        const bundled = bundlePlugin({
          pkg,
          runtime,
          target,
          sandbox,
          tsconfig: hasOwnConfig ? join(pkg.dir, "tsconfig.json") : typeCheckConfigPath(pkg),
          outfile: join(outDir, "plugin.mjs"),
          signal: steps.signal,
          timeoutMs: stepTimeoutMs,
          maxBytes: options.maxOutputBytes ?? DEFAULT_MAX_BUILD_OUTPUT,
        });
        let firstFailure: { error: unknown } | undefined;
        const failFast = (error: unknown): never => {
          firstFailure ??= { error };
          steps.abort(error);
          throw error;
        };
        const [, bundled$] = await Promise.allSettled([checked.catch(failFast), bundled.catch(failFast)]);
        if (firstFailure) throw firstFailure.error;
        if (bundled$.status === "rejected") throw bundled$.reason;
        const bundledBytes = bundled$.value;
        bundle = bundledBytes;
      } finally {
        job.signal.removeEventListener("abort", stopOnAbort);
      }
      job.signal.throwIfAborted();
      await verifyBundle({
        bundle,
        runtime,
        dir: join(workDir, "verify"),
        name: `${pkg.name}@${pkg.version}`,
        sandbox,
        signal: job.signal,
        timeoutMs: verifyTimeoutMs,
      });

      return {
        artifactPath: bundle,
        mediaType: NODE_PLUGIN_MEDIA_TYPE,
        annotations: {
          [ANNOTATIONS.toolchainVersion]: `typescript ${TYPESCRIPT_VERSION}, esbuild ${ESBUILD_VERSION}, target ${target}, verified on node ${process.versions.node}`,
          [ANNOTATIONS.source]: fetched.origin,
          [ANNOTATIONS.sourceIntegrity]: fetched.integrity,
          "dev.atomix.runtime.modules": runtime.modules.map((m) => `${m.name}@${m.version}`).join(","),
        },
      };
    },
  };
}
