import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Debian's tinyproxy (package tinyproxy), a real HTTP proxy that tunnels with CONNECT. */
export const TINYPROXY = "/usr/bin/tinyproxy";

export interface Tinyproxy {
  /** `127.0.0.1:port`. */
  readonly address: string;
  /** Its log (LogLevel Connect): one line per request, CONNECTs included. */
  log(): Promise<string>;
  close(): Promise<void>;
}

/** A free loopback port: tinyproxy takes no `Port 0`. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * tinyproxy in the foreground on a port of its own (any leftover system
 * daemon on 8888 is not used), allowing CONNECT to any port (no ConnectPort
 * lines), with `BasicAuth` when `auth` is given.
 */
export async function startTinyproxy(auth?: { user: string; password: string }): Promise<Tinyproxy> {
  const dir = await mkdtemp(join(tmpdir(), "atomix-tinyproxy-"));
  const logFile = join(dir, "tinyproxy.log");
  const port = await freePort();
  const config = [
    `Port ${port}`,
    "Listen 127.0.0.1",
    "Timeout 60",
    "MaxClients 50",
    `LogFile "${logFile}"`,
    "LogLevel Connect",
    ...(auth ? [`BasicAuth ${auth.user} ${auth.password}`] : []),
  ];
  await writeFile(join(dir, "tinyproxy.conf"), `${config.join("\n")}\n`);
  const child: ChildProcess = spawn(TINYPROXY, ["-d", "-c", join(dir, "tinyproxy.conf")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = once(child, "exit");
  try {
    for (let tries = 0; ; tries++) {
      if (child.exitCode !== null) throw new Error(`tinyproxy exited: ${stderr}`);
      if (await accepts(port)) break;
      if (tries > 200) throw new Error(`tinyproxy did not listen on ${port}: ${stderr}`);
      await sleep(25);
    }
  } catch (error) {
    child.kill();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    address: `127.0.0.1:${port}`,
    log: () => readFile(logFile, "utf8").catch(() => ""),
    async close() {
      if (child.exitCode === null) {
        child.kill();
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
