import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import semver from "semver";
import { z } from "zod";
import type { RuntimeDescriptor } from "../compiler/toolchain.js";

/** The runtime releases the compiler knows, by version. */
export interface RuntimeCatalog {
  /**
   * The descriptor of runtime `version`; NOT_FOUND listing the known
   * versions. A catalog over a shared store looks there first, so it may
   * answer later.
   */
  get(version: string): RuntimeDescriptor | Promise<RuntimeDescriptor>;
}

/** A catalog read from directories once: it knows all its descriptors up front. */
export interface DirectoryRuntimeCatalog extends RuntimeCatalog {
  get(version: string): RuntimeDescriptor;
  list(): RuntimeDescriptor[];
}

const descriptorSchema = z.looseObject({ toolchain: z.string().min(1) });

/**
 * Reads `<dir>/<version>/runtime.json` from every directory, once: runtime
 * releases are immutable, and a descriptor that does not parse should stop
 * the server at start, not fail builds later. A version found in two
 * directories is an error rather than a silent choice.
 */
export async function loadRuntimeCatalog(dirs: readonly string[]): Promise<DirectoryRuntimeCatalog> {
  const byVersion = new Map<string, RuntimeDescriptor>();
  for (const root of dirs.map((dir) => resolve(dir))) {
    let entries: string[];
    try {
      entries = (await readdir(root, { withFileTypes: true }))
        .filter((entry) => entry.isDirectory())
        .map((entry) => entry.name);
    } catch (error) {
      throw PluginError.from(error, `runtimes directory ${root}`);
    }
    for (const version of entries.sort()) {
      const dir = join(root, version);
      const file = join(dir, "runtime.json");
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw PluginError.from(error, file);
      }
      const bare = version.startsWith("v") ? version.slice(1) : version;
      if (semver.valid(bare) !== bare) {
        throw new PluginError(
          Code.FailedPrecondition,
          `${dir}: a runtime directory must be named by its version`,
        );
      }
      const parsed = parseRuntimeDescriptor(text, file);
      const existing = byVersion.get(version);
      if (existing) {
        throw new PluginError(
          Code.FailedPrecondition,
          `runtime ${version} is described twice: in ${existing.dir} and ${dir}`,
        );
      }
      byVersion.set(version, { version, dir, ...parsed });
    }
  }
  const sorted = () =>
    [...byVersion.values()].sort((a, b) =>
      semver.compare(a.version.replace(/^v/, ""), b.version.replace(/^v/, "")),
    );
  return {
    get(version) {
      const descriptor = byVersion.get(version);
      if (descriptor) return descriptor;
      const known = sorted().map((d) => d.version);
      throw new PluginError(
        Code.NotFound,
        `runtime ${version} is unknown to this server; available runtimes: ${known.length ? known.join(", ") : "none (add a descriptor with --runtimes DIR)"}`,
      );
    },
    list: sorted,
  };
}

/**
 * Parses the text of a runtime.json: a JSON object naming its `toolchain`;
 * the rest is the toolchain's to check. FAILED_PRECONDITION naming `file`.
 */
export function parseRuntimeDescriptor(
  text: string,
  file: string,
): { toolchain: string; spec: Record<string, unknown> } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new PluginError(Code.FailedPrecondition, `${file}: ${(error as Error).message}`);
  }
  const parsed = descriptorSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "$"}: ${issue.message}`);
    throw new PluginError(Code.FailedPrecondition, `${file}: ${problems.join("; ")}`);
  }
  const { toolchain, ...spec } = parsed.data;
  return { toolchain, spec };
}
