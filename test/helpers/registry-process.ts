import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface RegistryAuth {
  /** Path of an htpasswd file (bcrypt entries): Basic auth. */
  htpasswd?: string;
  /** Bearer tokens per the distribution token spec, signed by the key of `rootCertBundle`. */
  token?: { realm: string; service: string; issuer: string; rootCertBundle: string };
}

export interface RegistryProcess {
  /** host:port it listens on. */
  readonly address: string;
  /** `oci://host:port/<repository>`: a store URL for this registry. */
  storeUrl(repository: string): string;
  /** The registry's storage directory (kept across stop/start). */
  readonly storageDir: string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** Starts it again on the same address and storage after stop(). */
  start(): Promise<void>;
  /** Stops it and removes its storage and config. */
  dispose(): Promise<void>;
}

/**
 * Runs Debian's `docker-registry` (CNCF Distribution) as a real process on a
 * loopback port, with deletes enabled and a temporary storage directory.
 */
export async function startRegistry(
  options: {
    auth?: RegistryAuth;
    /** Runs it as a pull-through mirror of the registry at this URL (Distribution's proxy mode): it takes no writes. */
    mirrorOf?: string;
  } = {},
): Promise<RegistryProcess> {
  const dir = await mkdtemp(join(tmpdir(), "atomix-registry-"));
  const storageDir = join(dir, "storage");
  const configPath = join(dir, "config.yml");
  let child: ChildProcess | undefined;
  let address = "127.0.0.1:0";

  async function writeConfig() {
    const auth: Record<string, unknown> = {};
    if (options.auth?.htpasswd) auth.htpasswd = { realm: "atomix-test", path: options.auth.htpasswd };
    if (options.auth?.token) {
      const t = options.auth.token;
      auth.token = { realm: t.realm, service: t.service, issuer: t.issuer, rootcertbundle: t.rootCertBundle };
    }
    const config = {
      version: 0.1,
      // info: the "listening on" line is how the helper learns the port.
      log: { level: "info", accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: storageDir },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: { addr: address, secret: "atomix-test-secret" },
      ...(Object.keys(auth).length > 0 ? { auth } : {}),
      ...(options.mirrorOf ? { proxy: { remoteurl: options.mirrorOf } } : {}),
    };
    // JSON is YAML: the registry reads it as its config file.
    await writeFile(configPath, JSON.stringify(config, null, 2));
  }

  async function start() {
    await writeConfig();
    const process_ = spawn("docker-registry", ["serve", configPath], { stdio: ["ignore", "ignore", "pipe"] });
    child = process_;
    // A test process that dies without its after() hooks must not leave a registry behind.
    const killOnExit = () => process_.kill("SIGKILL");
    process.once("exit", killOnExit);
    process_.once("exit", () => process.off("exit", killOnExit));
    let output = "";
    address = await new Promise<string>((resolve, reject) => {
      const onExit = (code: number | null) =>
        reject(new Error(`docker-registry exited with ${code} before listening: ${output}`));
      process_.once("exit", onExit);
      process_.once("error", reject);
      let listening = false;
      // Read stderr to the end, or the registry blocks once the pipe is full.
      process_.stderr?.on("data", (chunk: Buffer) => {
        if (listening) return;
        output += chunk.toString();
        const match = /listening on ([^\s"]+)/.exec(output);
        if (match?.[1]) {
          listening = true;
          process_.off("exit", onExit);
          resolve(match[1]);
        }
      });
    });
  }

  async function stop() {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const exited = once(running, "exit");
    running.kill("SIGTERM");
    await exited;
  }

  await start();
  return {
    get address() {
      return address;
    },
    storeUrl: (repository) => `oci://${address}/${repository}`,
    storageDir,
    stop,
    start,
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
