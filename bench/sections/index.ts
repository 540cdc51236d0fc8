import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { ArtifactStore } from "../../src/store/artifact-store.js";
import { createFsStore } from "../../src/store/fs-store.js";
import { SERVER_NODE_FLAGS, startServer, watchDescriptors, watchPeakRss } from "../lib/processes.js";
import { MiB } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

export interface IndexOptions {
  root: string;
  work: string;
  /** Keys of the filesystem store rows (10,000 and 100,000 by default). */
  fsKeys: number[];
  /** Keys of the registry row; 0 leaves it out. */
  registryKeys: number;
  log: (message: string) => void;
}

/** The open-file limit the server runs under, as systemd's default. */
const OPEN_FILES = 1024;
/** One key in a hundred has a blob of its own and is removed before gc: what gc frees. */
const GARBAGE_EVERY = 100;

/** A few hundred plugins × runtime releases × builds. */
function keyAt(i: number): BuildKey {
  return {
    runtime: { version: `1.${i % 7}.0`, buildVersion: i % 2 ? "node20" : "go1.19.8" },
    plugin: { name: `plugin-${i % 300}`, version: `1.0.${i}` },
  };
}

/**
 * The index at scale: a store of N keys written through the store API
 * in-process, then a server on it under `ulimit -n 1024`, and the time of
 * `ls --all --json`, of every catalog page (1,000 a page) and of `gc`, each
 * with the server's peak RSS and open descriptors over that step.
 */
export async function indexRows(options: IndexOptions): Promise<Row[]> {
  const rows: Row[] = [];
  for (const count of options.fsKeys) {
    const dir = await mkdtemp(join(options.work, "index-fs-"));
    try {
      options.log(`index: writing ${count} keys to a filesystem store`);
      const store = await createFsStore({ dir });
      await seed(store, count);
      await store.close();
      rows.push(...(await measure(options, `${count} keys, fs store`, ["--data", dir])));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  if (options.registryKeys > 0 && (await hasRegistry())) {
    const { startRegistry } = await import("../../test/helpers/registry-process.js");
    const { createOciStore } = await import("../../src/store/oci/oci-store.js");
    const { parseOciLocation } = await import("../../src/store/oci/oci-location.js");
    const registry = await startRegistry();
    try {
      const url = registry.storeUrl("bench/plugins");
      options.log(`index: writing ${options.registryKeys} keys to a registry`);
      const store = await createOciStore(parseOciLocation(url));
      await seed(store, options.registryKeys);
      await store.close();
      const dir = await mkdtemp(join(options.work, "index-oci-"));
      rows.push(
        ...(await measure(options, `${options.registryKeys} keys, registry store`, [
          "--data",
          dir,
          "--store",
          url,
        ])),
      );
    } finally {
      await registry.dispose();
    }
  }
  return rows;
}

async function seed(store: ArtifactStore, count: number): Promise<void> {
  const shared = Buffer.from("shared artifact bytes");
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) {
      const own = i % GARBAGE_EVERY === 0;
      await store.put(keyAt(i), [own ? Buffer.from(`own artifact ${i}`) : shared]);
      if (own) await store.remove(keyAt(i));
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

async function measure(options: IndexOptions, label: string, storeArgs: string[]): Promise<Row[]> {
  const cli = join(options.root, "dist/src/cli/main.js");
  const http = `127.0.0.1:${await freePort()}`;
  const server = await startServer({
    name: `atomix-plugins (${label})`,
    command: "bash",
    args: [
      "-c",
      `ulimit -n ${OPEN_FILES} && exec "$0" "$@"`,
      process.execPath,
      ...SERVER_NODE_FLAGS,
      cli,
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--http",
      http,
      // The keys are for the example runtimes' versions: pre-warming them for the
      // next release at start would run beside the steps measured.
      "--prewarm",
      "off",
      ...storeArgs,
    ],
    readyTimeoutMs: 120_000,
  });
  try {
    const rows: Row[] = [];
    const step = async (figure: string, body: () => Promise<string>) => {
      options.log(`index: ${label}: ${figure}`);
      const rss = await watchPeakRss(server.pid);
      const fds = await watchDescriptors(server.pid);
      const started = performance.now();
      const note = await body();
      const seconds = (performance.now() - started) / 1000;
      rows.push(
        { figure: `index, ${label}: ${figure}`, ours: seconds, unit: "s", note },
        { figure: "  server peak RSS", ours: (await rss.stop()) / MiB, unit: "MiB" },
        { figure: "  server open descriptors, peak", ours: await fds.stop(), unit: "fds" },
      );
    };
    await step("ls --all --json", async () => {
      const out = await runCli(cli, ["ls", "--all", "--json", "--server", server.address]);
      return `${(JSON.parse(out) as unknown[]).length} listed`;
    });
    await step("catalog, first page", async () => {
      const html = await (await fetch(`http://${http}/`)).text();
      return `${html.match(/<td class="plugin">/g)?.length ?? 0} rows`;
    });
    await step("catalog, every page of 1000", async () => {
      let pages = 0;
      let shown = 0;
      for (let target: string | undefined = "/?limit=1000"; target; pages++) {
        const html = await (await fetch(`http://${http}${target}`)).text();
        shown += html.match(/<td class="plugin">/g)?.length ?? 0;
        target = /<a class="next" rel="next" href="([^"]+)"/.exec(html)?.[1]?.replaceAll("&amp;", "&");
      }
      return `${shown} rows in ${pages} pages`;
    });
    await step("gc", async () => {
      const out = await runCli(cli, ["gc", "--json", "--server", server.address]);
      const report = JSON.parse(out) as { removedBlobs: number };
      return `${report.removedBlobs} blobs freed`;
    });
    return rows;
  } finally {
    await server.stop();
  }
}

function runCli(cli: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [cli, ...args], { maxBuffer: 512 * MiB }, (error, stdout, stderr) =>
      error
        ? reject(new Error(`atomix-plugins ${args[0]} failed: ${stderr || error.message}`))
        : resolve(stdout),
    );
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** A registry row is measured only where Debian's docker-registry is installed. */
function hasRegistry(): Promise<boolean> {
  return new Promise((resolve) => execFile("docker-registry", ["--version"], (error) => resolve(!error)));
}
