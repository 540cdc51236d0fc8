import { lstat, open, readdir, realpath, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, posix, relative, resolve, sep } from "node:path";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import { isPackageName } from "atomix-plugins-core/model/package-name";
import {
  checkNoFileUnderFile,
  checkReleasePath,
  checkRuntimeVersion,
  RUNTIME_DESCRIPTOR_FILE,
  RUNTIME_RELEASE_LIMITS,
} from "atomix-plugins-core/model/runtime-release";

/** One file of a release gathered from disk: where it goes in the release, and where it is read from. */
export interface GatheredFile {
  readonly path: string;
  readonly source: string;
  readonly size: number;
  readonly executable: boolean;
}

/**
 * A runtime release gathered from a directory, ready to upload: the
 * descriptor rewritten to point into the release's own layout, and the
 * files it refers to.
 */
export interface GatheredRelease {
  readonly version: string;
  readonly toolchain: string;
  /** runtime.json as it is stored: its paths made relative to the release. */
  readonly descriptor: Buffer;
  readonly files: readonly GatheredFile[];
}

/** Where a Node.js runtime's supplied module `name` lives in a release. */
export const releaseModulePath = (name: string) => `modules/${name}`;
/** Where a Go runtime's go.mod lives in a release; its replacement folders sit beside it. */
export const RELEASE_GO_MOD = "go/go.mod";

/**
 * Gathers the release described by `<dir>/runtime.json`: the descriptor
 * and what it refers to, wherever that lies on this disk (`goMod` may name
 * `../../go-runtime/go.mod`), laid out inside the release (see
 * model/runtime-release.ts). A link is followed only to a file inside the
 * folder being gathered; links to folders, FIFOs, sockets and devices are
 * refused, as are files and folders beyond the release limits. The version
 * is the directory's name unless given.
 */
export async function gatherRuntimeRelease(dir: string, version?: string): Promise<GatheredRelease> {
  const root = resolve(dir);
  const releaseVersion = checkRuntimeVersion(version ?? basename(root));
  const descriptorPath = join(root, RUNTIME_DESCRIPTOR_FILE);
  const text = (await readSmallFile(descriptorPath, RUNTIME_RELEASE_LIMITS.maxDescriptorBytes)).toString(
    "utf8",
  );
  let descriptor: Record<string, unknown>;
  try {
    descriptor = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new PluginError(Code.FailedPrecondition, `${descriptorPath}: ${(error as Error).message}`);
  }
  if (typeof descriptor !== "object" || descriptor === null || typeof descriptor.toolchain !== "string") {
    throw new PluginError(Code.FailedPrecondition, `${descriptorPath}: toolchain: expected a string`);
  }
  const budget = new Budget();
  const files: GatheredFile[] = [];
  if (descriptor.toolchain === "node" && isRecord(descriptor.modules)) {
    const modules: Record<string, unknown> = {};
    for (const [name, module] of Object.entries(descriptor.modules)) {
      if (!isRecord(module) || typeof module.path !== "string") {
        modules[name] = module; // the schema check names the field
        continue;
      }
      if (!isPackageName(name)) {
        throw new PluginError(
          Code.FailedPrecondition,
          `${descriptorPath}: module name ${quoted(name)} is not an npm package name (sdk, @acme/sdk)`,
        );
      }
      const target = checkReleasePath(releaseModulePath(name));
      files.push(...(await gatherFolder(resolve(root, module.path), target, budget)));
      modules[name] = { ...module, path: target };
    }
    descriptor = { ...descriptor, modules };
  }
  if (descriptor.toolchain === "go" && typeof descriptor.goMod === "string") {
    const goModPath = isAbsolute(descriptor.goMod) ? descriptor.goMod : resolve(root, descriptor.goMod);
    const goMod = await gatherFile(goModPath, RELEASE_GO_MOD, budget);
    files.push(goMod);
    const goModText = (await readSmallFile(goModPath, RUNTIME_RELEASE_LIMITS.maxDescriptorBytes)).toString(
      "utf8",
    );
    for (const folder of goModDirectoryReplacements(goModText, goModPath)) {
      if (isAbsolute(folder)) continue; // checked by the server: only the OS tree every build sees
      const normalized = posix.normalize(folder);
      if (normalized === ".." || normalized.startsWith("../")) {
        throw new PluginError(
          Code.FailedPrecondition,
          `${goModPath} replaces a module with ${folder}, outside the go.mod's folder; a registered release carries only replacement folders inside it`,
        );
      }
      const target = checkReleasePath(posix.join(dirname(RELEASE_GO_MOD), normalized));
      files.push(...(await gatherFolder(resolve(dirname(goModPath), normalized), target, budget)));
    }
    descriptor = { ...descriptor, goMod: RELEASE_GO_MOD };
  }
  const rewritten = Buffer.from(`${JSON.stringify(descriptor, null, 2)}\n`);
  budget.add(rewritten.byteLength, descriptorPath);
  checkNoFileUnderFile(
    [RUNTIME_DESCRIPTOR_FILE, ...files.map((file) => file.path)],
    (why) => new PluginError(Code.FailedPrecondition, `the release in ${root} cannot be laid out: ${why}`),
  );
  return { version: releaseVersion, toolchain: descriptor.toolchain as string, descriptor: rewritten, files };
}

/**
 * The directory replacements of a go.mod (`replace a => ./b`, `replace ( ... )`),
 * as written. Lines it cannot read (quoted paths with spaces and the like)
 * are refused rather than guessed at: what Go reads and what is uploaded
 * must not differ.
 */
export function goModDirectoryReplacements(text: string, where: string): string[] {
  const found: string[] = [];
  let inBlock = false;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\/\/.*$/, "").trim();
    if (line === "") continue;
    let directive: string | undefined;
    if (inBlock) {
      if (line === ")") {
        inBlock = false;
        continue;
      }
      directive = line;
    } else if (/^replace\s*\($/.test(line)) {
      inBlock = true;
      continue;
    } else if (/^replace\s/.test(line)) {
      directive = line.slice("replace".length).trim();
    }
    if (directive === undefined) continue;
    if (/["`]/.test(directive)) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${where}: quoted paths in replace directives are not supported in a registered release: ${directive}`,
      );
    }
    const target = /=>\s*(\S+)(?:\s+\S+)?$/.exec(directive)?.[1];
    if (!target) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${where}: cannot read the replace directive ${directive}`,
      );
    }
    if (isDirectoryPath(target)) found.push(target);
  }
  return found;
}

/** Go's rule: a replacement is a directory when it is a path, not a module path. */
export function isDirectoryPath(path: string): boolean {
  return isAbsolute(path) || path.startsWith("./") || path.startsWith("../") || path === "." || path === "..";
}

class Budget {
  files = 0;
  bytes = 0;
  add(size: number, what: string): void {
    this.files += 1;
    this.bytes += size;
    if (size > RUNTIME_RELEASE_LIMITS.maxFileBytes) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${what} has ${size} bytes; a runtime release file may have at most ${RUNTIME_RELEASE_LIMITS.maxFileBytes}`,
      );
    }
    if (this.files > RUNTIME_RELEASE_LIMITS.maxFiles || this.bytes > RUNTIME_RELEASE_LIMITS.maxBytes) {
      throw new PluginError(
        Code.FailedPrecondition,
        `the runtime release is larger than the limit of ${RUNTIME_RELEASE_LIMITS.maxFiles} files and ${RUNTIME_RELEASE_LIMITS.maxBytes} bytes (at ${what})`,
      );
    }
  }
}

async function gatherFile(source: string, target: string, budget: Budget): Promise<GatheredFile> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(source);
  } catch (error) {
    throw new PluginError(
      Code.FailedPrecondition,
      `the runtime release refers to ${source}, which cannot be read`,
      {
        cause: error,
      },
    );
  }
  if (!info.isFile()) {
    throw new PluginError(Code.FailedPrecondition, `${source} is not a regular file`);
  }
  budget.add(info.size, source);
  return { path: checkReleasePath(target), source, size: info.size, executable: (info.mode & 0o111) !== 0 };
}

/**
 * Every regular file under `folder`, placed under `target`. A link counts as
 * the file it names, and only when that file is inside `folder`.
 */
async function gatherFolder(folder: string, target: string, budget: Budget): Promise<GatheredFile[]> {
  let top: string;
  try {
    top = await realpath(folder);
    if (!(await stat(top)).isDirectory()) throw new Error("not a directory");
  } catch (error) {
    throw new PluginError(
      Code.FailedPrecondition,
      `the runtime release refers to the folder ${folder}, which cannot be read`,
      {
        cause: error,
      },
    );
  }
  const out: GatheredFile[] = [];
  const walk = async (dir: string, into: string, depth: number): Promise<void> => {
    if (depth > RUNTIME_RELEASE_LIMITS.maxDepth) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${dir} is nested deeper than ${RUNTIME_RELEASE_LIMITS.maxDepth} levels`,
      );
    }
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const entry of entries) {
      const path = join(dir, entry.name);
      const releasePath = `${into}/${entry.name}`;
      const info = await lstat(path);
      if (info.isDirectory()) {
        await walk(path, releasePath, depth + 1);
      } else if (info.isFile()) {
        out.push(await gatherFile(path, releasePath, budget));
      } else if (info.isSymbolicLink()) {
        const resolved = await realpath(path).catch(() => undefined);
        const inside = resolved !== undefined && (resolved + sep).startsWith(top + sep) && resolved !== top;
        const isFile = inside && (await stat(resolved)).isFile();
        if (!isFile) {
          throw new PluginError(
            Code.FailedPrecondition,
            `${path} is a link to ${resolved ? relative(top, resolved) || "." : "nothing"}; a runtime release may hold links only to files inside the folder ${folder}`,
          );
        }
        out.push(await gatherFile(resolved, releasePath, budget));
      } else {
        throw new PluginError(
          Code.FailedPrecondition,
          `${path} is not a regular file or folder; a runtime release holds only those`,
        );
      }
    }
  };
  await walk(top, target, target.split("/").length);
  return out;
}

async function readSmallFile(path: string, limit: number): Promise<Buffer> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw new PluginError(Code.FailedPrecondition, `${path} cannot be read: ${(error as Error).message}`, {
      cause: error,
    });
  }
  try {
    const { size } = await handle.stat();
    if (size > limit) {
      throw new PluginError(Code.FailedPrecondition, `${path} has ${size} bytes; at most ${limit} are read`);
    }
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
