import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest, Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import type { ListFilter, PutOptions } from "./artifact-store.js";

/** Checks shared by every store: what `put` promised its caller. */
export function checkPut(
  key: BuildKey,
  written: { digest: Digest; size: number },
  options: PutOptions,
): void {
  if (options.expectedDigest && options.expectedDigest !== written.digest) {
    throw new PluginError(
      Code.InvalidArgument,
      `the bytes received for ${formatBuildKey(key)} hash to ${written.digest}, not the expected ${options.expectedDigest}`,
    );
  }
  if (options.expectedSize !== undefined && options.expectedSize !== written.size) {
    throw new PluginError(
      Code.InvalidArgument,
      `received ${written.size} bytes for ${formatBuildKey(key)}, expected ${options.expectedSize}`,
    );
  }
}

export function outOfRange(offset: number, manifest: ArtifactManifest): PluginError {
  return new PluginError(
    Code.OutOfRange,
    `offset ${offset} is past the end of ${formatBuildKey(manifest.key)} (${manifest.size} bytes)`,
  );
}

export function matchesFilter(manifest: ArtifactManifest, filter: ListFilter | undefined): boolean {
  if (filter?.pluginName && manifest.key.plugin.name !== filter.pluginName) return false;
  if (filter?.runtimeVersion && manifest.key.runtime.version !== filter.runtimeVersion) return false;
  return true;
}
