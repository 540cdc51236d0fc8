import { existsSync, lstatSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);

/** This package's root: dist/src/compiler/sandbox/ is four levels down. */
const PACKAGE_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

/** The folder of an installed package (`typescript`). */
export function packageDir(name: string): string {
  return dirname(require.resolve(`${name}/package.json`));
}

/**
 * An installed package's folder with the scope folder beside it that holds
 * its platform binary (`esbuild` and `@esbuild`, `typescript` and
 * `@typescript`): what a step needs to run that tool, and nothing else of
 * the installation.
 */
export function toolFolders(name: string): string[] {
  const dir = packageDir(name);
  return [dir, join(dirname(dir), `@${name}`)].filter((path) => existsSync(path));
}

/** The node_modules folder that holds `tar` and what it needs. */
function tarModules(): string {
  const dir = packageDir("tar");
  return dirname(dir);
}

/**
 * This package's node_modules when it is a link (an installation that links
 * it in from elsewhere): the programs import through that path, so the step
 * needs the link itself as well as the folders it leads to.
 */
function linkedModules(): string[] {
  const path = join(PACKAGE_ROOT, "node_modules");
  try {
    return lstatSync(path).isSymbolicLink() ? [path] : [];
  } catch {
    return [];
  }
}

/**
 * What a step needs to run one of this package's own programs with Node.js
 * inside the sandbox: the program's own folder, the package manifest (it
 * makes `.js` files ES modules), and the folders of the packages it
 * imports (`tar` and its dependencies, `esbuild`), read-only. Nothing else
 * of the server's installation: a plugin that names a server file finds
 * nothing there.
 */
export function nodeProgram(
  programUrl: URL,
  args: readonly string[],
  imports: "tar" | "esbuild",
): { file: string; args: string[]; readable: string[] } {
  const program = fileURLToPath(programUrl);
  return {
    file: process.execPath,
    args: [program, ...args],
    readable: [
      dirname(program),
      join(PACKAGE_ROOT, "package.json"),
      ...(imports === "tar" ? [tarModules()] : toolFolders("esbuild")),
      ...linkedModules(),
    ],
  };
}
