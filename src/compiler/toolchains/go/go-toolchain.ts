import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { ANNOTATIONS } from "atomix-plugins-core/model/annotations";
import { formatBuildKey } from "atomix-plugins-core/model/build-key";
import { isBelow } from "atomix-plugins-core/model/contained-path";
import type { Logger } from "pino";
import { DEFAULT_MAX_BUILD_OUTPUT } from "../../build-defaults.js";
import { redactOutsidePaths } from "../../redact-outside-paths.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import { createSourceUnpacker, type SourceUnpacker } from "../../sources/source-unpacker.js";
import type { BuildJob, BuildOutput, Toolchain } from "../../toolchain.js";
import { createGoBuildCaches } from "./go-build-cache.js";
import { type GoCommand, goCommand } from "./go-command.js";
import { type GoInstallations, probeGoInstallations, selectGoInstallation } from "./go-installations.js";
import {
  checkPluginReplacements,
  findVersionConflicts,
  firstLines,
  type GoMod,
  planAlignment,
  readGoMod,
  runtimeReplacementDirs,
} from "./go-mod.js";
import { fetchGoModule, type GoModuleSource } from "./go-module-source.js";
import { checkGoPlugin } from "./go-plugin-check.js";
import { GO_RELEASE, type GoRuntimeSpec, parseGoRuntimeSpec, parseGoTypeName } from "./go-runtime-spec.js";
import { checkGoSymbolType } from "./go-symbol-type.js";

/** Media type of Go plugin artifacts: ELF shared objects. */
export const GO_PLUGIN_MEDIA_TYPE = "application/x-sharedlib";

/** Annotations only the Go toolchain writes. */
export const GO_ANNOTATIONS = {
  /** The requirements moved to the runtime's versions: `path from=>to, ...`, or `none`. */
  alignment: "dev.atomix.go.alignment",
  /** The `go build` flags used. */
  buildFlags: "dev.atomix.go.build-flags",
} as const;

export interface GoToolchainOptions {
  /** The sandbox every go run (and the gcc it starts) runs in. */
  readonly sandbox: Sandbox;
  /** Largest file a build may write, the plugin included (--max-build-output); 128 MiB by default. */
  readonly maxOutputBytes?: number;
  /** Copies plugin modules into builds; default limits in the sandbox if unset. */
  readonly unpacker?: SourceUnpacker;
  /**
   * Persistent caches: GOCACHE per plugin module in
   * `<cacheDir>/build-by-module/` (a warm cache makes a build take under a
   * second instead of about ten) and GOMODCACHE in `<cacheDir>/mod`.
   */
  readonly cacheDir: string;
  /** Source catalogs, asked in order: `<dir>/<module path>/<version>/` holds a plugin module. */
  readonly sources?: readonly string[];
  /**
   * Go installations: GOROOT directories or `go` commands. Default `["go"]`,
   * the one on PATH. A build uses the one whose `go version` equals the
   * request's build_version.
   */
  readonly installations?: readonly string[];
  /**
   * GOPROXY for plugin modules not in the catalog and for their
   * dependencies. Default `off`: builds never reach the network. Directory
   * paths are turned into `file://` URLs (a proxy layout on disk).
   */
  readonly proxy?: string;
  /** GOSUMDB. Default `off`: a plugin's go.sum still pins what it lists. */
  readonly sumdb?: string;
  /** GONOSUMDB patterns, for a sum database that must not be asked about private modules. */
  readonly noSumCheck?: string;
  /** Bytes all of `cacheDir` may hold (--go-cache-max-bytes); 10 GiB by default. */
  readonly maxCacheBytes?: number;
  readonly log?: Logger;
}

/**
 * The toolchain of Go runtimes: builds a plugin module with
 * `go build -buildmode=plugin -trimpath` by the runtime's exact Go release,
 * against the runtime's versions of every module both use. See
 * go-runtime-spec.ts for what the runtime descriptor says.
 */
export function createGoToolchain(options: GoToolchainOptions): Toolchain {
  const proxy = normalizeGoProxy(options.proxy ?? "off");
  const sumdb = options.sumdb ?? "off";
  const cacheDir = resolve(options.cacheDir);
  const catalogs = (options.sources ?? []).map((dir) => resolve(dir));
  const { sandbox } = options;
  const unpacker = options.unpacker ?? createSourceUnpacker({ sandbox });
  const buildCaches = createGoBuildCaches(cacheDir, {
    ...(options.maxCacheBytes === undefined ? {} : { maxBytes: options.maxCacheBytes }),
    ...(options.log ? { log: options.log } : {}),
  });
  let installations: Promise<GoInstallations> | undefined;
  // Probed once: installing another Go release takes a restart to be seen.
  const installed = () => {
    installations ??= probeGoInstallations(options.installations ?? ["go"]);
    return installations;
  };

  return {
    name: "go",
    /** A Go plugin loads only into a runtime built by the same Go release: exactly a declared one. */
    buildVersionFor(runtime, buildVersion) {
      checkRelease(buildVersion, parseGoRuntimeSpec(runtime), runtime.version);
      return buildVersion;
    },
    caches: buildCaches.caches,
    async build(job: BuildJob): Promise<BuildOutput> {
      const { key, runtime, workDir, signal } = job;
      const spec = parseGoRuntimeSpec(runtime);
      const release = key.runtime.buildVersion;
      checkRelease(release, spec, runtime.version);
      const installation = selectGoInstallation(await installed(), release);

      await mkdir(join(workDir, "home"), { recursive: true });
      await mkdir(join(workDir, "tmp"), { recursive: true });
      const flags = ["-buildmode=plugin", "-trimpath", "-buildvcs=false", ...spec.buildFlags];
      const modCache = join(cacheDir, "mod");
      const what = formatBuildKey(key);
      const session = await buildCaches.open();
      let succeeded = false;
      try {
        const commandWith = (buildCache: string) =>
          goCommand({
            installation,
            sandbox,
            signal,
            env: {
              installation,
              workDir,
              buildCache,
              modCache,
              proxy,
              sumdb,
              ...(options.noSumCheck ? { noSumCheck: options.noSumCheck } : {}),
            },
            // The runtime's go.mod alone: not the rest of the folder it sits in.
            readable: [spec.goModPath],
            maxFileBytes: options.maxOutputBytes ?? DEFAULT_MAX_BUILD_OUTPUT,
          });
        // Until the plugin module is found, go runs with a throwaway cache:
        // a module that exists nowhere gets no cache of its own.
        const scratchCache = join(workDir, "go-cache");
        await mkdir(scratchCache, { recursive: true });
        const goMod = commandWith(scratchCache);
        const runtimeMod = await readGoMod(
          goMod,
          spec.goModPath,
          `runtime ${runtime.version}'s go.mod`,
          workDir,
        );
        // The runtime's directory replacements (operator-trusted) are what
        // every later step may read beyond the module, the caches and Go.
        const replacementDirs = runtimeReplacementDirs(runtimeMod, spec.goModPath);
        if (runtime.digest) checkRegisteredReplacements(replacementDirs, runtime.dir, runtime.version);
        const source = await fetchGoModule({
          name: key.plugin.name,
          version: key.plugin.version,
          catalogs,
          proxy,
          go: goMod.withReadable(replacementDirs),
          unpacker,
          workDir,
          signal,
        });
        const buildCache = await session.forModule(key.plugin.name, { installation, flags, sandbox, signal });
        const go = commandWith(buildCache).withReadable(replacementDirs);
        const output = await buildModule({
          go,
          key,
          spec,
          source,
          runtimeMod,
          flags,
          what,
          workDir,
          release,
          tidy: (text: string) =>
            firstLines(
              redactOutsidePaths(text.replaceAll(`${source.dir}/`, "").replaceAll(workDir, "."), [
                installation.goroot,
                modCache,
                ...replacementDirs,
              ]),
            ),
        });
        succeeded = true;
        return output;
      } finally {
        await session.close(succeeded);
      }
    },
  };
}

/** Aligns, checks and compiles the plugin module copied into the build, and checks what it built. */
async function buildModule(options: {
  go: GoCommand;
  key: BuildJob["key"];
  spec: GoRuntimeSpec;
  source: GoModuleSource;
  runtimeMod: GoMod;
  flags: readonly string[];
  what: string;
  workDir: string;
  release: string;
  tidy: (text: string) => string;
}): Promise<BuildOutput> {
  const { go, key, spec, source, runtimeMod, flags, what, workDir, release, tidy } = options;
  const pluginMod = await readGoMod(go, join(source.dir, "go.mod"), `${key.plugin.name}'s go.mod`);
  if (pluginMod.Module.Path !== key.plugin.name) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${what}: the module's go.mod declares module ${pluginMod.Module.Path}, not ${key.plugin.name}`,
    );
  }

  checkPluginReplacements(pluginMod, what);
  const plan = planAlignment(pluginMod, runtimeMod, spec.goModPath);
  if (plan.editArgs.length > 0) {
    const edit = await go.run(["mod", "edit", ...plan.editArgs, "go.mod"], source.dir);
    if (edit.exitCode !== 0) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${what}: cannot align go.mod to the runtime's: ${tidy(edit.stderr)}`,
      );
    }
  }
  const alignment = plan.changes.length
    ? plan.changes.map((c) => `${c.path} ${c.from}=>${c.to}`).join(", ")
    : "none";
  const alignedNote = plan.changes.length ? ` (requirements set to the runtime's: ${alignment})` : "";

  await checkLinkedVersions({ go, dir: source.dir, flags, runtimeMod, what, tidy, alignedNote });

  const artifactPath = join(workDir, "out", "plugin.so");
  const build = await go.run(["build", ...flags, "-o", artifactPath, "."], source.dir);
  if (build.exitCode !== 0) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${what} does not compile with ${release}${alignedNote}:\n${tidy(build.stderr || build.stdout)}`,
    );
  }
  // The type first: it tells a constant, a type or a function apart, where the symbol table only lacks a name.
  const symbolType = spec.symbolType === undefined ? undefined : parseGoTypeName(spec.symbolType);
  if (symbolType) {
    await checkGoSymbolType({
      go,
      dir: source.dir,
      workDir,
      flags,
      symbol: spec.symbol,
      type: symbolType,
      what,
      tidy,
    });
  }
  await checkGoPlugin({
    file: artifactPath,
    mainPackage: key.plugin.name,
    symbol: spec.symbol,
    go,
    what,
  });

  return {
    artifactPath,
    mediaType: GO_PLUGIN_MEDIA_TYPE,
    annotations: {
      [ANNOTATIONS.toolchain]: "go",
      [ANNOTATIONS.toolchainVersion]: release,
      [ANNOTATIONS.source]: source.origin,
      [ANNOTATIONS.sourceIntegrity]: source.integrity,
      [GO_ANNOTATIONS.alignment]: alignment,
      [GO_ANNOTATIONS.buildFlags]: flags.join(" "),
    },
  };
}

/**
 * GOPROXY as the operator wrote it, with directory entries made `file://`
 * URLs (go only accepts absolute URLs there).
 */
export function normalizeGoProxy(proxy: string): string {
  return proxy
    .split(/([,|])/)
    .map((entry) => {
      if (entry === "," || entry === "|" || entry === "off" || entry === "direct" || entry.includes("://")) {
        return entry;
      }
      return pathToFileURL(resolve(entry)).href;
    })
    .join("");
}

function checkRelease(release: string, spec: GoRuntimeSpec, runtimeVersion: string): void {
  if (!GO_RELEASE.test(release)) {
    throw new PluginError(
      Code.FailedPrecondition,
      `runtime ${runtimeVersion} is a Go runtime: build_version must be the Go release it was built with (${spec.goReleases.join(", ")}), not ${release}`,
    );
  }
  if (!spec.goReleases.includes(release)) {
    throw new PluginError(
      Code.FailedPrecondition,
      `runtime ${runtimeVersion} was built with ${spec.goReleases.join(", ")}, not ${release}: a Go plugin only loads into a runtime built by the same Go release`,
    );
  }
}

/**
 * Resolves the packages the plugin links and refuses a module version its
 * runtime does not contain (plugin.Open would refuse it later, on every
 * runtime instance). Missing modules and packages surface here too.
 */
async function checkLinkedVersions(options: {
  go: GoCommand;
  dir: string;
  flags: readonly string[];
  runtimeMod: GoMod;
  what: string;
  tidy: (text: string) => string;
  alignedNote: string;
}): Promise<void> {
  const { go, dir, flags, runtimeMod, what, tidy, alignedNote } = options;
  const format = "{{with .Module}}{{if .Version}}{{.Path}} {{.Version}}{{end}}{{end}}";
  const listFlags = flags.filter((flag) => flag !== "-buildmode=plugin");
  // The one step that may fetch the plugin's dependencies (module cache writable, proxy reachable).
  const list = await go.download(["list", "-deps", ...listFlags, "-f", format, "."], dir);
  if (list.exitCode !== 0) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${what} does not resolve its dependencies${alignedNote}:\n${tidy(list.stderr)}`,
    );
  }
  const conflicts = findVersionConflicts(list.stdout, runtimeMod);
  if (conflicts.length > 0) {
    const listed = conflicts.map((c) => `${c.path} ${c.plugin} (runtime has ${c.runtime})`).join(", ");
    throw new PluginError(
      Code.FailedPrecondition,
      `${what} needs module versions the runtime does not contain: ${listed}; a dependency of the plugin requires them. Build the plugin against the runtime's versions`,
    );
  }
}

/**
 * A registered release was uploaded, not installed by the operator: as Go
 * itself reads its go.mod, every replacement folder must be one of its own
 * or lie in the OS tree under /usr that every build sees anyway (the same
 * rule registration checks, held here against Go's own parse).
 */
function checkRegisteredReplacements(dirs: readonly string[], releaseDir: string, version: string): void {
  for (const dir of dirs) {
    // Both resolved: a relative --data names the release's folder relatively, Go's parse absolutely.
    if (isBelow(releaseDir, dir) || isBelow("/usr", dir)) continue;
    throw new PluginError(
      Code.FailedPrecondition,
      `runtime ${version}'s go.mod replaces a module with a folder outside the release and outside /usr; register a release that carries it`,
    );
  }
}
