import { stat } from "node:fs/promises";
import { join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { isPackageName } from "atomix-plugins-core/model/package-name";
import semver from "semver";
import type { NodeRuntime } from "./node-runtime-spec.js";
import type { PluginPackage } from "./plugin-package.js";

/**
 * A plugin runs inside the runtime, next to the modules the runtime already
 * loaded: its ranges on those modules must accept the runtime's exact
 * versions (a second copy of an SDK breaks `instanceof`, singletons and
 * types), and those modules are never bundled. Its other dependencies are
 * bundled, so they must ship inside the package (`bundleDependencies`):
 * nothing is installed at build time, so no install script ever runs.
 */
export async function alignDependencies(pkg: PluginPackage, runtime: NodeRuntime): Promise<void> {
  const supplied = new Map(runtime.modules.map((module) => [module.name, module]));
  const declared: [string, string, string][] = [
    ...Object.entries(pkg.dependencies).map(([n, r]): [string, string, string] => [n, r, "dependency"]),
    ...Object.entries(pkg.peerDependencies).map(([n, r]): [string, string, string] => [
      n,
      r,
      "peer dependency",
    ]),
  ];
  for (const [name, range, kind] of declared) {
    // A name is a path below node_modules: one that is not a package name could name any folder.
    if (!isPackageName(name)) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${pkg.name}@${pkg.version}: package.json lists ${kind} ${JSON.stringify(name.slice(0, 100))}, which is not a valid npm package name`,
      );
    }
    const module = supplied.get(name);
    if (module) {
      if (semver.validRange(range) === null || !semver.satisfies(module.version, range)) {
        throw new PluginError(
          Code.FailedPrecondition,
          `${pkg.name}@${pkg.version} needs ${name} ${range} (${kind}), but runtime ${runtime.version} supplies ${name} ${module.version}; build a plugin version made for this runtime, or pick a runtime whose ${name} satisfies ${range}`,
        );
      }
      continue;
    }
    if (kind === "peer dependency") {
      const available = [...supplied.values()].map((m) => `${m.name} ${m.version}`).join(", ");
      throw new PluginError(
        Code.FailedPrecondition,
        `${pkg.name}@${pkg.version} has peer dependency ${name} ${range}, which runtime ${runtime.version} does not supply (it supplies: ${available || "nothing"})`,
      );
    }
    const installed = await stat(join(pkg.dir, "node_modules", name, "package.json")).catch(() => undefined);
    if (!installed) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${pkg.name}@${pkg.version} depends on ${name} ${range}, which runtime ${runtime.version} does not supply and the package does not ship; list it in bundleDependencies so that it is packed with the plugin`,
      );
    }
  }
}
