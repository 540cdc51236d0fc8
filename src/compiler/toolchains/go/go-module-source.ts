import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { RunResult } from "../../run-process.js";
import type { SourceUnpacker } from "../../sources/source-unpacker.js";
import type { GoCommand } from "./go-command.js";
import { firstLines } from "./go-mod.js";
import { checkModuleZip, escapeModulePath } from "./go-module-zip.js";

/** A plugin module's sources, copied into the build's private directory. */
export interface GoModuleSource {
  /** The copy: free to be rewritten, unlike the catalog or the module cache. */
  readonly dir: string;
  /** Where it came from: `catalog:<dir>` or `goproxy:<GOPROXY>`. */
  readonly origin: string;
  /** Go's `h1:` hash of the module's files (as in go.sum). */
  readonly integrity: string;
  /** The version with the `v` Go module versions carry. */
  readonly version: string;
}

export interface FetchGoModuleOptions {
  readonly name: string;
  readonly version: string;
  /** Catalog directories, asked in order: `<dir>/<module path>/<version>/` holds a module. */
  readonly catalogs: readonly string[];
  readonly proxy: string;
  readonly go: GoCommand;
  /** Copies the module into the build, in the sandbox, within the source limits. */
  readonly unpacker: SourceUnpacker;
  /** The copy is made at `<workDir>/module`. */
  readonly workDir: string;
  readonly signal?: AbortSignal;
}

/**
 * Finds a plugin module in the source catalog (the version as written, or
 * with the `v` prefix Go versions carry) or else through the Go module
 * proxy, and copies it into the build directory: sources are never built, or
 * modified, in place. NOT_FOUND when neither has it.
 */
export async function fetchGoModule(options: FetchGoModuleOptions): Promise<GoModuleSource> {
  const { name, catalogs, workDir } = options;
  const version = options.version.startsWith("v") ? options.version : `v${options.version}`;
  const target = join(workDir, "module");
  for (const catalogDir of catalogs) {
    for (const candidate of new Set([options.version, version])) {
      const dir = join(catalogDir, name, candidate);
      if (await isFile(join(dir, "go.mod"))) {
        const integrity = await copyModule(options, dir, target, `${name}@${version}`);
        return { dir: target, origin: `catalog:${relative(catalogDir, dir)}`, integrity, version };
      }
    }
  }
  const where = catalogs.length ? "in the source catalog" : "";
  const looked = `looked in ${catalogs.map((dir) => join(dir, name, options.version)).join(", ") || "no catalog"}`;
  if (options.proxy === "off") {
    throw new PluginError(
      Code.NotFound,
      `Go module ${name}@${version} is not ${where || "in any source"} and no Go module proxy is configured (GOPROXY=off)`,
      { detail: looked },
    );
  }
  const downloadDir = join(workDir, "download");
  await mkdir(downloadDir, { recursive: true });
  const result = await downloadWithinLimits(options, version, downloadDir);
  let info: { Dir?: string; Sum?: string; Error?: string } = {};
  try {
    info = JSON.parse(result.stdout) as typeof info;
  } catch {
    // No JSON: the message is on stderr.
  }
  if (result.exitCode !== 0 || !info.Dir || !info.Sum) {
    const message = info.Error ?? firstLines(result.stderr);
    // Judged without the module's own name and version, which its author chose.
    const reason = message.replaceAll(name, "").replaceAll(version, "");
    const missing =
      /not found|no such file|404|410|unknown revision|no matching versions|invalid version/i.test(reason);
    // Only a proxy that cannot be reached is worth a retry: a malformed or
    // mismatching module fails the same way every time.
    const unreachable =
      /dial tcp|connection refused|connection reset|i\/o timeout|TLS handshake|no such host|: 50[234] |Service Unavailable|Bad Gateway|Gateway Time-?out/i.test(
        reason,
      );
    throw new PluginError(
      missing ? Code.NotFound : unreachable ? Code.Unavailable : Code.FailedPrecondition,
      `Go module ${name}@${version} is not ${where ? `${where} nor ` : ""}available from the Go module proxy${unreachable || missing ? "" : `: ${redactedReason(message)}`}`,
      { detail: `${looked}; GOPROXY=${options.proxy}: ${message}` },
    );
  }
  await copyModule(options, info.Dir, target, `${name}@${version}`);
  return { dir: target, origin: `goproxy:${options.proxy}`, integrity: info.Sum, version };
}

/**
 * `go mod download` of the plugin module, its zip checked against the source
 * limits before Go unpacks it. Into a module cache of the build's own,
 * removed with it: the plugin module is built from the build's copy, never
 * from the shared cache, so whatever the limits refuse is never left where
 * every later build would find it. Writable (-modcacherw), so that a server
 * that is not root can remove it.
 *
 * Go fetches a module's zip (`cache/download/...`) before it unpacks it
 * (`<module>@<version>/`). A file where the module path's first folder
 * would be makes the unpacking fail, and nothing else, so the first run
 * stops in between, with Go's own proxy handling (lists, fallbacks,
 * credentials) intact. The zip is then checked, and a zip within the limits
 * unpacked by a second run, from the cache.
 */
async function downloadWithinLimits(
  options: FetchGoModuleOptions,
  version: string,
  cwd: string,
): Promise<RunResult> {
  const { name } = options;
  const privateCache = join(options.workDir, "plugin-module-cache");
  await mkdir(privateCache, { recursive: true });
  const go = options.go.withModuleCache(privateCache);
  const args = ["mod", "download", "-modcacherw", "-json", `${name}@${version}`];
  // A proxied module path's first element has a dot, so it is never `cache`.
  const first = escapeModulePath(name.split("/")[0] ?? "");
  const blocker = name.includes("/") && first !== "cache" ? join(privateCache, first) : undefined;
  if (blocker) await writeFile(blocker, "");
  const fetched = await go.download(args, cwd);
  if (!blocker) return fetched;
  const zip = join(
    privateCache,
    "cache",
    "download",
    escapeModulePath(name),
    "@v",
    `${escapeModulePath(version)}.zip`,
  );
  if (!(await isFile(zip))) return fetched;
  await checkModuleZip(zip, options.unpacker.limits, `${name}@${version}`);
  await rm(blocker, { force: true });
  return go.download(args, cwd);
}

/**
 * Copies a module tree into the build with the source unpacker (in the
 * sandbox: regular files only, no link out, within the source limits), drops
 * VCS metadata, and returns Go's dirhash `h1:` of what is left. For a tree
 * without nested modules that is the hash go.sum records for the module, so
 * catalog and proxy origins read alike.
 */
async function copyModule(
  options: FetchGoModuleOptions,
  from: string,
  to: string,
  prefix: string,
): Promise<string> {
  await options.unpacker.unpack({
    kind: "folder",
    from,
    to,
    what: prefix,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const files: { name: string; sha256: string }[] = [];
  const walk = async (relativeDir: string): Promise<void> => {
    for (const entry of await readdir(join(to, relativeDir), { withFileTypes: true })) {
      const path = relativeDir ? `${relativeDir}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (VCS_FOLDERS.has(entry.name)) {
          await rm(join(to, path), { recursive: true, force: true });
          continue;
        }
        await walk(path);
      } else if (entry.isFile()) {
        const hash = createHash("sha256");
        for await (const chunk of createReadStream(join(to, path))) hash.update(chunk as Buffer);
        files.push({ name: `${prefix}/${path}`, sha256: hash.digest("hex") });
      }
    }
  };
  await walk("");
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const summary = files.map((file) => `${file.sha256}  ${file.name}\n`).join("");
  return `h1:${createHash("sha256").update(summary).digest("base64")}`;
}

const VCS_FOLDERS = new Set([".git", ".hg", ".svn"]);

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isFile(),
    () => false,
  );
}

/** Go's reason, with every absolute path (the proxy's folder, the module cache) left out. */
function redactedReason(message: string): string {
  return firstLines(message.replace(/(^|[\s"'(=])\/[^\s"'():,]+/g, "$1…"), 3);
}
