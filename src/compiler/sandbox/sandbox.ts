import { execFile } from "node:child_process";
import { access, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, isAbsolute, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { Logger } from "pino";
import { DEFAULT_STEP_LIMITS } from "../build-defaults.js";
import { recordStepOutput } from "../build-output.js";
import { type RunResult, runProcess } from "../run-process.js";
import { bubblewrapArgs } from "./bubblewrap-args.js";
import { type CgroupLimiter, createCgroupLimiter } from "./cgroup-limiter.js";
import type { SandboxStep, StepLimits } from "./sandbox-step.js";

export interface StepResult extends RunResult {
  /** The step was killed for using more memory than its limit. */
  readonly outOfMemory: boolean;
}

export type SandboxMode = "bwrap" | "off";

export interface Sandbox {
  /** `bwrap`, `off` (the operator's choice), or `unavailable` (every step refused). */
  readonly kind: SandboxMode | "unavailable";
  /** One line for the start-up log: what contains the builds, and how. */
  readonly description: string;
  /** When unavailable: why builds are refused, in words for callers (no server paths). */
  readonly refusal?: string | undefined;
  /**
   * Resolves once steps can run. An unavailable sandbox is probed again
   * first, so that bubblewrap installed (or user namespaces allowed) after
   * the start is used without a restart: at most one probe per
   * `reprobeIntervalMs`, shared by every caller waiting, so a thousand
   * refused builds start one probe, not a thousand. FAILED_PRECONDITION
   * naming the fix while it still cannot start.
   */
  ready(): Promise<void>;
  /** Runs a step (after `ready`); FAILED_PRECONDITION naming the fix when the sandbox is unavailable. */
  run(step: SandboxStep): Promise<StepResult>;
}

/** How often an unavailable sandbox is probed again, at most: a probe starts one bubblewrap. */
export const DEFAULT_REPROBE_INTERVAL_MS = 2_000;

const execFileAsync = promisify(execFile);

const ADDRESS_SPACE_RESERVE = 1024 * 1024 * 1024;

/**
 * The sandbox every step that reads plugin-controlled input runs in.
 * `bwrap`: bubblewrap with every namespace unshared (no network, its own PID
 * namespace, a non-root user), a filesystem of the OS's /usr plus the paths
 * the step names, in a cgroup with the step's limits. It is probed here: when
 * it cannot start (no bubblewrap, user namespaces off), the sandbox is
 * `unavailable` and builds are refused with the reason until a probe at a
 * later build (see `ready`) finds it working. `off` runs steps
 * directly (still under rlimits and the cgroup), for hosts that contain the
 * whole server some other way.
 */
export async function createSandbox(
  options: {
    mode?: SandboxMode;
    limits?: Partial<StepLimits>;
    bwrap?: string;
    /** false: do without cgroups even where they are writable (what a server without them gets). */
    cgroups?: boolean;
    /** Least time between two probes of an unavailable sandbox; DEFAULT_REPROBE_INTERVAL_MS. */
    reprobeIntervalMs?: number;
    /** Told when an unavailable sandbox becomes available. */
    log?: Pick<Logger, "info">;
  } = {},
): Promise<Sandbox> {
  const mode = options.mode ?? "bwrap";
  const limits = { ...DEFAULT_STEP_LIMITS, ...options.limits };
  const cgroups = options.cgroups === false ? undefined : await createCgroupLimiter();
  const prlimit = await findProgram("prlimit");
  const limitNote = cgroups
    ? `memory and processes limited by ${cgroups.description}`
    : "no writable cgroup: memory bounded by each process's address space (RLIMIT_AS), the number of processes not limited";
  const run =
    (wrap: ((step: SandboxStep, limits: StepLimits) => string[]) | undefined) => (step: SandboxStep) =>
      runStep(step, { ...limits, ...step.limits }, { cgroups, prlimit, wrap });
  if (mode === "off") {
    return {
      kind: "off",
      description: `off: builds run unsandboxed on the host (${limitNote})`,
      ready: () => Promise.resolve(),
      run: run(undefined),
    };
  }
  const reprobeIntervalMs = options.reprobeIntervalMs ?? DEFAULT_REPROBE_INTERVAL_MS;
  const fix =
    "install bubblewrap (Debian: apt-get install bubblewrap) and allow user namespaces (sysctl kernel.unprivileged_userns_clone=1, or run the server as root), or pass --sandbox off if this host contains builds some other way";
  const recheck = "the server checks again at the next build, no restart needed";
  type State = Pick<Sandbox, "kind" | "description" | "refusal" | "run">;
  const unavailable = (problem: string): State => {
    const refusal = `the build sandbox (bubblewrap) cannot start on this server; the operator must ${fix} (${recheck})`;
    return {
      kind: "unavailable",
      // The log says what failed (it may name server paths); callers get the fix.
      description: `the build sandbox (bubblewrap) cannot start: ${problem}; ${fix} (${recheck})`,
      refusal,
      run: () => Promise.reject(new PluginError(Code.FailedPrecondition, `builds are refused: ${refusal}`)),
    };
  };
  const available = (bwrap: string): State => ({
    kind: "bwrap",
    description: `bubblewrap: no network, own PID namespace, read-only toolchain, writable build directory only; ${limitNote}`,
    run: run((step, stepLimits) => [
      bwrap,
      ...bubblewrapArgs(step, stepLimits),
      "--",
      step.file,
      ...step.args,
    ]),
  });
  const probe = async (): Promise<State> => {
    // Looked up again each time: bubblewrap may have been installed on PATH since.
    const bwrap = await findProgram(options.bwrap ?? "bwrap");
    const problem = await probeBubblewrap(bwrap);
    return problem ? unavailable(problem) : available(bwrap);
  };
  let state = await probe();
  let probedAt = Date.now();
  let probing: Promise<void> | undefined;
  const ready = async (): Promise<void> => {
    if (state.kind !== "unavailable") return;
    // Callers within the interval wait for the next probe instead of being
    // refused without one, so that the first build after the fix succeeds.
    probing ??= (async () => {
      const wait = probedAt + reprobeIntervalMs - Date.now();
      if (wait > 0) await sleep(wait);
      state = await probe();
      probedAt = Date.now();
      if (state.kind === "bwrap")
        options.log?.info({ sandbox: state.kind }, `build sandbox now available: ${state.description}`);
    })().finally(() => {
      probing = undefined;
    });
    await probing;
    if (state.kind === "unavailable") {
      throw new PluginError(Code.FailedPrecondition, `builds are refused: ${state.refusal}`);
    }
  };
  return {
    get kind() {
      return state.kind;
    },
    get description() {
      return state.description;
    },
    get refusal() {
      return state.refusal;
    },
    ready,
    async run(step) {
      await ready();
      return state.run(step);
    },
  };
}

/** Starts one empty sandbox; the reason it cannot start, or undefined. */
async function probeBubblewrap(bwrap: string): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), "atomix-sandbox-probe-"));
  try {
    const args = bubblewrapArgs(
      { file: "/bin/sh", args: [], cwd: dir, writable: [dir] },
      DEFAULT_STEP_LIMITS,
    );
    await execFileAsync(bwrap, [...args, "--", "/bin/sh", "-c", "exit 0"], { timeout: 10_000 });
    return undefined;
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string };
    if (failure.code === "ENOENT") return `${bwrap} is not installed`;
    return (failure.stderr?.trim() || failure.message).split("\n")[0];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function runStep(
  step: SandboxStep,
  limits: StepLimits,
  tools: {
    cgroups: CgroupLimiter | undefined;
    prlimit: string;
    wrap: ((step: SandboxStep, limits: StepLimits) => string[]) | undefined;
  },
): Promise<StepResult> {
  const { cgroups, prlimit, wrap } = tools;
  const command = wrap ? wrap(step, limits) : [step.file, ...step.args];
  const rlimits = [
    `--cpu=${limits.cpuSeconds}`,
    `--fsize=${limits.fileBytes}`,
    `--nofile=${limits.openFiles}`,
    "--core=0",
    // Without a cgroup, each process's address space is the bound: V8 and
    // Go reserve about 1 GiB of it before they allocate anything.
    ...(cgroups ? [] : [`--as=${limits.memoryBytes + ADDRESS_SPACE_RESERVE}`]),
  ];
  const cgroup = await cgroups?.create(limits);
  try {
    // A tiny trusted shell joins the cgroup and sets the rlimits, then
    // becomes the step: every process the step starts inherits both.
    const joiner = cgroup
      ? `for f in ${cgroup.procsFiles.map(shellQuote).join(" ")}; do echo $$ > "$f" || exit 125; done; `
      : "";
    const result = await runProcess(
      "/bin/sh",
      ["-c", `${joiner}exec "$@"`, "sh", prlimit, ...rlimits, "--", ...command],
      {
        cwd: step.cwd,
        env: step.env ?? {},
        ...(step.signal ? { signal: step.signal } : {}),
        ...(step.timeoutMs === undefined ? {} : { timeoutMs: step.timeoutMs }),
        ...(step.maxOutputBytes === undefined ? {} : { maxOutputBytes: step.maxOutputBytes }),
        onKill: () => cgroup?.kill(),
      },
    );
    const outOfMemory = (await cgroup?.outOfMemory()) ?? false;
    recordStepOutput(step, result);
    return { ...result, outOfMemory };
  } finally {
    await cgroup?.remove();
  }
}

/** `name` as an absolute path from PATH (and the usual system folders), or `name` itself. */
async function findProgram(name: string): Promise<string> {
  if (isAbsolute(name)) return name;
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/bin", "/bin", "/usr/sbin", "/sbin"];
  for (const dir of dirs.filter(Boolean)) {
    const path = join(dir, name);
    if (
      await access(path).then(
        () => true,
        () => false,
      )
    )
      return path;
  }
  return name;
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}
