import { join, relative, sep } from "node:path";
import validateNpmPackageName from "validate-npm-package-name";
import { Code, PluginError, quoted } from "../errors/plugin-error.js";
import { isBelow } from "./contained-path.js";

/**
 * An npm package name as npm itself accepts one (old rules: capitals
 * allowed). Such a name is one folder (`sdk`) or a scope and a folder
 * (`@acme/sdk`), neither `.`-led nor holding `/` elsewhere: below a
 * node_modules folder it names a folder of that node_modules and nothing else.
 */
export function isPackageName(name: string): boolean {
  return name.length > 0 && name.length <= 214 && validateNpmPackageName(name).validForOldPackages;
}

/**
 * `<nodeModules>/<name>`, after checking that `name` is a package name and
 * that the path stays below `nodeModules` (whatever a later change of the
 * name rules lets through). Every place that writes or copies a module by
 * its name goes through here: a name comes from a runtime release or a
 * plugin's package.json, both hostile until checked.
 */
export function packageFolder(nodeModules: string, name: string, code = Code.FailedPrecondition): string {
  const fail = () =>
    new PluginError(
      code,
      `module name ${quoted(name)} is not an npm package name (sdk, @acme/sdk); a module name cannot name a path`,
    );
  if (!isPackageName(name)) throw fail();
  const folder = join(nodeModules, name);
  if (!isBelow(nodeModules, folder) || relative(nodeModules, folder).split(sep).length > 2) throw fail();
  return folder;
}
