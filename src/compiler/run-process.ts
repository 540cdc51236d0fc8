import { spawn } from "node:child_process";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

export interface RunOptions {
  readonly cwd: string;
  /** The child's whole environment: nothing is inherited from this process. */
  readonly env?: Readonly<Record<string, string>>;
  /** Aborting kills the child's whole process group and rejects (see runProcess). */
  readonly signal?: AbortSignal;
  /** Kills the process group after this long; the result says `timedOut`. */
  readonly timeoutMs?: number;
  /** Output kept per stream; the rest is dropped (a runaway child cannot fill memory). */
  readonly maxOutputBytes?: number;
  /**
   * Called when the child is killed (abort or timeout): a sandbox kills
   * what the child left in its cgroup, which a process group cannot reach.
   */
  readonly onKill?: () => unknown;
}

export interface RunResult {
  /** Exit code, or null when a signal ended it. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True when `timeoutMs` passed and the process was killed. */
  readonly timedOut: boolean;
}

const DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024;

/**
 * Runs a program to completion and collects its output: every toolchain
 * step (tsc, the sandboxed verification, go) goes through here. A non-zero
 * exit is a result, not an error: callers decide what it means. What matters
 * is that no child outlives its build, so the child gets its own process
 * group (go starts compile, link and gcc) and every way out kills the group.
 *
 * Throws NOT_FOUND when the program does not exist, and when `signal` aborts:
 * the abort reason if it is a PluginError, else DEADLINE_EXCEEDED for a
 * timeout and CANCELLED otherwise.
 */
export function runProcess(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(abortError(signal));
  const limit = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? {},
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const stdout = collect(child.stdout, limit);
    const stderr = collect(child.stderr, limit);
    const kill = () => {
      void Promise.resolve(options.onKill?.()).catch(() => {});
      if (child.pid !== undefined && child.exitCode === null) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    };
    let timedOut = false;
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            kill();
          }, options.timeoutMs);
    const settle = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", kill);
    };
    signal?.addEventListener("abort", kill, { once: true });
    child.once("error", (error) => {
      settle();
      const errno = (error as NodeJS.ErrnoException).code;
      reject(
        errno === "ENOENT"
          ? new PluginError(Code.NotFound, `cannot run ${file}: not found`, { cause: error })
          : PluginError.from(error, `cannot run ${file}`),
      );
    });
    child.once("close", (exitCode, exitSignal) => {
      settle();
      if (signal?.aborted) {
        reject(abortError(signal));
        return;
      }
      resolve({ exitCode, signal: exitSignal, stdout: stdout.text(), stderr: stderr.text(), timedOut });
    });
  });
}

function collect(stream: NodeJS.ReadableStream, limit: number): { text(): string } {
  const chunks: Buffer[] = [];
  let size = 0;
  stream.on("data", (chunk: Buffer) => {
    if (size >= limit) return;
    const kept = chunk.subarray(0, limit - size);
    chunks.push(kept);
    size += kept.length;
  });
  return { text: () => Buffer.concat(chunks).toString("utf8") };
}

function abortError(signal: AbortSignal): PluginError {
  const reason: unknown = signal.reason;
  if (reason instanceof PluginError) return reason;
  if (reason instanceof Error && reason.name === "TimeoutError") {
    return new PluginError(Code.DeadlineExceeded, "the build ran out of time", { cause: reason });
  }
  return new PluginError(Code.Cancelled, "the build was cancelled", { cause: reason });
}
