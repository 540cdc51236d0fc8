import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { RunResult } from "../../run-process.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import type { GoInstallation } from "./go-installations.js";

/**
 * The `go` command of one installation, bound to one build: its environment,
 * its signal, and what its sandbox shows. Two ways to run it, so that only
 * steps that fetch modules ever reach the proxy or write the shared module
 * cache.
 */
export interface GoCommand {
  readonly installation: GoInstallation;
  /** go offline: GOPROXY=off, no network, the module cache read-only. */
  run(args: readonly string[], cwd: string): Promise<RunResult>;
  /** go resolving and downloading modules: the proxy reachable, the module cache writable. */
  download(args: readonly string[], cwd: string): Promise<RunResult>;
  /** The same command with more folders readable (the runtime's replacement directories). */
  withReadable(paths: readonly string[]): GoCommand;
  /** The same command with another GOMODCACHE: one private to the build, for what must not be shared yet. */
  withModuleCache(dir: string): GoCommand;
}

export interface GoEnvironmentOptions {
  readonly installation: GoInstallation;
  /** The build's private directory: HOME, TMPDIR and GOPATH live in it. */
  readonly workDir: string;
  /** GOCACHE: the plugin module's own build cache (see go-build-cache.ts). */
  readonly buildCache: string;
  /** GOMODCACHE, shared by every build; written only by downloading steps. */
  readonly modCache: string;
  /** GOPROXY as go reads it; `off` keeps every build off the network. */
  readonly proxy: string;
  /** GOSUMDB; `off` for air-gapped sites (go.sum files still pin what they list). */
  readonly sumdb: string;
  /** GOPRIVATE/GONOSUMDB-style patterns of modules never checked against the sum database. */
  readonly noSumCheck?: string;
}

/**
 * The whole environment of a build: nothing leaks in from the server's own
 * environment (no GOFLAGS, GOPATH, proxies or credentials of the operator's
 * shell), and nothing the build does leaks out except into the caches.
 */
export function goEnvironment(options: GoEnvironmentOptions): Record<string, string> {
  const { installation, workDir } = options;
  const env: Record<string, string> = {
    // gcc (cgo: plugins need it) and the chosen go first.
    PATH: `${join(installation.goroot, "bin")}:/usr/local/bin:/usr/bin:/bin`,
    HOME: join(workDir, "home"),
    TMPDIR: join(workDir, "tmp"),
    LANG: "C",
    GOROOT: installation.goroot,
    GOPATH: join(workDir, "gopath"),
    GOCACHE: options.buildCache,
    GOMODCACHE: options.modCache,
    GOPROXY: options.proxy,
    GOSUMDB: options.sumdb,
    // The plugin's go.mod is rewritten to the runtime's versions, so go must
    // be allowed to complete go.mod/go.sum in the (temporary) copy.
    GOFLAGS: "-mod=mod",
    GO111MODULE: "on",
    GOWORK: "off",
    GOENV: "off",
    // Go 1.21+: never download another toolchain because a go.mod asks for one.
    GOTOOLCHAIN: "local",
    GOTELEMETRY: "off",
    CGO_ENABLED: "1",
  };
  if (options.noSumCheck) env.GONOSUMDB = options.noSumCheck;
  return env;
}

/** The folders of `file://` entries of a GOPROXY list: a downloading step reads them. */
export function proxyFolders(proxy: string): string[] {
  return proxy
    .split(/[,|]/)
    .filter((entry) => entry.startsWith("file://"))
    .map((entry) => fileURLToPath(entry));
}

export function goCommand(options: {
  installation: GoInstallation;
  env: GoEnvironmentOptions;
  sandbox: Sandbox;
  signal?: AbortSignal;
  readable?: readonly string[];
  /** Largest file any go step (the compiler, the linker, gcc) may write. */
  maxFileBytes?: number;
}): GoCommand {
  const { installation, sandbox, signal } = options;
  const online = goEnvironment(options.env);
  const offline = { ...online, GOPROXY: "off" };
  const readable = [installation.goroot, ...(options.readable ?? [])];
  // A proxy list naming a network proxy (or `direct`): its download steps need the network.
  const network = /(^|[,|])(https?:\/\/|direct)/.test(options.env.proxy);
  const writable = [options.env.workDir, options.env.buildCache];
  const run = (args: readonly string[], cwd: string, downloading: boolean) =>
    sandbox.run({
      file: installation.go,
      args,
      cwd,
      env: downloading ? online : offline,
      readable: downloading
        ? [...readable, ...proxyFolders(options.env.proxy)]
        : [...readable, options.env.modCache],
      writable: downloading ? [...writable, options.env.modCache] : writable,
      network: downloading && network,
      ...(options.maxFileBytes === undefined ? {} : { limits: { fileBytes: options.maxFileBytes } }),
      ...(signal ? { signal } : {}),
    });
  return {
    installation,
    run: (args, cwd) => run(args, cwd, false),
    download: (args, cwd) => run(args, cwd, true),
    withReadable: (paths) => goCommand({ ...options, readable: [...(options.readable ?? []), ...paths] }),
    withModuleCache: (dir) => goCommand({ ...options, env: { ...options.env, modCache: dir } }),
  };
}
