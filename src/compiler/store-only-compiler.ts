import { Code, PluginError } from "../errors/plugin-error.js";
import { formatBuildKey } from "../model/build-key.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import type { Compiler } from "./compiler.js";

/**
 * A compiler with no toolchains: it answers for what the store already holds
 * (pushed artifacts) and NOT_FOUND for anything it would have to build.
 */
export function createStoreOnlyCompiler(store: ArtifactStore): Compiler {
  return {
    async compile(key, options) {
      const manifest = await store.get(key, options);
      if (manifest) return manifest;
      throw new PluginError(
        Code.NotFound,
        `no artifact for ${formatBuildKey(key)} and this server has no toolchains to build one; push a prebuilt artifact (atomix-plugins push)`,
      );
    },
    async close() {},
  };
}
