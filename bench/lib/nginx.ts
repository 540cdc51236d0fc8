import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { type ServerProcess, startServer } from "./processes.js";

/** A free loopback port (nginx cannot be told to pick one and say which). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * Debian's nginx as a plain foreground process (no master, one worker: its
 * pid is the one to measure) serving `root` with sendfile, the best case for
 * sending a file over TCP on this machine.
 */
export async function startNginx(options: { dir: string; root: string }): Promise<ServerProcess> {
  const port = await freePort();
  await mkdir(join(options.dir, "logs"), { recursive: true });
  const config = join(options.dir, "nginx.conf");
  await writeFile(
    config,
    `daemon off;
master_process off;
worker_processes 1;
pid ${join(options.dir, "nginx.pid")};
error_log ${join(options.dir, "logs/error.log")} warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path ${join(options.dir, "client_body")};
  proxy_temp_path ${join(options.dir, "proxy")};
  fastcgi_temp_path ${join(options.dir, "fastcgi")};
  uwsgi_temp_path ${join(options.dir, "uwsgi")};
  scgi_temp_path ${join(options.dir, "scgi")};
  server {
    listen 127.0.0.1:${port};
    root ${options.root};
  }
}
`,
  );
  return startServer({
    name: "nginx",
    command: "nginx",
    args: ["-p", options.dir, "-c", config, "-e", join(options.dir, "logs/error.log")],
    address: `127.0.0.1:${port}`,
  });
}
