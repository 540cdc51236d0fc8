import { createRequire } from "node:module";
import { dirname, join, sep } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);

/** This package's root: dist/src/compiler/sandbox/ is four levels down. */
const PACKAGE_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

/**
 * The node_modules folders that hold what step programs import (tar,
 * esbuild, the TypeScript compiler), wherever npm hoisted them: a step sees
 * these, read-only, and nothing else of the installation.
 */
const MODULE_FOLDERS = [
  ...new Set(
    ["tar/package.json", "esbuild/package.json", "typescript/package.json"].map((name) => {
      const path = require.resolve(name);
      return path.slice(0, path.lastIndexOf(`${sep}node_modules${sep}`) + `${sep}node_modules`.length);
    }),
  ),
];

/**
 * What a step needs to run one of this package's own programs with Node.js
 * inside the sandbox: the compiled program folder (`dist/src`), the package
 * manifest (it makes `.js` files ES modules), and the module folders.
 */
export function nodeProgram(
  programUrl: URL,
  args: readonly string[],
): {
  file: string;
  args: string[];
  readable: string[];
} {
  return {
    file: process.execPath,
    args: [fileURLToPath(programUrl), ...args],
    readable: [join(PACKAGE_ROOT, "dist", "src"), join(PACKAGE_ROOT, "package.json"), ...MODULE_FOLDERS],
  };
}

/** The folder of an installed package (`typescript`), for steps that run its programs. */
export function packageDir(name: string): string {
  return dirname(require.resolve(`${name}/package.json`));
}
