/**
 * `node dist/bench/npm-source.js`: what the npm source costs the server when
 * callers ask for many versions of a package with a large packument (the
 * attack of issue 26: 40 compiles of distinct versions of a 17 MB package).
 * A local registry over node:http serves an abbreviated-style packument;
 * the source is asked for 40 versions at once, then 40 more one by one.
 * Prints the registry's requests and bytes, the longest event-loop stall
 * (perf_hooks.monitorEventLoopDelay, beside the longest of as long idle: on
 * a loaded machine that is mostly the scheduler's), how long the event loop
 * was busy in all (eventLoopUtilization), and the process's RSS; and, for
 * comparison, how long JSON.parse of the same document holds the event loop
 * (what every call cost before the source parsed in a worker, once per name).
 */
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { createNpmRegistrySource } from "../src/compiler/sources/npm-registry-source.js";
import type { SourceUnpacker } from "../src/compiler/sources/source-unpacker.js";

const MiB = 1024 * 1024;
const CALLS = Number(process.env.BENCH_NPM_CALLS ?? 40);

/** The registry: serves the files of a folder by name; SIGUSR2 prints its request and byte counts. */
const REGISTRY = `
const { createServer } = require("node:http");
const { readFileSync, existsSync } = require("node:fs");
const dir = process.argv[1];
let requests = 0, served = 0;
process.on("SIGUSR2", () => console.log(JSON.stringify({ requests, served })));
const server = createServer((request, response) => {
  requests++;
  const file = dir + "/" + decodeURIComponent((request.url ?? "").slice(1));
  if (!/^\\/[a-z0-9-]+$/.test(request.url ?? "") || !existsSync(file)) return void response.writeHead(404).end();
  const body = readFileSync(file);
  served += body.length;
  response.writeHead(200, { "content-type": "application/json", etag: '"1"' }).end(body);
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

/** An abbreviated packument of about `bytes` bytes: versions with dependencies and dist, as npm serves them. */
function packumentOf(name: string, bytes: number, origin: string): Buffer {
  const versions: Record<string, unknown> = {};
  let size = 0;
  for (let index = 0; size < bytes; index++) {
    const version = `1.${Math.floor(index / 100)}.${index % 100}`;
    const entry = {
      name,
      version,
      dependencies: Object.fromEntries(
        Array.from({ length: 30 }, (_, dep) => [`dependency-number-${dep}`, `^${dep}.${index % 7}.0`]),
      ),
      engines: { node: ">=14" },
      dist: {
        integrity: `sha512-${"A".repeat(86)}==`,
        shasum: "0".repeat(40),
        tarball: `${origin}/${name}/-/${name}-${version}.tgz`,
        fileCount: 12,
        unpackedSize: 34_567,
        signatures: [{ keyid: "SHA256:jl3bwswu80PjjokCgh0o2w5c2U4LhQAE57gj9cz1kzA", sig: "x".repeat(96) }],
      },
    };
    size += JSON.stringify(entry).length + version.length + 4;
    versions[version] = entry;
  }
  return Buffer.from(
    JSON.stringify({ name, "dist-tags": { latest: "1.0.0" }, modified: "2026-01-01", versions }),
  );
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "atomix-bench-npm-"));
  // The registry runs in a process of its own, so that its work is not counted as the source's stalls.
  const registry = spawn(process.execPath, ["-e", REGISTRY, work], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: registry.stdout });
  const next = () => new Promise<string>((resolve) => lines.once("line", resolve));
  const origin = `http://127.0.0.1:${await next()}`;
  const counters = async () => {
    registry.kill("SIGUSR2");
    return JSON.parse(await next()) as { requests: number; served: number };
  };
  const unpacker = {
    limits: { maxBytes: 0, maxFiles: 0 },
    unpack: () => Promise.reject(new Error("unused")),
  };
  let fetches = 0;
  const lookup = async (
    source: ReturnType<typeof createNpmRegistrySource>,
    name: string,
    version: string,
  ) => {
    const dir = join(work, String(fetches++));
    await mkdir(dir, { recursive: true });
    return source
      .fetch(
        { name, version },
        { destDir: join(dir, "package"), scratchDir: dir, unpacker: unpacker as unknown as SourceUnpacker },
      )
      .catch((error: Error) => error.message);
  };

  const rows: string[][] = [];
  try {
    for (const megabytes of [15, 17]) {
      const name = `big-${megabytes}`;
      const body = packumentOf(name, megabytes * 1_000_000, origin);
      await writeFile(join(work, name), body);
      const parseStarted = performance.now();
      JSON.parse(body.toString("utf8"));
      const parseMs = performance.now() - parseStarted;

      global.gc?.();
      const before = await counters();
      const source = createNpmRegistrySource({ url: origin });
      const delay = monitorEventLoopDelay({ resolution: 1 });
      const rssBefore = process.memoryUsage.rss();
      let rssPeak = rssBefore;
      const sampler = setInterval(() => {
        rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
      }, 10);
      delay.enable();
      const busyBefore = performance.eventLoopUtilization();
      const started = performance.now();
      const concurrent = await Promise.all(
        Array.from({ length: CALLS }, (_, index) => lookup(source, name, `9.0.${index}`)),
      );
      for (let index = 0; index < CALLS; index++) await lookup(source, name, `9.1.${index}`);
      const elapsed = performance.now() - started;
      const busy = performance.eventLoopUtilization(busyBefore).active;
      delay.disable();
      clearInterval(sampler);
      const after = await counters();
      const requests = after.requests - before.requests;
      const served = after.served - before.served;
      // The same time idle: what the machine's own load stalls a loop by.
      const idle = monitorEventLoopDelay({ resolution: 1 });
      idle.enable();
      await new Promise((resolve) => setTimeout(resolve, elapsed));
      idle.disable();
      const answers = new Set(
        concurrent.map((answer) => (answer === undefined ? "NOT_FOUND" : String(answer))),
      );
      rows.push([
        `${(body.length / MiB).toFixed(1)} MiB`,
        String(2 * CALLS),
        String(requests),
        `${(served / MiB).toFixed(1)} MiB`,
        `${(delay.max / 1e6).toFixed(1)} ms (idle: ${(idle.max / 1e6).toFixed(1)} ms)`,
        `${parseMs.toFixed(0)} ms`,
        `${busy.toFixed(0)} ms`,
        `${((rssPeak - rssBefore) / MiB).toFixed(0)} MiB`,
        `${elapsed.toFixed(0)} ms`,
        [...answers].join("; ").slice(0, 60),
      ]);
    }
  } finally {
    registry.kill();
    await rm(work, { recursive: true, force: true });
  }
  const header = [
    "packument",
    "lookups",
    "registry requests",
    "registry bytes",
    "longest event-loop stall (same time idle)",
    "JSON.parse in the loop (before)",
    "event loop busy, all lookups",
    "RSS growth",
    "wall time",
    "answer",
  ];
  console.log(`| ${header.join(" | ")} |\n|${header.map(() => " --- ").join("|")}|`);
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
}

await main();
