import { isAbsolute, resolve } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { z } from "zod";
import type { RuntimeDescriptor } from "../../toolchain.js";

/** A Go release as `go version` names it: go1.19.8, go1.21.0, go1.22rc1. */
export const GO_RELEASE = /^go[1-9][0-9]*\.[0-9]+(\.[0-9]+|(rc|beta)[0-9]+)?$/;

/** Flags the toolchain sets itself: a descriptor may not override them. */
const RESERVED_FLAGS = ["-o", "-buildmode", "-modfile", "-mod", "-C", "-n", "-toolexec", "-overlay"];

/**
 * The Go part of `runtime.json` (everything beside `toolchain`), for example
 *
 * ```json
 * {
 *   "toolchain": "go",
 *   "goReleases": ["go1.19.8"],
 *   "goMod": "go.mod",
 *   "symbol": "Plugin",
 *   "symbolType": "example.com/atomix/sdk.Driver",
 *   "buildFlags": ["-tags=grpcnotrace"]
 * }
 * ```
 */
export const goRuntimeSpecSchema = z
  .object({
    /** What people read in listings. */
    description: z.string().optional(),
    /**
     * The Go releases this runtime release was built with: the build_versions
     * the compiler accepts for it. A plugin is built by exactly that release.
     */
    goReleases: z
      .array(z.string().regex(GO_RELEASE, "expected a Go release such as go1.19.8"))
      .min(1, "name at least one Go release"),
    /**
     * The runtime module's go.mod, relative to the descriptor's directory (or
     * absolute). Its requirements are the versions every plugin is aligned to;
     * its replace directives are applied to plugins too (relative directory
     * replacements are resolved against the go.mod's directory). It must be
     * the complete go.mod of a `go 1.17`-or-later module, which lists every
     * module the runtime binary contains.
     */
    goMod: z.string().min(1),
    /** The exported package-level variable or function a driver must have in its main package. */
    symbol: z.string().regex(/^\p{Lu}[\p{L}\p{N}_]*$/u, "expected an exported Go identifier such as Plugin"),
    /**
     * The type `symbol` must have: a package path and a named type in it,
     * `example.com/atomix/sdk.Driver`. The symbol must then be a package-level
     * variable of exactly that type (not a type that implements it, a pointer
     * to it, or a function), which is what a runtime's `sym.(*sdk.Driver)`
     * assertion after `plugin.Lookup` needs. Without it, only the name is
     * checked. It becomes part of a Go file the build compiles, so nothing
     * beyond those two parts passes.
     */
    symbolType: z
      .string()
      .max(1024)
      .refine((text) => parseGoTypeName(text) !== undefined, {
        message:
          "expected a package path and an exported type name in it, such as example.com/atomix/sdk.Driver",
      })
      .optional(),
    /**
     * Extra `go build` flags the runtime itself was built with and plugins
     * must share (`-tags=...`, `-gcflags=...`, `-race`), each one token in the
     * `-name` or `-name=value` form. `-buildmode=plugin -trimpath
     * -buildvcs=false` are always set; `-o`, `-mod`, `-modfile` are the
     * toolchain's.
     */
    buildFlags: z
      .array(
        z
          .string()
          .regex(/^-{1,2}[a-z][a-z0-9]*(=.*)?$/, "expected one token: -name or -name=value")
          .refine((flag) => !RESERVED_FLAGS.includes(flagName(flag)), {
            message: `the toolchain sets ${RESERVED_FLAGS.join(", ")} itself`,
          }),
      )
      .default([]),
  })
  .strict();

export type GoRuntimeSpec = z.infer<typeof goRuntimeSpecSchema> & {
  /** `goMod` resolved to an absolute path. */
  readonly goModPath: string;
};

/**
 * Reads a Go runtime descriptor's spec. A bad descriptor is the operator's
 * mistake, not the caller's: FAILED_PRECONDITION naming the field.
 */
export function parseGoRuntimeSpec(runtime: RuntimeDescriptor): GoRuntimeSpec {
  const parsed = goRuntimeSpecSchema.safeParse(runtime.spec);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join(".") || "spec"}: ${issue.message}`,
    );
    throw new PluginError(
      Code.FailedPrecondition,
      `the descriptor of Go runtime ${runtime.version} (${runtime.dir}/runtime.json) is invalid: ${problems.join("; ")}`,
    );
  }
  const goModPath = isAbsolute(parsed.data.goMod)
    ? parsed.data.goMod
    : resolve(runtime.dir, parsed.data.goMod);
  return { ...parsed.data, goModPath };
}

/** A named type of a package, as `symbolType` names it. */
export interface GoTypeName {
  /** The package's import path: `example.com/atomix/sdk`. */
  readonly importPath: string;
  /** The exported type name: `Driver`. */
  readonly name: string;
}

/**
 * Splits `example.com/atomix/sdk.Driver` at its last dot (a type name has
 * none; an import path may: `gopkg.in/yaml.v3.Node`). Undefined unless the
 * path is a Go import path (golang.org/x/mod/module.CheckImportPath's
 * characters and element rules) and the name an exported identifier.
 */
export function parseGoTypeName(text: string): GoTypeName | undefined {
  const dot = text.lastIndexOf(".");
  if (dot < 0) return undefined;
  const importPath = text.slice(0, dot);
  const name = text.slice(dot + 1);
  if (!/^\p{Lu}[\p{L}\p{Nd}_]*$/u.test(name)) return undefined;
  // cgo's pseudo-package holds no Go types a plugin can declare a variable of.
  if (importPath === "C" || importPath.startsWith("-")) return undefined;
  const element = /^[A-Za-z0-9_~+-]([A-Za-z0-9._~+-]*[A-Za-z0-9_~+-])?$/;
  if (!importPath.split("/").every((part) => element.test(part))) return undefined;
  return { importPath, name };
}

function flagName(flag: string): string {
  const name = flag.replace(/^--/, "-");
  const eq = name.indexOf("=");
  return eq < 0 ? name : name.slice(0, eq);
}
