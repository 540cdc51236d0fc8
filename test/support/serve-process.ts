import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

/** dist/src/cli/main.js, from dist/test/support/. */
export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export interface ServeProcess {
  readonly address: string;
  readonly port: number;
  readonly child: ChildProcess;
  /** Everything the server logged so far. */
  log(): string;
  /** SIGKILL, then wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM, then wait for the exit. */
  stop(): Promise<void>;
}

/**
 * Runs `atomix-plugins serve` as a child process and resolves once it logs
 * "serving". `port` 0 picks a free port; give the old one to restart a
 * killed server in its place.
 */
export async function startServeProcess(options: {
  dataDir: string;
  port?: number;
  args?: string[];
}): Promise<ServeProcess> {
  const child = spawn(
    process.execPath,
    [
      CLI,
      "serve",
      "--listen",
      `127.0.0.1:${options.port ?? 0}`,
      "--data",
      options.dataDir,
      "--shutdown-grace",
      "500",
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout?.setEncoding("utf8").on("data", (text: string) => {
    output += text;
  });
  child.stderr?.setEncoding("utf8").on("data", (text: string) => {
    output += text;
  });
  const exited = once(child, "exit");
  const address = await new Promise<string>((resolve, reject) => {
    const onData = () => {
      for (const line of output.split("\n")) {
        if (!line.includes('"serving"')) continue;
        try {
          const entry = JSON.parse(line) as { msg?: string; address?: string };
          if (entry.msg === "serving" && entry.address) {
            child.stdout?.off("data", onData);
            resolve(entry.address);
            return;
          }
        } catch {
          // a partial line: wait for the rest
        }
      }
    };
    child.stdout?.on("data", onData);
    exited.then(() => reject(new Error(`serve exited before serving:\n${output}`)));
  });
  const stopWith = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return {
    address,
    port: Number(address.slice(address.lastIndexOf(":") + 1)),
    child,
    log: () => output,
    kill: () => stopWith("SIGKILL"),
    stop: () => stopWith("SIGTERM"),
  };
}
