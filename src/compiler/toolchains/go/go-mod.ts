import { dirname, isAbsolute, posix, resolve } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { GoCommand } from "./go-command.js";

/** A module version as `go mod edit -json` prints it. */
export interface GoModuleVersion {
  readonly Path: string;
  readonly Version?: string;
}

/** A go.mod as `go mod edit -json` prints it (the fields used here). */
export interface GoMod {
  readonly Module: { readonly Path: string };
  readonly Go?: string;
  readonly Require?: readonly {
    readonly Path: string;
    readonly Version: string;
    readonly Indirect?: boolean;
  }[];
  readonly Replace?: readonly { readonly Old: GoModuleVersion; readonly New: GoModuleVersion }[];
}

/** One requirement the alignment moved to the runtime's version. */
export interface RequirementChange {
  readonly path: string;
  readonly from: string;
  readonly to: string;
}

export interface AlignmentPlan {
  /** Arguments for `go mod edit` on the plugin's (copied) go.mod; empty: nothing to change. */
  readonly editArgs: readonly string[];
  readonly changes: readonly RequirementChange[];
}

/**
 * Parses a go.mod with the Go command itself, so that every syntax the
 * installed release accepts is understood. A file go cannot parse is
 * FAILED_PRECONDITION.
 */
export async function readGoMod(
  go: GoCommand,
  file: string,
  what: string,
  cwd = dirname(file),
): Promise<GoMod> {
  const result = await go.run(["mod", "edit", "-json", file], cwd);
  if (result.exitCode !== 0) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${what} is not a valid go.mod: ${firstLines(result.stderr)}`,
    );
  }
  return JSON.parse(result.stdout) as GoMod;
}

/**
 * What makes a plugin's go.mod agree with its runtime's: every requirement
 * the runtime also has is set to the runtime's version (up or down), the
 * plugin's own replacements of such modules are dropped, and the runtime's
 * replacements are applied (directory replacements made absolute, relative to
 * the runtime's go.mod). Requirements the runtime does not have are left as
 * they are: those packages exist only in the plugin.
 */
export function planAlignment(plugin: GoMod, runtime: GoMod, runtimeGoModPath: string): AlignmentPlan {
  const runtimeVersions = new Map((runtime.Require ?? []).map((r) => [r.Path, r.Version]));
  const runtimeReplaced = new Set((runtime.Replace ?? []).map((r) => r.Old.Path));
  const editArgs: string[] = [];
  const changes: RequirementChange[] = [];

  for (const requirement of plugin.Require ?? []) {
    const pinned = runtimeVersions.get(requirement.Path);
    if (pinned !== undefined && pinned !== requirement.Version) {
      editArgs.push(`-require=${requirement.Path}@${pinned}`);
      changes.push({ path: requirement.Path, from: requirement.Version, to: pinned });
    }
  }
  for (const replacement of plugin.Replace ?? []) {
    const { Path } = replacement.Old;
    if (runtimeVersions.has(Path) || runtimeReplaced.has(Path)) {
      editArgs.push(`-dropreplace=${moduleVersion(replacement.Old)}`);
    }
  }
  const base = dirname(runtimeGoModPath);
  for (const replacement of runtime.Replace ?? []) {
    const target = isDirectoryPath(replacement.New.Path)
      ? resolve(base, replacement.New.Path)
      : moduleVersion(replacement.New);
    editArgs.push(`-replace=${moduleVersion(replacement.Old)}=${target}`);
  }
  return { editArgs, changes };
}

/** A module the plugin links at a version its runtime does not contain. */
export interface VersionConflict {
  readonly path: string;
  readonly plugin: string;
  readonly runtime: string;
}

/**
 * Compares the modules a build links (lines `path version` from `go list
 * -deps`) with the runtime's requirements. A conflict remains after
 * alignment when something else the plugin requires needs a newer version
 * than the runtime pins (minimal version selection picks the newer one).
 */
export function findVersionConflicts(linked: string, runtime: GoMod): VersionConflict[] {
  const runtimeVersions = new Map((runtime.Require ?? []).map((r) => [r.Path, r.Version]));
  const conflicts = new Map<string, VersionConflict>();
  for (const line of linked.split("\n")) {
    const [path, version] = line.trim().split(/\s+/);
    if (!path || !version) continue;
    const pinned = runtimeVersions.get(path);
    if (pinned !== undefined && pinned !== version) {
      conflicts.set(path, { path, plugin: version, runtime: pinned });
    }
  }
  return [...conflicts.values()];
}

/** The first lines of a tool's output, for an error message. */
export function firstLines(text: string, max = 12): string {
  const lines = text
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line !== "" && !line.startsWith("go: downloading "));
  const shown = lines.slice(0, max).map((line) => (line.length > 300 ? `${line.slice(0, 300)}...` : line));
  const more = lines.length > max ? `\n... (${lines.length - max} more lines)` : "";
  return shown.join("\n") + more;
}

/** Go's rule: a replacement is a directory when it is a path, not a module path. */
function isDirectoryPath(path: string): boolean {
  return isAbsolute(path) || path.startsWith("./") || path.startsWith("../") || path === "." || path === "..";
}

function moduleVersion(module: GoModuleVersion): string {
  return module.Version ? `${module.Path}@${module.Version}` : module.Path;
}

/**
 * A plugin may replace a module only with another module version or a
 * folder inside its own module: a directory replacement that leaves it
 * (absolute, or `../`) would compile whatever the build host has there.
 */
export function checkPluginReplacements(plugin: GoMod, what: string): void {
  for (const replacement of plugin.Replace ?? []) {
    const path = replacement.New.Path;
    if (!isDirectoryPath(path)) continue;
    const normalized = posix.normalize(path);
    if (posix.isAbsolute(normalized) || normalized === ".." || normalized.startsWith("../")) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${what}: go.mod replaces ${replacement.Old.Path} with the directory ${path}, outside the module; a plugin may replace a module only with a module version or a folder inside the module`,
      );
    }
  }
}

/** The folders the runtime's go.mod replaces modules with, as absolute paths. */
export function runtimeReplacementDirs(runtime: GoMod, runtimeGoModPath: string): string[] {
  return (runtime.Replace ?? [])
    .filter((replacement) => isDirectoryPath(replacement.New.Path))
    .map((replacement) => resolve(dirname(runtimeGoModPath), replacement.New.Path));
}
