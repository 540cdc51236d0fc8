import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** A server process the benchmark started and must stop. */
export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  /** host:port it listens on. */
  readonly address: string;
  /** host:port of our server's HTTP port (/metrics), from its "serving" line; "" for others. */
  readonly http: string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();

/** Kills every child still running: the benchmark leaves nothing behind, even on Ctrl-C. */
export function killAll(): void {
  for (const child of running) child.kill("SIGKILL");
  running.clear();
}

export interface StartOptions {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Finds the listening address in a stdout line; nginx, which prints nothing, passes `address`. */
  address?: string;
  readyTimeoutMs?: number;
  /** Sees every stdout line (our server's JSON logs), for counting events. */
  onLine?: (line: string) => void;
}

/**
 * Starts a server and resolves once it listens: either it prints a JSON line
 * `{"msg":"serving","address":...}` (our server, the Go peer, the bare
 * grpc-js server) or, with `address` given, the port accepts connections.
 */
export async function startServer(options: StartOptions): Promise<ServerProcess> {
  const child = spawn(options.command, options.args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<never>((_, reject) => {
    child.once("exit", (code, signal) => {
      running.delete(child);
      reject(new Error(`${options.name} exited (${code ?? signal}) before it served: ${stderr.trim()}`));
    });
    child.once("error", reject);
  });
  exited.catch(() => {});
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  let http = "";
  const ready = options.address
    ? waitForPort(options.address).then(() => options.address as string)
    : new Promise<string>((resolve) => {
        lines.on("line", (line) => {
          try {
            const parsed = JSON.parse(line) as { msg?: string; address?: string; http?: string };
            if (parsed.msg === "serving" && parsed.address) {
              http = parsed.http ?? "";
              resolve(parsed.address);
            }
          } catch {
            // not a JSON line: logs of no interest
          }
        });
      });
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(
      () => reject(new Error(`${options.name} did not serve within ${options.readyTimeoutMs ?? 20000} ms`)),
      options.readyTimeoutMs ?? 20000,
    ).unref(),
  );
  let address: string;
  try {
    address = await Promise.race([ready, exited, timeout]);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  lines.on("line", (line) => options.onLine?.(line)); // keeps draining stdout too
  const pid = child.pid as number;
  return {
    name: options.name,
    pid,
    address,
    http,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await gone;
      clearTimeout(timer);
      running.delete(child);
    },
  };
}

async function waitForPort(address: string): Promise<void> {
  const { connect } = await import("node:net");
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  for (let attempt = 0; attempt < 200; attempt++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${address}`);
}

/** Runs a command to completion and answers with its stdout; a failure names the command. */
export async function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, {
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (error) {
    const failure = error as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(" ")} failed: ${failure.stderr?.trim() || failure.message}`);
  }
}

let ticksPerSecond: number | undefined;

/** User + system CPU seconds a process has used so far (/proc/<pid>/stat). */
export async function cpuSeconds(pid: number): Promise<number> {
  ticksPerSecond ??= Number((await run("getconf", ["CLK_TCK"])).trim()) || 100;
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

async function statusField(pid: number, field: string): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
  return match ? Number(match[1]) * 1024 : Number.NaN;
}

/**
 * Watches a process's peak resident memory over one phase: resets the
 * kernel's high-water mark (clear_refs 5) at the start and also samples
 * VmRSS, for kernels that refuse the reset.
 */
export async function watchPeakRss(pid: number): Promise<{ stop(): Promise<number> }> {
  let reset = true;
  try {
    await writeFile(`/proc/${pid}/clear_refs`, "5");
  } catch {
    reset = false;
  }
  let sampled = await statusField(pid, "VmRSS");
  const timer = setInterval(() => {
    statusField(pid, "VmRSS").then(
      (rss) => {
        if (rss > sampled) sampled = rss;
      },
      () => {},
    );
  }, 25);
  return {
    async stop() {
      clearInterval(timer);
      const hwm = reset ? await statusField(pid, "VmHWM") : Number.NaN;
      return Number.isNaN(hwm) ? sampled : Math.max(hwm, sampled);
    },
  };
}

/** Open file descriptors of a process now (sockets, files, pipes). */
export async function descriptorCount(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

/** Samples a process's open descriptors every 25 ms over one phase: answers the most seen. */
export async function watchDescriptors(pid: number): Promise<{ stop(): Promise<number> }> {
  let peak = await descriptorCount(pid);
  const timer = setInterval(() => {
    descriptorCount(pid).then(
      (count) => {
        if (count > peak) peak = count;
      },
      () => {},
    );
  }, 25);
  return {
    async stop() {
      clearInterval(timer);
      return Math.max(peak, await descriptorCount(pid).catch(() => 0));
    },
  };
}

/** The process's resident memory now (VmRSS). */
export function residentNow(pid: number): Promise<number> {
  return statusField(pid, "VmRSS");
}

/** The process's peak resident memory over its whole life (VmHWM). */
export function lifetimePeakRss(pid: number): Promise<number> {
  return statusField(pid, "VmHWM");
}

/** Node.js flags our server runs with: those of the `atomix-plugins` command's shebang (src/cli/main.ts). */
export const SERVER_NODE_FLAGS = ["--max-semi-space-size=4"];
