import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export interface ServerProcess {
  address: string;
  /** host:port of the HTTP side port, or "off". */
  http: string;
  /** Removed when the server stops, unless the caller passed it in. */
  dataDir: string;
  child: ChildProcess;
  /** Every log line the server printed so far, parsed. */
  logs: Record<string, unknown>[];
  /**
   * The first log line, printed so far or from now on, that `match` accepts:
   * a test waits for the server to say something happened, never for a time.
   * Rejects if the server exits first.
   */
  logged(match: (entry: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** What the server printed on stderr so far. */
  stderr(): string;
  /** What the server printed on stdout so far (its log lines), as written. */
  stdout(): string;
  /** SIGTERM, wait for exit; resolves to the exit code. */
  stop(): Promise<number | null>;
  kill(): Promise<void>;
}

export interface StartOptions {
  /** May be relative to `cwd`, as a user's `--data ./data` is. */
  dataDir?: string;
  /** The server's working directory; the test's by default. */
  cwd?: string;
  listen?: string;
  /** HTTP side port; an ephemeral port by default. */
  http?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Runs the server under `ulimit -n` of this (through bash), as systemd's default 1,024 would. */
  openFileLimit?: number;
  /**
   * Runs the server in a PID namespace of its own (bubblewrap), as in a
   * container: servers started so have the same pid. Not with `openFileLimit`.
   */
  ownPidNamespace?: boolean;
}

/** Runs `atomix-plugins serve` as a real process and waits until it listens. */
export async function startServerProcess(options: StartOptions = {}): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "atomix-data-")));
  // exec: under a limit, the server is bash's process itself, so signals and exit codes are its own.
  const limit = options.openFileLimit;
  const contained = ["--unshare-pid", "--die-with-parent", "--dev-bind", "/", "/", "--proc", "/proc"];
  const child = spawn(
    options.ownPidNamespace ? "bwrap" : limit === undefined ? process.execPath : "bash",
    [
      ...(options.ownPidNamespace ? [...contained, process.execPath] : []),
      ...(limit === undefined ? [] : ["-c", `ulimit -n ${limit} && exec "$0" "$@"`, process.execPath]),
      CLI,
      "serve",
      ...["--listen", options.listen ?? "127.0.0.1:0"],
      ...["--http", options.http ?? "127.0.0.1:0"],
      ...["--data", dataDir],
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env }, cwd: options.cwd },
  );
  // A test process that ends (its tests done, or forced out by the runner's
  // timeout) with a server still running must not leave it behind.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  const logs: Record<string, unknown>[] = [];
  const watchers = new Set<{
    match: (entry: Record<string, unknown>) => boolean;
    found: (entry: Record<string, unknown>) => void;
  }>();
  let stderr = "";
  let stdout = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const ownsDataDir = options.dataDir === undefined;
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const onExit = (code: number | null) => {
      const failure = new Error(`server exited with ${code} before listening: ${stderr}`);
      if (!ownsDataDir) reject(failure);
      else rm(dataDir, { recursive: true, force: true }).then(() => reject(failure), reject);
    };
    child.once("exit", onExit);
    lines.on("line", (line) => {
      stdout += `${line}\n`;
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        for (const watcher of watchers) if (watcher.match(entry)) watcher.found(entry);
        if (entry.msg === "serving") {
          child.off("exit", onExit);
          resolve(entry);
        }
      } catch {
        // not a log line
      }
    });
  });
  const exited = once(child, "exit").then(async ([code]) => {
    if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
    return code as number | null;
  });
  return {
    address: String(ready.address),
    http: String(ready.http),
    dataDir,
    child,
    logs,
    logged(match) {
      const seen = logs.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const watcher = {
          match,
          found: (entry: Record<string, unknown>) => {
            watchers.delete(watcher);
            child.off("exit", onExit);
            resolve(entry);
          },
        };
        const onExit = () => {
          watchers.delete(watcher);
          reject(new Error(`the server exited before logging the line waited for: ${stderr}`));
        };
        watchers.add(watcher);
        child.once("exit", onExit);
      });
    },
    stderr: () => stderr,
    stdout: () => stdout,
    async stop() {
      if (!child.killed && child.exitCode === null) child.kill("SIGTERM");
      return exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** A temporary directory removed by the returned cleanup. */
export async function tempDir(
  prefix = "atomix-test-",
): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
