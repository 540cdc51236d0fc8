import { readFile, realpath, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import { isBelow } from "atomix-plugins-core/model/contained-path";
import { isPackageName } from "atomix-plugins-core/model/package-name";
import semver from "semver";
import { z } from "zod";
import type { RuntimeDescriptor } from "../../toolchain.js";

const typeofName = z.enum(["string", "number", "boolean", "function", "object", "symbol", "bigint"]);

/**
 * What runtime.json says to the Node.js toolchain, beyond `toolchain: "node"`:
 *
 * - `node`: the Node.js releases the runtime runs on (`"20"`, `"20.20"`); a
 *   build_version `node20` or `node20.20.2` is accepted when a listed
 *   release is a prefix of it, and built and stored as that release's
 *   (nodeBuildVersion).
 * - `modules`: what the runtime supplies to plugins, with the exact version
 *   and the package folder (relative to the descriptor) that holds its code
 *   and type declarations. Plugins import them but never bundle them.
 * - `export`: the named export every plugin must provide, its kind, the
 *   `typeof` of its members, and optionally the declared type it must
 *   satisfy (`type` exported by module `from`).
 */
export const nodeRuntimeSpecSchema = z
  .object({
    description: z.string().optional(),
    node: z
      .array(z.string().regex(/^\d+(\.\d+){0,2}$/, "expected a Node.js release such as 20 or 20.20.2"))
      .min(1),
    modules: z.record(
      // A module's name becomes node_modules/<name> in every build for the runtime.
      z.string().refine(isPackageName, "a module name must be an npm package name such as sdk or @acme/sdk"),
      z.object({
        version: z.string().refine((v) => semver.valid(v) === v, "expected an exact version"),
        path: z.string().min(1),
      }),
    ),
    export: z.object({
      name: z.string().regex(/^[A-Za-z_$][\w$]*$/, "expected an identifier"),
      kind: z.enum(["object", "function"]).default("object"),
      members: z.record(z.string(), typeofName).default({}),
      type: z
        .string()
        .regex(/^[A-Za-z_$][\w$]*$/)
        .optional(),
      from: z.string().optional(),
    }),
  })
  .strict();

export interface SuppliedModule {
  readonly name: string;
  readonly version: string;
  /** Absolute path of the package folder the runtime ships. */
  readonly dir: string;
}

export interface NodeRuntime {
  readonly version: string;
  readonly releases: readonly string[];
  readonly modules: readonly SuppliedModule[];
  readonly export: z.infer<typeof nodeRuntimeSpecSchema>["export"];
}

/**
 * Checks a descriptor's spec and its module folders (each must hold a
 * package.json of the declared name and version). A broken descriptor is the
 * operator's to fix: FAILED_PRECONDITION naming the file and field.
 */
export async function readNodeRuntime(descriptor: RuntimeDescriptor): Promise<NodeRuntime> {
  const file = join(descriptor.dir, "runtime.json");
  const spec = parseNodeRuntimeSpec(descriptor);
  const modules: SuppliedModule[] = [];
  const root = await realpath(descriptor.dir).catch(() => resolve(descriptor.dir));
  for (const [name, module] of Object.entries(spec.modules)) {
    const dir = resolve(descriptor.dir, module.path);
    // Its folder is copied into builds: it must be the release's own, links resolved.
    const real = await realpath(dir).catch(() => dir);
    if (!isBelow(root, real)) {
      throw new PluginError(
        Code.FailedPrecondition,
        `runtime descriptor ${file}: modules.${name}.path ${module.path} leaves the release's folder`,
      );
    }
    let pkg: SuppliedPackageJson;
    try {
      pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8")) as typeof pkg;
    } catch (error) {
      throw new PluginError(
        Code.FailedPrecondition,
        `runtime descriptor ${file}: module ${name} has no readable package.json in ${dir}`,
        { cause: error },
      );
    }
    if (pkg.name !== name || pkg.version !== module.version) {
      throw new PluginError(
        Code.FailedPrecondition,
        `runtime descriptor ${file}: ${dir} holds ${pkg.name}@${pkg.version}, not ${name}@${module.version}`,
      );
    }
    for (const entry of entryFiles(pkg)) {
      const path = resolve(real, entry);
      const isFile = await stat(path).then(
        (info) => info.isFile(),
        () => false,
      );
      if (!isBelow(real, path) || !isFile) {
        throw new PluginError(
          Code.FailedPrecondition,
          `runtime descriptor ${file}: module ${name} names ${entry} in its package.json, which the release does not hold; every build for this runtime would fail`,
        );
      }
    }
    modules.push({ name, version: module.version, dir });
  }
  if (spec.export.type && !spec.export.from) {
    throw new PluginError(
      Code.FailedPrecondition,
      `runtime descriptor ${file}: export.type needs export.from`,
    );
  }
  if (spec.export.from !== undefined && !Object.hasOwn(spec.modules, spec.export.from)) {
    throw new PluginError(
      Code.FailedPrecondition,
      `runtime descriptor ${file}: export.from ${quoted(spec.export.from)} is not one of the modules the runtime supplies (${Object.keys(spec.modules).join(", ") || "none"}); every build for this runtime would fail its type check`,
    );
  }
  return { version: descriptor.version, releases: spec.node, modules, export: spec.export };
}

/** What of a supplied module's package.json a build relies on. */
interface SuppliedPackageJson {
  name?: string;
  version?: string;
  main?: unknown;
  types?: unknown;
  typings?: unknown;
  exports?: unknown;
}

/**
 * The files a supplied module's package.json names as its entry points:
 * `main`, `types`, `typings` and every path of `exports` (subpath patterns
 * aside), or Node.js's default `index.js` when it names neither `main` nor
 * `exports`. Plugins' imports resolve to them in the type check and the
 * verification load, so a release that lacks one fails every build.
 */
function entryFiles(pkg: SuppliedPackageJson): string[] {
  const found: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === "string") found.push(value);
    else if (Array.isArray(value)) value.forEach(walk);
    else if (typeof value === "object" && value !== null) Object.values(value).forEach(walk);
  };
  for (const value of [pkg.main, pkg.types, pkg.typings, pkg.exports]) walk(value);
  if (pkg.main === undefined && pkg.exports === undefined) found.push("index.js");
  return [...new Set(found.filter((entry) => !entry.includes("*")))];
}

function parseNodeRuntimeSpec(descriptor: RuntimeDescriptor): z.infer<typeof nodeRuntimeSpecSchema> {
  const parsed = nodeRuntimeSpecSchema.safeParse(descriptor.spec);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "$"}: ${issue.message}`);
    throw new PluginError(
      Code.FailedPrecondition,
      `runtime descriptor ${join(descriptor.dir, "runtime.json")} is invalid: ${problems.join("; ")}`,
    );
  }
  return parsed.data;
}

/**
 * The build version an artifact for `buildVersion` is built and stored
 * under: `node` and the most precise release the runtime declares that
 * `buildVersion` names or refines (`node20.20.2` → `node20` for a runtime
 * that lists "20"; `node20.20.2` → `node20.20` for one that lists "20.20").
 * The bundle targets the declared release, so it loads on every Node.js of
 * that line, and a caller cannot make a new build and a new stored artifact
 * by naming another patch release. A build_version no declared release is
 * a prefix of is FAILED_PRECONDITION naming those the runtime accepts.
 */
export function nodeBuildVersion(descriptor: RuntimeDescriptor, buildVersion: string): string {
  return declaredRelease(parseNodeRuntimeSpec(descriptor).node, descriptor.version, buildVersion);
}

/** The esbuild target for `buildVersion`: its declared release's (see nodeBuildVersion). */
export function nodeTarget(runtime: NodeRuntime, buildVersion: string): string {
  return declaredRelease(runtime.releases, runtime.version, buildVersion);
}

function declaredRelease(releases: readonly string[], runtimeVersion: string, buildVersion: string): string {
  const match = /^node(\d+(?:\.\d+){0,2})$/.exec(buildVersion);
  const wanted = match?.[1]?.split(".");
  let best: string[] | undefined;
  for (const release of releases) {
    const parts = release.split(".");
    const refines = wanted && parts.length <= wanted.length && parts.every((part, i) => part === wanted[i]);
    if (refines && parts.length > (best?.length ?? 0)) best = parts;
  }
  if (!best) {
    const available = releases.map((release) => `node${release}`).join(", ");
    throw new PluginError(
      Code.FailedPrecondition,
      `runtime ${runtimeVersion} does not run on ${buildVersion}; it runs on ${available} (use one of these as build_version; a more precise release such as ${available.split(", ")[0]}.x.y is built as the one it refines)`,
    );
  }
  return `node${best.join(".")}`;
}
