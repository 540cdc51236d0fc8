/**
 * `npm run bench`: our server side by side with nginx (sendfile) and a
 * grpc-go server of the same API, on loopback, in interleaved rounds. It
 * builds the Go peer, starts every server itself, stops them all, prints a
 * table and writes the same figures as JSON to bench/results/.
 *
 * It parses the options, starts the servers, runs the sections (one
 * module each in bench/sections/, named as --only names them) and writes
 * what they measured.
 */
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { cpus, hostname, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { createPluginClient } from "atomix-plugins-client";
import {
  type Context,
  fanoutName,
  goPull,
  keyFor,
  log,
  nameFor,
  ROOT,
  type Sample,
  startBare,
  startOurs,
  startPeer,
} from "./lib/bench-context.js";
import { buildGoPeers } from "./lib/go-peers.js";
import { startNginx } from "./lib/nginx.js";
import { type BenchOptions, parseBenchOptions } from "./lib/options.js";
import { killAll, run, type ServerProcess } from "./lib/processes.js";
import { GiB, MiB } from "./lib/stats.js";
import { formatTable, type Row } from "./lib/table.js";
import {
  clientUnary,
  clientUnaryDescriptors,
  clientUnaryRows,
  installSizes,
} from "./sections/client-unary.js";
import { compileRows } from "./sections/compile.js";
import { concurrent, concurrentRows } from "./sections/concurrent.js";
import { fanout, fanoutRows } from "./sections/fanout.js";
import { indexRows } from "./sections/index.js";
import { replicaRows } from "./sections/replica.js";
import { rssBySize, rssRows } from "./sections/rss.js";
import { singleRows, singleStream } from "./sections/single.js";
import { unary, unaryFresh, unaryRows } from "./sections/unary.js";

async function main(): Promise<void> {
  const options = parseBenchOptions(process.argv.slice(2), process.env);
  if (options.only.length > 0 && options.only.every((section) => section === "index"))
    return indexOnly(options);
  const work = await mkdtemp(join(tmpdir(), "atomix-bench-"));
  const sink = existsSync("/dev/shm") ? await mkdtemp("/dev/shm/atomix-bench-") : work;
  const servers: ServerProcess[] = [];
  const stopAll = () => Promise.all(servers.splice(0).map((s) => s.stop()));
  const onSignal = () => {
    killAll();
    rmSync(work, { recursive: true, force: true });
    rmSync(sink, { recursive: true, force: true });
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const started = Date.now();
  const rows: Row[] = [];
  const raw: Record<string, Sample[]> = {};
  try {
    log("building the grpc-go peer (offline, Debian's Go packages)");
    const go = await buildGoPeers({ root: ROOT, outDir: join(ROOT, "dist/bench-go") });
    const sizes = [...new Set([options.singleMiB, options.concurrentMiB, ...options.rssSizesMiB])];
    const files = new Map<number, string>();
    await mkdir(join(work, "www"), { recursive: true });
    for (const mib of sizes) files.set(mib, await randomFile(join(work, "www", nameFor(mib)), mib * MiB));
    const fanoutFiles = new Map<string, string>();
    for (let i = 0; i < options.fanoutArtifacts; i++) {
      const name = fanoutName(i);
      fanoutFiles.set(name, await randomFile(join(work, "www", name), options.fanoutMiB * MiB));
    }
    const ctx: Context = { options, go, work, sink, files, fanoutFiles };
    const wants = (section: string) => options.only.length === 0 || options.only.includes(section);

    const dataDir = join(work, "data");
    const ours = await startOurs(ctx, dataDir);
    servers.push(ours);
    log(`pushing ${sizes.length} artifacts to our server`);
    const client = createPluginClient({ address: ours.address });
    try {
      for (const [mib, path] of files) await client.pushFile(keyFor(nameFor(mib)), path);
      for (const [name, path] of fanoutFiles) await client.pushFile(keyFor(name), path);
    } finally {
      client.close();
    }
    const peer = await startPeer(ctx, [options.singleMiB, options.concurrentMiB]);
    const nginx = await startNginx({ dir: join(work, "nginx"), root: join(work, "www") });
    const bare = await startBare();
    servers.push(peer, nginx, bare);

    const descriptors = wants("client-unary") ? await clientUnaryDescriptors(work) : "";
    for (let round = 0; round < options.rounds; round++) {
      log(`round ${round + 1}/${options.rounds}`);
      const flip = round % 2 === 1;
      if (wants("single")) push(raw, "single", await singleStream(ctx, { ours, peer, nginx }, flip));
      if (wants("concurrent")) push(raw, "concurrent", await concurrent(ctx, { ours, peer }, flip, 0));
      if (wants("slow")) push(raw, "slow", await concurrent(ctx, { ours, peer }, flip, options.slowRate));
      if (wants("fanout")) push(raw, "fanout", await fanout(ctx, { ours, peer }, flip));
      if (wants("unary")) push(raw, "unary", await unary(ctx, { ours, bare }, flip));
      if (wants("client-unary")) push(raw, "clientUnary", await clientUnary(ctx, ours, descriptors, flip));
    }
    await stopAll();

    if (wants("unary")) {
      for (let pair = 0; pair < options.unaryFreshPairs; pair++) {
        log(`cache hits on fresh processes, pair ${pair + 1}/${options.unaryFreshPairs}`);
        push(raw, "unaryFresh", await unaryFresh(ctx, dataDir, pair % 2 === 1));
      }
    }

    if (wants("rss")) {
      for (let round = 0; round < options.rssRounds; round++) {
        log(`peak memory by artifact size, round ${round + 1}/${options.rssRounds}`);
        push(raw, "rss", await rssBySize(ctx, dataDir));
      }
    }

    rows.push(
      ...singleRows(options, raw),
      ...concurrentRows(options, raw),
      ...fanoutRows(options, raw),
      ...rssRows(options, raw),
      ...unaryRows(options, raw),
      ...clientUnaryRows(options, raw, wants("client-unary") ? await installSizes() : undefined),
    );
    if (wants("replica")) {
      const [name, file] = [...ctx.fanoutFiles][0] as [string, string];
      rows.push(
        ...(await replicaRows({
          work,
          count: options.fanout.includes(1000) ? 1000 : (options.fanout[0] ?? 100),
          key: keyFor(name),
          file,
          start: (dir, args) => startOurs(ctx, dir, { args: ["--http", "127.0.0.1:0", ...args] }),
          pull: (address, count) => goPull(ctx, address, name, count),
          log,
        })),
      );
    }
    if (wants("compile")) {
      rows.push(
        ...(await compileRows({
          root: ROOT,
          goClient: ctx.go.client,
          work,
          goCache: join(ROOT, "dist/bench-go/go-cache"),
          rounds: options.quick ? 1 : 3,
          concurrency: options.concurrency,
          log,
        })),
      );
    }
    if (wants("index")) rows.push(...(await indexRows(indexOptions(options, work))));

    const machine = {
      cpu: cpus()[0]?.model ?? "unknown",
      cores: cpus().length,
      memoryGiB: Math.round(totalmem() / GiB),
      kernel: release(),
      node: process.version,
      go: go.goVersion,
      nginx: (await run("sh", ["-c", "nginx -v 2>&1"]).catch(() => "")).trim() || "nginx",
      host: hostname(),
    };
    const result = {
      date: new Date().toISOString(),
      durationSeconds: Math.round((Date.now() - started) / 1000),
      machine,
      options,
      rows,
      raw,
    };
    const table = formatTable(rows);
    console.log(
      `\n${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Linux ${machine.kernel}, Node.js ${machine.node}, ${machine.go}`,
    );
    console.log(
      `${options.rounds} interleaved rounds, medians; ratios are ours / peer measured in the same round\n`,
    );
    console.log(table);
    const resultsDir = join(ROOT, "bench/results");
    await mkdir(resultsDir, { recursive: true });
    const stamp = result.date.replaceAll(":", "-").replace(/\..*/, "");
    const out = join(resultsDir, `${stamp}${options.quick ? "-quick" : ""}.json`);
    await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
    await writeFile(join(resultsDir, "latest.md"), `${markdownHeader(result)}\n${table}\n`);
    console.log(`\nwrote ${out} and bench/results/latest.md (${result.durationSeconds} s)`);
  } finally {
    await stopAll();
    killAll();
    await rm(work, { recursive: true, force: true });
    if (sink !== work) await rm(sink, { recursive: true, force: true });
  }
}

function indexOptions(options: BenchOptions, work: string) {
  return { root: ROOT, work, fsKeys: options.indexKeys, registryKeys: options.indexRegistryKeys, log };
}

/** `--only index`: the index rows need neither the Go peer nor the pull servers. */
async function indexOnly(options: BenchOptions): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "atomix-bench-"));
  const started = Date.now();
  try {
    const rows = await indexRows(indexOptions(options, work));
    const table = formatTable(rows);
    const date = new Date().toISOString();
    console.log(
      `\n${cpus()[0]?.model ?? "unknown"}, ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}, Node.js ${process.version}\n`,
    );
    console.log(table);
    const resultsDir = join(ROOT, "bench/results");
    await mkdir(resultsDir, { recursive: true });
    const out = join(resultsDir, `${date.replaceAll(":", "-").replace(/\..*/, "")}-index.json`);
    const durationSeconds = Math.round((Date.now() - started) / 1000);
    await writeFile(out, `${JSON.stringify({ date, durationSeconds, options, rows }, null, 2)}\n`);
    console.log(`\nwrote ${out} (${durationSeconds} s)`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function markdownHeader(result: {
  date: string;
  durationSeconds: number;
  machine: Record<string, unknown>;
  options: BenchOptions;
}): string {
  const m = result.machine;
  return `# Latest benchmark run\n\n${result.date}, ${result.durationSeconds} s, ${result.options.rounds} interleaved rounds${result.options.quick ? " (--quick)" : ""}.\nMachine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node.js ${m.node}, ${m.go}, ${m.nginx}.\n`;
}

function push(raw: Record<string, Sample[]>, section: string, sample: Sample): void {
  const samples = raw[section] ?? [];
  samples.push(sample);
  raw[section] = samples;
}

async function randomFile(path: string, size: number): Promise<string> {
  const file = await open(path, "w");
  try {
    const block = 4 * MiB;
    for (let written = 0; written < size; written += block) {
      await file.write(randomBytes(Math.min(block, size - written)));
    }
  } finally {
    await file.close();
  }
  return path;
}

await main();
