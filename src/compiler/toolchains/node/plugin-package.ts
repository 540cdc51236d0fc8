import { readFile, stat } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { PluginRef } from "atomix-plugins-core/model/build-key";

/** Largest package.json or tsconfig the server parses: they are read in its own process. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/** The parts of a plugin's package.json the build reads. */
export interface PluginPackage {
  readonly dir: string;
  readonly name: string;
  readonly version: string;
  /** Absolute path of the module the bundle starts from. */
  readonly entry: string;
  readonly dependencies: Readonly<Record<string, string>>;
  readonly peerDependencies: Readonly<Record<string, string>>;
  readonly optionalDependencies: Readonly<Record<string, string>>;
}

interface PackageJson {
  name?: unknown;
  version?: unknown;
  exports?: unknown;
  module?: unknown;
  main?: unknown;
  source?: unknown;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

/** Entry candidates when package.json names none: sources first, then JavaScript. */
const DEFAULT_ENTRIES = ["src/index.ts", "index.ts", "src/index.mts", "index.mjs", "index.js"];

/**
 * Reads the fetched package and checks that it is the one asked for (a
 * catalog folder holding another version is a catalog mistake). The entry is
 * `source` (TypeScript sources win), then `exports["."]` (import/default),
 * `module`, `main`, then the usual index files.
 */
export async function readPluginPackage(dir: string, plugin: PluginRef): Promise<PluginPackage> {
  // Parsed in the server's process: a size first, so a huge one costs nothing.
  const size = (await stat(join(dir, "package.json")).catch(() => undefined))?.size ?? 0;
  if (size > MAX_CONFIG_BYTES) {
    throw new PluginError(
      Code.FailedPrecondition,
      `plugin ${plugin.name}@${plugin.version} has a package.json of ${size} bytes, over ${MAX_CONFIG_BYTES}`,
    );
  }
  let pkg: PackageJson;
  try {
    pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8")) as PackageJson;
  } catch (error) {
    throw new PluginError(
      Code.FailedPrecondition,
      `plugin ${plugin.name}@${plugin.version} has no valid package.json: ${(error as Error).message}`,
      { cause: error },
    );
  }
  if (!pkg || typeof pkg !== "object" || Array.isArray(pkg)) {
    throw new PluginError(
      Code.FailedPrecondition,
      `plugin ${plugin.name}@${plugin.version} has no valid package.json: it is not a JSON object`,
    );
  }
  if (pkg.name !== plugin.name || pkg.version !== plugin.version) {
    throw new PluginError(
      Code.FailedPrecondition,
      `the source of ${plugin.name}@${plugin.version} holds a package.json for ${String(pkg.name)}@${String(pkg.version)}; fix the source catalog`,
    );
  }
  const candidates = [pkg.source, exportEntry(pkg.exports), pkg.module, pkg.main, ...DEFAULT_ENTRIES];
  let entry: string | undefined;
  for (const candidate of candidates) {
    if (typeof candidate !== "string") continue;
    const path = resolve(dir, candidate);
    if (relative(dir, path).startsWith("..")) continue;
    if ((await stat(path).catch(() => undefined))?.isFile()) {
      entry = path;
      break;
    }
  }
  if (!entry) {
    throw new PluginError(
      Code.FailedPrecondition,
      `plugin ${plugin.name}@${plugin.version} has no entry module: set "source", "exports", "module" or "main" in its package.json, or add src/index.ts`,
    );
  }
  return {
    dir,
    name: plugin.name,
    version: plugin.version,
    entry,
    dependencies: pkg.dependencies ?? {},
    peerDependencies: pkg.peerDependencies ?? {},
    optionalDependencies: pkg.optionalDependencies ?? {},
  };
}

function exportEntry(exports: unknown): unknown {
  if (typeof exports === "string") return exports;
  if (!exports || typeof exports !== "object") return undefined;
  const record = exports as Record<string, unknown>;
  const root = "." in record ? record["."] : record;
  if (typeof root === "string") return root;
  if (root && typeof root === "object") {
    const conditions = root as Record<string, unknown>;
    for (const condition of ["source", "import", "node", "default"]) {
      const value = conditions[condition];
      if (typeof value === "string") return value;
    }
  }
  return undefined;
}
