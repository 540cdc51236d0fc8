import { spawn } from "node:child_process";

export interface ProcessResult {
  /** Exit code, or null when a signal ended it. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True when `timeoutMs` passed and the process was killed. */
  readonly timedOut: boolean;
}

export interface RunOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Aborting kills the process (SIGKILL) and rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Kills the process (SIGKILL) after this long; the result says `timedOut`. */
  timeoutMs?: number;
  /** Output kept per stream; the rest is dropped (a chatty child cannot fill memory). */
  maxOutputBytes?: number;
}

/**
 * Runs a child to completion and collects its output. Build steps are short
 * and their output is small; what matters is that no child outlives its
 * build, so every way out kills it.
 */
export function runProcess(
  command: string,
  args: readonly string[],
  options: RunOptions,
): Promise<ProcessResult> {
  const limit = options.maxOutputBytes ?? 256 * 1024;
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(options.signal.reason);
      return;
    }
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? {},
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out = { stdout: "", stderr: "" };
    for (const stream of ["stdout", "stderr"] as const) {
      child[stream].setEncoding("utf8");
      child[stream].on("data", (text: string) => {
        if (out[stream].length < limit) out[stream] += text.slice(0, limit - out[stream].length);
      });
    }
    let timedOut = false;
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
          }, options.timeoutMs);
    const onAbort = () => child.kill("SIGKILL");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    child.on("error", (error) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (options.signal?.aborted) {
        reject(options.signal.reason);
        return;
      }
      resolve({ code, signal, stdout: out.stdout, stderr: out.stderr, timedOut });
    });
  });
}
