import { readdir, stat } from "node:fs/promises";
import { join, relative, resolve, sep } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { PluginRef } from "atomix-plugins-core/model/build-key";
import type { PluginSource } from "./plugin-source.js";

/**
 * A local catalog: `<dir>/<name>/<version>/` (a scope is one more directory
 * level: `@acme/driver/1.2.0/`) holding a package folder (package.json at its
 * top) or one `.tgz` package tarball; `<dir>/<name>/<version>.tgz` works too.
 * Air-gapped sites and the bundled examples use it. The server only looks
 * at names here: the unpacker reads and copies the package in the sandbox.
 */
export function createCatalogSource(root: string): PluginSource {
  const base = resolve(root);
  return {
    description: `catalog ${base}`,
    // The folder's last two names tell a caller which catalog (examples/plugins,
    // a --sources folder) without showing the server's paths; the log has those.
    label: `the source catalog "…/${base.split(sep).slice(-2).join("/")}"`,
    async fetch(plugin: PluginRef, options) {
      const versionDir = join(base, plugin.name, plugin.version);
      // The name was validated (no "..", no leading "/"), but keep the promise explicit.
      if (relative(base, versionDir).startsWith("..")) return undefined;
      const source = (await isFile(join(versionDir, "package.json")))
        ? ({ kind: "folder", from: versionDir } as const)
        : await catalogTarball(versionDir, plugin);
      if (!source) return undefined;
      const unpacked = await options.unpacker.unpack({
        ...source,
        to: options.destDir,
        what: `${plugin.name}@${plugin.version}`,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      // Named from the catalog's root: a manifest shows no server path.
      return {
        dir: options.destDir,
        origin: `catalog:${relative(base, source.from)}`,
        integrity: unpacked.integrity,
      };
    },
  };
}

/** The one `.tgz` of a catalog version: in its folder, or beside it as `<version>.tgz`. */
async function catalogTarball(
  versionDir: string,
  plugin: PluginRef,
): Promise<{ kind: "tarball"; from: string } | undefined> {
  const tarballs = (await isDirectory(versionDir))
    ? (await readdir(versionDir))
        .filter((name) => name.endsWith(".tgz"))
        .map((name) => join(versionDir, name))
    : [];
  if (tarballs.length === 0 && (await isFile(`${versionDir}.tgz`))) tarballs.push(`${versionDir}.tgz`);
  if (tarballs.length > 1) {
    throw new PluginError(
      Code.FailedPrecondition,
      `the catalog's ${plugin.name}/${plugin.version} holds ${tarballs.length} tarballs; a catalog version directory holds one package`,
    );
  }
  const file = tarballs[0];
  return file ? { kind: "tarball", from: file } : undefined;
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}
