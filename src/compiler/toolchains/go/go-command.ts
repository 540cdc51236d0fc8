import { join } from "node:path";
import { type RunResult, runProcess } from "../../run-process.js";
import type { GoInstallation } from "./go-installations.js";

/** The `go` command of one installation, bound to one build's environment and signal. */
export interface GoCommand {
  readonly installation: GoInstallation;
  readonly env: Readonly<Record<string, string>>;
  run(args: readonly string[], cwd: string): Promise<RunResult>;
}

export interface GoEnvironmentOptions {
  readonly installation: GoInstallation;
  /** The build's private directory: HOME, TMPDIR and GOPATH live in it. */
  readonly workDir: string;
  /** Persistent GOCACHE (`<cacheDir>/build`) and GOMODCACHE (`<cacheDir>/mod`). */
  readonly cacheDir: string;
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
  const { installation, workDir, cacheDir } = options;
  const env: Record<string, string> = {
    // gcc (cgo: plugins need it) and the chosen go first.
    PATH: `${join(installation.goroot, "bin")}:/usr/local/bin:/usr/bin:/bin`,
    HOME: join(workDir, "home"),
    TMPDIR: join(workDir, "tmp"),
    LANG: "C",
    GOROOT: installation.goroot,
    GOPATH: join(workDir, "gopath"),
    GOCACHE: join(cacheDir, "build"),
    GOMODCACHE: join(cacheDir, "mod"),
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

export function goCommand(options: {
  installation: GoInstallation;
  env: Readonly<Record<string, string>>;
  signal?: AbortSignal;
}): GoCommand {
  const { installation, env, signal } = options;
  return {
    installation,
    env,
    run: (args, cwd) => runProcess(installation.go, args, signal ? { cwd, env, signal } : { cwd, env }),
  };
}
