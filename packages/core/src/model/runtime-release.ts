import { createHash } from "node:crypto";
import semver from "semver";
import { Code, PluginError, quoted } from "../errors/plugin-error.js";
import { DIGEST_PATTERN, type Digest } from "./artifact.js";

/**
 * A runtime release as it is registered and stored: `runtime.json` at the
 * top, and the files it refers to in a fixed layout (`modules/<name>/` for a
 * Node.js runtime's supplied modules, `go/go.mod` and `go/<folder>/` for a
 * Go runtime's go.mod and its replacement folders). Its digest is the sha256
 * of its index, so it names every byte of the release: the runtime's
 * fingerprint that each artifact built for it records.
 */
export interface RuntimeReleaseFile {
  readonly path: string;
  readonly digest: Digest;
  readonly size: number;
  readonly executable: boolean;
}

export interface RuntimeReleaseIndex {
  readonly version: string;
  readonly toolchain: string;
  /** Sorted by path. */
  readonly files: readonly RuntimeReleaseFile[];
}

/** What listings show of a stored release. */
export interface RuntimeReleaseSummary {
  readonly version: string;
  readonly toolchain: string;
  readonly digest: Digest;
  /** RFC 3339. */
  readonly registeredAt: string;
  readonly fileCount: number;
  readonly size: number;
  readonly description: string;
  readonly buildVersions: readonly string[];
}

/** The release's descriptor, at the top of every release. */
export const RUNTIME_DESCRIPTOR_FILE = "runtime.json";

/**
 * Bounds on a release, whoever sends it: an upload is read by the server
 * itself, so every count and size is limited before a byte is written.
 */
export const RUNTIME_RELEASE_LIMITS = {
  maxFiles: 10_000,
  maxBytes: 64 * 1024 * 1024,
  maxFileBytes: 32 * 1024 * 1024,
  /** runtime.json is parsed in the server's process. */
  maxDescriptorBytes: 1024 * 1024,
  maxPathLength: 512,
  maxDepth: 32,
} as const;

/**
 * Checks a path inside a release: relative, `/`-separated, no empty, `.` or
 * `..` part, no backslash or control character, bounded in length and depth.
 * INVALID_ARGUMENT naming the path otherwise.
 */
export function checkReleasePath(path: string): string {
  const parts = path.split("/");
  const bad =
    path.length === 0 ||
    path.length > RUNTIME_RELEASE_LIMITS.maxPathLength ||
    parts.length > RUNTIME_RELEASE_LIMITS.maxDepth ||
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
    /[\u0000-\u001f\u007f\\]/.test(path) ||
    parts.some((part) => part === "" || part === "." || part === ".." || part.length > 255);
  if (bad) {
    throw new PluginError(
      Code.InvalidArgument,
      `runtime release file ${quoted(path)}: a path must be relative, /-separated, without empty, . or .. parts or control characters, at most ${RUNTIME_RELEASE_LIMITS.maxPathLength} characters and ${RUNTIME_RELEASE_LIMITS.maxDepth} levels`,
    );
  }
  return path;
}

/** A runtime version as `--runtimes` directories are named: semver, optionally with a leading `v`. */
export function checkRuntimeVersion(version: string): string {
  const bare = version.startsWith("v") ? version.slice(1) : version;
  if (version.length > 128 || semver.valid(bare) !== bare) {
    throw new PluginError(
      Code.InvalidArgument,
      `runtime version ${quoted(version)} must be a semantic version such as 1.4.0`,
    );
  }
  return version;
}

/** The index's canonical bytes: the same release always gives the same bytes, so the same digest. */
export function releaseIndexBytes(index: RuntimeReleaseIndex): Buffer {
  const files = [...index.files]
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .map((file) => ({
      path: file.path,
      digest: file.digest,
      size: file.size,
      executable: file.executable,
    }));
  return Buffer.from(
    `${JSON.stringify({ schemaVersion: 1, version: index.version, toolchain: index.toolchain, files })}\n`,
  );
}

export function releaseDigest(index: RuntimeReleaseIndex): Digest {
  return `sha256:${createHash("sha256").update(releaseIndexBytes(index)).digest("hex")}`;
}

/**
 * Reads index bytes back (from a store: hostile until checked). DATA_LOSS
 * when they do not parse or break a rule.
 */
export function parseReleaseIndex(bytes: Uint8Array, where: string): RuntimeReleaseIndex {
  const fail = (why: string) =>
    new PluginError(Code.DataLoss, `${where} is not a valid runtime release index: ${why}`);
  if (bytes.byteLength > 4 * 1024 * 1024) throw fail("larger than 4 MiB");
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (error) {
    throw fail((error as Error).message);
  }
  const value = json as Partial<{ version: unknown; toolchain: unknown; files: unknown }>;
  if (
    typeof value.version !== "string" ||
    typeof value.toolchain !== "string" ||
    !Array.isArray(value.files)
  ) {
    throw fail("version, toolchain or files missing");
  }
  if (value.files.length > RUNTIME_RELEASE_LIMITS.maxFiles) throw fail("too many files");
  const files: RuntimeReleaseFile[] = [];
  let total = 0;
  for (const entry of value.files as Partial<RuntimeReleaseFile>[]) {
    if (
      typeof entry?.path !== "string" ||
      typeof entry.digest !== "string" ||
      !DIGEST_PATTERN.test(entry.digest) ||
      !Number.isSafeInteger(entry.size) ||
      (entry.size as number) < 0 ||
      (entry.size as number) > RUNTIME_RELEASE_LIMITS.maxFileBytes
    ) {
      throw fail("a file entry is malformed");
    }
    try {
      checkReleasePath(entry.path);
    } catch (error) {
      throw fail((error as Error).message);
    }
    total += entry.size as number;
    files.push({
      path: entry.path,
      digest: entry.digest as Digest,
      size: entry.size as number,
      executable: entry.executable === true,
    });
  }
  if (total > RUNTIME_RELEASE_LIMITS.maxBytes) throw fail("larger than the release size limit");
  try {
    checkRuntimeVersion(value.version);
  } catch (error) {
    throw fail((error as Error).message);
  }
  checkNoFileUnderFile(
    files.map((f) => f.path),
    (why) => fail(why),
  );
  return { version: value.version, toolchain: value.toolchain, files };
}

/** A path that is both a file and a folder (`a` and `a/b`) cannot be laid out on disk. */
export function checkNoFileUnderFile(paths: readonly string[], fail: (why: string) => Error): void {
  const set = new Set(paths);
  if (set.size !== paths.length) throw fail("a path appears twice");
  for (const path of paths) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      if (set.has(parent)) throw fail(`${parent} is a file and a folder`);
    }
  }
}
