import { cp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fetchPlugin, type PluginSource } from "../../sources/plugin-source.js";
import { ANNOTATIONS, type BuildJob, type BuildOutput, type Toolchain } from "../../toolchain.js";
import { alignDependencies } from "./align-dependencies.js";
import { bundlePlugin, ESBUILD_VERSION } from "./bundle-plugin.js";
import { nodeTarget, readNodeRuntime } from "./node-runtime-spec.js";
import { readPluginPackage } from "./plugin-package.js";
import { TYPESCRIPT_VERSION, typeCheck } from "./type-check.js";
import { verifyBundle } from "./verify-bundle.js";

/** Media type of a Node.js plugin artifact: one ES module. */
export const NODE_PLUGIN_MEDIA_TYPE = "text/javascript";

export interface NodeToolchainOptions {
  /** Where plugin packages come from, asked in order. */
  sources: readonly PluginSource[];
  /** Time the sandboxed load of a bundle may take; 10 s by default. */
  verifyTimeoutMs?: number;
}

/**
 * Builds Node.js plugins: fetch the package → align its dependencies with
 * the modules the runtime supplies → type-check it against the runtime's
 * declarations → bundle it into one ES module for the runtime's Node.js
 * release → load it in a sandbox and check the export the runtime calls.
 */
export function createNodeToolchain(options: NodeToolchainOptions): Toolchain {
  const verifyTimeoutMs = options.verifyTimeoutMs ?? 10_000;
  return {
    name: "node",
    async build(job: BuildJob): Promise<BuildOutput> {
      const { key, signal, workDir } = job;
      const runtime = await readNodeRuntime(job.runtime);
      const target = nodeTarget(runtime, key.runtime.buildVersion);
      const fetched = await fetchPlugin(options.sources, key.plugin, {
        destDir: join(workDir, "package"),
        signal,
      });
      const pkg = await readPluginPackage(fetched.dir, key.plugin);
      await alignDependencies(pkg, runtime);
      signal.throwIfAborted();

      // The runtime's copies of its modules replace whatever the package
      // shipped: the plugin is checked against what it will really meet.
      for (const module of runtime.modules) {
        const into = join(pkg.dir, "node_modules", module.name);
        await rm(into, { recursive: true, force: true });
        await cp(module.dir, into, { recursive: true });
      }
      await typeCheck({ pkg, runtime, signal, timeoutMs: 60_000 });
      const bundle = await bundlePlugin({ pkg, runtime, target });
      signal.throwIfAborted();
      await verifyBundle({
        bundle,
        runtime,
        dir: join(workDir, "verify"),
        name: `${pkg.name}@${pkg.version}`,
        signal,
        timeoutMs: verifyTimeoutMs,
      });

      const artifactPath = join(workDir, "plugin.mjs");
      await writeFile(artifactPath, bundle);
      return {
        artifactPath,
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
