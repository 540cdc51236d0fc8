import { cp, lstat, readdir, readFile, rm, stat } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { packageFolder } from "atomix-plugins-core/model/package-name";
import { MAX_CONFIG_BYTES, type PluginPackage } from "./plugin-package.js";

/**
 * Rules a plugin package must follow, checked by the server on the build's
 * copy of the package whether or not the sandbox is on: a build reads only
 * the package and the modules the runtime supplies, and a message never
 * quotes a file outside the package.
 */

/** What a message says instead of a diagnostic about a file outside the package. */
export const OUTSIDE_FILE =
  "a file outside the package was referenced (refused: imports must stay inside the package)";

/** A path as a tool reports it relative to the package folder: does it leave the package? */
export function isOutside(path: string): boolean {
  const normalized = path.replaceAll("\\", "/");
  return isAbsolute(normalized) || normalized === ".." || normalized.startsWith("../");
}

/** TypeScript configuration files esbuild or tsc might read. */
const CONFIG_FILE = /^(tsconfig(\..+)?|jsconfig)\.json$/;

/**
 * Every tsconfig/jsconfig in the package (supplied modules aside) may only
 * point inside the package: `extends`, `baseUrl`, `paths`, `rootDirs`,
 * `typeRoots` and `references`. A config that does not parse is refused too:
 * esbuild would read it.
 */
export async function checkConfigFiles(pkg: PluginPackage, supplied: readonly string[]): Promise<void> {
  const entries = await readdir(pkg.dir, { recursive: true, withFileTypes: true });
  for (const entry of entries) {
    if (!entry.isFile() || !CONFIG_FILE.test(entry.name)) continue;
    const file = join(entry.parentPath, entry.name);
    const name = relative(pkg.dir, file);
    if (supplied.some((module) => name.startsWith(`node_modules/${module}/`))) continue;
    if ((await stat(file)).size > MAX_CONFIG_BYTES) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${name} is larger than ${MAX_CONFIG_BYTES} bytes; a TypeScript configuration is a small file`,
      );
    }
    let config: Record<string, unknown>;
    try {
      config = parseJsonc(await readFile(file, "utf8")) as Record<string, unknown>;
    } catch (error) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${name} is not valid JSON: ${(error as Error).message}`,
      );
    }
    if (!isObject(config)) throw new PluginError(Code.FailedPrecondition, `${name} is not a JSON object`);
    const base = dirname(file);
    const options = (isObject(config.compilerOptions) ? config.compilerOptions : {}) as Record<
      string,
      unknown
    >;
    const checks: [string, unknown][] = [
      ...strings(config.extends).map((path): [string, unknown] => ["extends", path]),
      ["compilerOptions.baseUrl", options.baseUrl],
      ...strings(options.rootDirs).map((path): [string, unknown] => ["compilerOptions.rootDirs", path]),
      ...strings(options.typeRoots).map((path): [string, unknown] => ["compilerOptions.typeRoots", path]),
      ...(Array.isArray(config.references) ? config.references : []).map((reference): [string, unknown] => [
        "references",
        (reference as { path?: unknown })?.path,
      ]),
    ];
    const pathsBase = typeof options.baseUrl === "string" ? resolve(base, options.baseUrl) : base;
    for (const targets of Object.values(isObject(options.paths) ? options.paths : {})) {
      for (const target of strings(targets))
        checks.push(["compilerOptions.paths", resolve(pathsBase, target)]);
    }
    for (const [field, value] of checks) {
      if (typeof value !== "string") continue;
      const bare = field === "extends" && !value.startsWith(".") && !isAbsolute(value);
      // `extends: "@tsconfig/node20/tsconfig.json"` is a package: it must ship inside this one.
      const target = bare ? join(pkg.dir, "node_modules", value) : resolve(base, value);
      if (isOutside(relative(pkg.dir, target))) {
        throw new PluginError(
          Code.FailedPrecondition,
          `${name}: ${field} points outside the package (refused: a build reads only the package and the modules the runtime supplies)`,
        );
      }
    }
  }
}

/** Names the build writes into the package: a package that ships one is refused, not overwritten. */
export const RESERVED_NAMES = ["tsconfig.atomix-check.json", "__atomix_export_check__.ts"];

export async function checkReservedNames(pkg: PluginPackage): Promise<void> {
  for (const name of RESERVED_NAMES) {
    if (
      await lstat(join(pkg.dir, name)).then(
        () => true,
        () => false,
      )
    ) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${name}: the package uses a name reserved for the build; rename it`,
      );
    }
  }
}

/**
 * The runtime's copies of its modules replace whatever the package shipped
 * under their names: the plugin is checked against what it will really meet.
 */
export async function installSuppliedModules(
  pkg: PluginPackage,
  modules: readonly { name: string; dir: string }[],
): Promise<void> {
  for (const module of modules) {
    const into = packageFolder(join(pkg.dir, "node_modules"), module.name);
    try {
      await rm(into, { recursive: true, force: true });
      await cp(module.dir, into, { recursive: true });
    } catch (error) {
      throw new PluginError(
        Code.FailedPrecondition,
        `node_modules/${module.name}: the package's node_modules cannot take the runtime's ${module.name} (${(error as NodeJS.ErrnoException).code ?? "error"}); node_modules must be a folder`,
      );
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function strings(value: unknown): string[] {
  if (typeof value === "string") return [value];
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : [];
}

/** JSON with comments and trailing commas, as TypeScript reads its configuration. */
export function parseJsonc(text: string): unknown {
  // Slices, not characters, are collected: a config is read in the server's
  // process, so this stays linear in time and memory whatever the input.
  const parts: string[] = [];
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x2f /* / */ && text.charCodeAt(i + 1) === 0x2f) {
      parts.push(text.slice(from, i));
      const end = text.indexOf("\n", i);
      i = end < 0 ? text.length : end - 1;
      from = i + 1;
    } else if (c === 0x2f && text.charCodeAt(i + 1) === 0x2a /* * */) {
      parts.push(text.slice(from, i));
      const end = text.indexOf("*/", i + 2);
      if (end < 0) throw new Error("unterminated comment");
      i = end + 1;
      from = i + 1;
    }
  }
  parts.push(text.slice(from));
  return JSON.parse(parts.join("").replace(/,(\s*[}\]])/g, "$1"));
}
