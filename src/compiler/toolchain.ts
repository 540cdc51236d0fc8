import type { Digest } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { DiskCache } from "./disk-cache.js";

/**
 * A runtime release as the compiler knows it, read from
 * `<runtimes dir>/<version>/runtime.json`. `toolchain` picks the Toolchain
 * that builds for it; `spec` is the rest of runtime.json, which only that
 * toolchain interprets (Node.js: supported Node releases, supplied modules,
 * required export; Go: go.mod, Go releases, driver symbol, build flags).
 */
export interface RuntimeDescriptor {
  readonly version: string;
  readonly toolchain: string;
  /** The descriptor's directory: SDK folders and go.mod files are found from here. */
  readonly dir: string;
  readonly spec: Readonly<Record<string, unknown>>;
  /**
   * The digest of the registered release (model/runtime-release.ts): what
   * every artifact built for it records. Absent for a descriptor read
   * straight from a directory.
   */
  readonly digest?: Digest;
}

/** Everything one build may use. */
export interface BuildJob {
  readonly key: BuildKey;
  readonly runtime: RuntimeDescriptor;
  /** A fresh, empty, private directory; removed by the caller after the build. */
  readonly workDir: string;
  /** Aborted when the build's time limit passes or the server shuts down: kill child processes. */
  readonly signal: AbortSignal;
}

export interface BuildOutput {
  /** The artifact, a file inside workDir. */
  readonly artifactPath: string;
  readonly mediaType: string;
  /**
   * Recorded in the manifest: toolchain name and version, source origin and
   * integrity, ... (dotted keys, `dev.atomix.*`).
   */
  readonly annotations: Readonly<Record<string, string>>;
}

/**
 * Builds plugins for the runtimes whose descriptor names it. Throws
 * PluginErrors: NOT_FOUND for an unknown plugin source, FAILED_PRECONDITION
 * for a build_version it has no toolchain for, a dependency conflict, a
 * compile error (first diagnostics in the message) or a missing export.
 * Runs untrusted plugin code nowhere but in its sandboxed verification step.
 */
export interface Toolchain {
  /** The `toolchain` value of the descriptors it serves: "node", "go". */
  readonly name: string;
  /**
   * The build version artifacts for `buildVersion` of `runtime` are built
   * and stored under: one the runtime declares. A toolchain may map a more
   * precise version onto the declared one it refines (Node.js: `node20.20.2`
   * → `node20`); none answers a new build version for each of endless
   * inputs. Throws FAILED_PRECONDITION for one the runtime does not run on,
   * before the build waits for a slot. Absent: every build version is its own.
   */
  buildVersionFor?(runtime: RuntimeDescriptor, buildVersion: string): string;
  build(job: BuildJob): Promise<BuildOutput>;
  /** What it keeps on disk between builds, each within its bound: `gc` and /metrics report them. */
  readonly caches?: readonly DiskCache[];
}
