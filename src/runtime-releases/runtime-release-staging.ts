import { randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import { isBelow } from "atomix-plugins-core/model/contained-path";
import { isPackageName } from "atomix-plugins-core/model/package-name";
import {
  checkReleasePath,
  checkRuntimeVersion,
  RUNTIME_DESCRIPTOR_FILE,
  RUNTIME_RELEASE_LIMITS,
  type RuntimeReleaseFile,
  type RuntimeReleaseIndex,
  releaseDigest,
} from "atomix-plugins-core/model/runtime-release";
import type { RuntimeDescriptor } from "../compiler/toolchain.js";
import { parseGoRuntimeSpec } from "../compiler/toolchains/go/go-runtime-spec.js";
import { readNodeRuntime } from "../compiler/toolchains/node/node-runtime-spec.js";
import { writeHashedFile } from "../store/hashed-file.js";
import type { StagedRuntimeRelease } from "../store/runtime-release-store.js";
import { parseRuntimeDescriptor } from "./runtime-catalog.js";
import { type GatheredRelease, goModDirectoryReplacements } from "./runtime-release-layout.js";

/** One file of a release as it arrives: its place, announced size, and bytes. */
export interface IncomingReleaseFile {
  readonly path: string;
  readonly size: number;
  readonly executable: boolean;
  readonly data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/**
 * Writes an incoming release into a fresh folder under `stagingRoot`,
 * checking as it goes (paths, sizes, counts: the bytes are hostile), then
 * checks its descriptor as a `--runtimes` directory is checked, plus that
 * nothing it names leaves the release. The result carries the release's
 * index and digest; the caller stores it, then removes the staging folder.
 */
export async function stageRuntimeRelease(options: {
  version: string;
  files: AsyncIterable<IncomingReleaseFile> | Iterable<IncomingReleaseFile>;
  stagingRoot: string;
  signal?: AbortSignal;
}): Promise<StagedRuntimeRelease> {
  const version = checkRuntimeVersion(options.version);
  const dir = join(resolve(options.stagingRoot), randomUUID());
  await mkdir(dir, { recursive: true });
  try {
    const files: RuntimeReleaseFile[] = [];
    const seen: string[] = [];
    const layout = new ReleaseLayout(version);
    let total = 0;
    for await (const file of options.files) {
      options.signal?.throwIfAborted();
      const path = checkReleasePath(file.path);
      layout.add(path);
      seen.push(path);
      if (seen.length > RUNTIME_RELEASE_LIMITS.maxFiles) {
        throw new PluginError(
          Code.ResourceExhausted,
          `runtime release ${version} has more than ${RUNTIME_RELEASE_LIMITS.maxFiles} files`,
        );
      }
      if (file.size > RUNTIME_RELEASE_LIMITS.maxFileBytes) {
        throw new PluginError(
          Code.ResourceExhausted,
          `${path} has ${file.size} bytes; a runtime release file may have at most ${RUNTIME_RELEASE_LIMITS.maxFileBytes}`,
        );
      }
      total += file.size;
      if (total > RUNTIME_RELEASE_LIMITS.maxBytes) {
        throw new PluginError(
          Code.ResourceExhausted,
          `runtime release ${version} is larger than ${RUNTIME_RELEASE_LIMITS.maxBytes} bytes`,
        );
      }
      const target = join(dir, ...path.split("/"));
      await mkdir(dirname(target), { recursive: true });
      const written = await writeHashedFile(target, file.data, {
        expectedSize: file.size,
        durable: false,
        mode: file.executable ? 0o755 : 0o644,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      if (written.size !== file.size) {
        throw new PluginError(
          Code.InvalidArgument,
          `${path}: received ${written.size} bytes, announced ${file.size}; nothing was registered`,
        );
      }
      files.push({ path, digest: written.digest, size: written.size, executable: file.executable });
    }
    if (!seen.includes(RUNTIME_DESCRIPTOR_FILE)) {
      throw new PluginError(
        Code.InvalidArgument,
        `runtime release ${version} has no ${RUNTIME_DESCRIPTOR_FILE}`,
      );
    }
    const descriptor = await checkReleaseDescriptor(dir, version);
    const index: RuntimeReleaseIndex = { version, toolchain: descriptor.toolchain, files };
    return {
      dir,
      index,
      digest: releaseDigest(index),
      description: typeof descriptor.spec.description === "string" ? descriptor.spec.description : "",
      buildVersions: buildVersionsOf(descriptor),
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw PluginError.from(error, `registering runtime ${version}`);
  }
}

/** A gathered release (runtime add, --runtimes at start) as incoming files. */
export function* gatheredFiles(release: GatheredRelease): Generator<IncomingReleaseFile> {
  yield {
    path: RUNTIME_DESCRIPTOR_FILE,
    size: release.descriptor.byteLength,
    executable: false,
    data: [release.descriptor],
  };
  for (const file of release.files) {
    yield {
      path: file.path,
      size: file.size,
      executable: file.executable,
      data: createReadStream(file.source),
    };
  }
}

/**
 * The checks `--runtimes` loading and the toolchains make of a descriptor,
 * on a release laid out in `dir` (staged, or opened from a store), after
 * making sure each name and path it holds stays inside the release (a Go
 * runtime's absolute replacement folders may name only the OS tree under
 * /usr, which every build sandbox shows anyway). INVALID_ARGUMENT for a
 * name or path that leaves it.
 */
export async function checkReleaseDescriptor(dir: string, version: string): Promise<RuntimeDescriptor> {
  const file = join(dir, RUNTIME_DESCRIPTOR_FILE);
  const text = await readFile(file, "utf8");
  const shown = `runtime ${version}'s ${RUNTIME_DESCRIPTOR_FILE}`;
  const parsed = parseRuntimeDescriptor(text, shown);
  const descriptor: RuntimeDescriptor = { version, dir, ...parsed };
  const inside = (path: string) => isBelow(dir, path);
  const refuse = (why: string) => new PluginError(Code.FailedPrecondition, `${shown}: ${why}`);
  // What the caller sent names a host path: a bad argument, whoever the caller is.
  const outside = (why: string) => new PluginError(Code.InvalidArgument, `${shown}: ${why}`);
  try {
    if (parsed.toolchain === "node") {
      const modules = parsed.spec.modules;
      if (typeof modules === "object" && modules !== null) {
        for (const [name, module] of Object.entries(modules as Record<string, { path?: unknown }>)) {
          if (!isPackageName(name)) {
            throw outside(
              `module name ${quoted(name)} is not an npm package name (sdk, @acme/sdk); it becomes a folder of every build's node_modules`,
            );
          }
          const path = module?.path;
          if (typeof path === "string" && (isAbsolute(path) || !inside(path))) {
            throw outside(`modules.${name}.path ${quoted(path)} leaves the release`);
          }
        }
      }
      await readNodeRuntime(descriptor);
    } else if (parsed.toolchain === "go") {
      const spec = parseGoRuntimeSpec(descriptor);
      if (isAbsolute(spec.goMod) || !inside(spec.goMod))
        throw outside(`goMod ${quoted(spec.goMod)} leaves the release`);
      let goMod: string;
      try {
        goMod = await readFile(spec.goModPath, "utf8");
      } catch {
        throw refuse(`goMod ${spec.goMod} is not in the release`);
      }
      for (const folder of goModDirectoryReplacements(goMod, `${spec.goMod} of runtime ${version}`)) {
        if (isAbsolute(folder)) {
          if (!resolve(folder).startsWith("/usr/")) {
            throw outside(
              `go.mod replaces a module with ${folder}; an absolute replacement folder must lie under /usr (the OS tree builds see), others belong inside the release`,
            );
          }
          continue;
        }
        const full = resolve(dirname(spec.goModPath), folder);
        if (!isBelow(dir, full))
          throw outside(`go.mod replaces a module with ${folder}, outside the release`);
      }
    }
  } catch (error) {
    // The toolchains name the staged folder; callers know the release by its version.
    const failure = PluginError.from(error);
    throw new PluginError(failure.code, failure.message.replaceAll(dir, `<runtime ${version}>`), {
      cause: error,
    });
  }
  return descriptor;
}

/** The build_versions a descriptor accepts, for listings and pre-warm. */
export function buildVersionsOf(descriptor: Pick<RuntimeDescriptor, "toolchain" | "spec">): string[] {
  const list = descriptor.toolchain === "node" ? descriptor.spec.node : descriptor.spec.goReleases;
  if (!Array.isArray(list)) return [];
  return list
    .filter((entry): entry is string => typeof entry === "string")
    .map((entry) => (descriptor.toolchain === "node" ? `node${entry}` : entry));
}

/**
 * The paths of a release as they arrive: each one new, none both a file and
 * a folder (`a` and `a/b`). Checked per path in time proportional to its
 * depth, whatever the number of files.
 */
class ReleaseLayout {
  readonly #files = new Set<string>();
  readonly #folders = new Set<string>();
  constructor(readonly version: string) {}

  add(path: string): void {
    const refuse = (why: string) =>
      new PluginError(Code.InvalidArgument, `runtime release ${this.version}: ${why}`);
    if (this.#files.has(path)) throw refuse(`${path} appears twice`);
    if (this.#folders.has(path)) throw refuse(`${path} is a file and a folder`);
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join("/");
      if (this.#files.has(folder)) throw refuse(`${folder} is a file and a folder`);
      this.#folders.add(folder);
    }
    this.#files.add(path);
  }
}
