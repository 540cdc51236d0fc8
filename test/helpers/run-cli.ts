import { execFile } from "node:child_process";
import { CLI } from "./server-process.js";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `atomix-plugins ...args` with pipes (not a terminal) and collects its output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, ATOMIX_PLUGINS_SERVER: "", ...env }, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const quote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;

/**
 * Runs `atomix-plugins ...args` on a pseudo-terminal (util-linux `script`):
 * stdout and stderr both reach the terminal, and come back mixed.
 */
export function runCliOnTerminal(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  const command = [process.execPath, CLI, ...args].map(quote).join(" ");
  return new Promise((resolve) => {
    execFile(
      "script",
      ["-qfec", command, "/dev/null"],
      { env: { ...process.env, ATOMIX_PLUGINS_SERVER: "", ...env }, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
