import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { PluginRef } from "atomix-plugins-core/model/build-key";
import type { SourceUnpacker } from "./source-unpacker.js";

/** A plugin package, unpacked into a build's work directory. */
export interface FetchedPackage {
  /** The package folder (its package.json at the top). */
  readonly dir: string;
  /** Where it came from, for the manifest: `catalog:counter/1.0.0`, `npm:https://...tgz`. */
  readonly origin: string;
  /** Subresource-integrity string of what was fetched (`sha512-...`). */
  readonly integrity: string;
}

export interface FetchOptions {
  /** Created by the unpacker: the package folder the build works on. */
  readonly destDir: string;
  /** Where the source's bytes land before they are unpacked (a tarball download). */
  readonly scratchDir: string;
  readonly unpacker: SourceUnpacker;
  readonly signal?: AbortSignal;
}

/**
 * Somewhere plugin packages come from. `fetch` answers undefined when the
 * source simply does not have `name@version`, so that the next one is asked;
 * it throws for anything else (unreachable, corrupt, ...).
 */
export interface PluginSource {
  /** Where it is (a directory, a URL), for the operator's logs. */
  readonly description: string;
  /** What it is, for callers, who must not learn server paths: "the source catalog". */
  readonly label: string;
  fetch(plugin: PluginRef, options: FetchOptions): Promise<FetchedPackage | undefined>;
}

/**
 * Asks each source in turn; NOT_FOUND naming the kinds of source looked in
 * (their directories and URLs go to the log, not to the caller).
 */
export async function fetchPlugin(
  sources: readonly PluginSource[],
  plugin: PluginRef,
  options: FetchOptions,
): Promise<FetchedPackage> {
  for (const source of sources) {
    const fetched = await source.fetch(plugin, options);
    if (fetched) return fetched;
  }
  const places = [...new Set(sources.map((source) => source.label))];
  throw new PluginError(
    Code.NotFound,
    `plugin ${plugin.name}@${plugin.version} was found in no source (looked in ${places.length ? places.join("; ") : "nothing: no source is configured"}); add it to a --sources catalog or configure --npm-registry`,
    { detail: `looked in ${sources.map((source) => source.description).join("; ") || "nothing"}` },
  );
}
