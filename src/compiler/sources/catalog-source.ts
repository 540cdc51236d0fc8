import { createHash } from "node:crypto";
import { cp, readdir, readFile, stat } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import ssri from "ssri";
import { Code, PluginError } from "../../errors/plugin-error.js";
import type { PluginRef } from "../../model/build-key.js";
import type { PluginSource } from "./plugin-source.js";
import { unpackTarball } from "./unpack-tarball.js";

/**
 * A local catalog: `<dir>/<name>/<version>/` (a scope is one more directory
 * level: `@acme/driver/1.2.0/`) holding a package folder (package.json at its
 * top) or one `.tgz` package tarball; `<dir>/<name>/<version>.tgz` works too.
 * Air-gapped sites and the bundled examples use it.
 */
export function createCatalogSource(root: string): PluginSource {
  const base = resolve(root);
  return {
    description: `catalog ${base}`,
    label: "the source catalog",
    async fetch(plugin: PluginRef, options) {
      const versionDir = join(base, plugin.name, plugin.version);
      // The name was validated (no "..", no leading "/"), but keep the promise explicit.
      if (relative(base, versionDir).startsWith("..")) return undefined;
      const destDir = options.destDir;
      if (await isFile(join(versionDir, "package.json"))) {
        await cp(versionDir, destDir, { recursive: true, verbatimSymlinks: true });
        return { dir: destDir, origin: `catalog:${versionDir}`, integrity: await folderIntegrity(destDir) };
      }
      const tarball = (await isDirectory(versionDir))
        ? (await readdir(versionDir))
            .filter((name) => name.endsWith(".tgz"))
            .map((name) => join(versionDir, name))
        : [];
      if (tarball.length === 0 && (await isFile(`${versionDir}.tgz`))) tarball.push(`${versionDir}.tgz`);
      if (tarball.length > 1) {
        throw new PluginError(
          Code.FailedPrecondition,
          `${versionDir} holds ${tarball.length} tarballs; a catalog version directory holds one package`,
        );
      }
      const file = tarball[0];
      if (!file) return undefined;
      const data = await readFile(file);
      await unpackTarball(data, destDir, {
        what: file,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      return {
        dir: destDir,
        origin: `catalog:${file}`,
        integrity: ssri.fromData(data, { algorithms: ["sha512"] }).toString(),
      };
    },
  };
}

/**
 * sha512 over the sorted relative paths and contents of a folder: equal
 * folders give equal strings, so a manifest says which sources it was built from.
 */
async function folderIntegrity(dir: string): Promise<string> {
  const hash = createHash("sha512");
  const files = (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
  for (const file of files) {
    const content = await readFile(file);
    hash.update(`${relative(dir, file)}\0${content.length}\0`).update(content);
  }
  return `sha512-${hash.digest("base64")}`;
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}
