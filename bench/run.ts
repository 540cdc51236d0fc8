/**
 * `npm run bench`: our server side by side with nginx (sendfile) and a
 * grpc-go server of the same API, on loopback, in interleaved rounds. It
 * builds the Go peer, starts every server itself, stops them all, prints a
 * table and writes the same figures as JSON to bench/results/.
 */
import { createHash, randomBytes } from "node:crypto";
import { appendFileSync, existsSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { cpus, hostname, release, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createPluginClient } from "../src/client/index.js";
import { DEFAULT_CHUNK_SIZE } from "../src/config.js";
import type { BuildKey } from "../src/model/build-key.js";
import { buildGoPeers, type GoPeers } from "./lib/go-peers.js";
import { startNginx } from "./lib/nginx.js";
import { type BenchOptions, parseBenchOptions } from "./lib/options.js";
import {
  cpuSeconds,
  killAll,
  lifetimePeakRss,
  residentNow,
  run,
  SERVER_NODE_FLAGS,
  type ServerProcess,
  startServer,
  watchDescriptors,
  watchPeakRss,
} from "./lib/processes.js";
import { GiB, MiB, median, megabytesPerSecond } from "./lib/stats.js";
import { formatTable, type Row } from "./lib/table.js";
import { compileRows } from "./sections/compile.js";
import { indexRows } from "./sections/index.js";
import { replicaRows } from "./sections/replica.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = join(ROOT, "dist/src/cli/main.js");
const RUNTIME = { version: "1.0.0", buildVersion: "go1.19.8" };
const keyFor = (name: string): BuildKey => ({ runtime: RUNTIME, plugin: { name, version: "1.0.0" } });
const nameFor = (mib: number) => `bench-${mib}m`;
const fanoutName = (i: number) => `bench-fanout-${i}`;

interface Context {
  options: BenchOptions;
  go: GoPeers;
  work: string;
  /** Where clients write what they pull: tmpfs, so disk flushes do not blur the network figures. */
  sink: string;
  files: Map<number, string>;
  /** The fan-out rows' artifacts, by name. */
  fanoutFiles: Map<string, string>;
}

type Sample = Record<string, number>;

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

    for (let round = 0; round < options.rounds; round++) {
      log(`round ${round + 1}/${options.rounds}`);
      const flip = round % 2 === 1;
      if (wants("single")) push(raw, "single", await singleStream(ctx, { ours, peer, nginx }, flip));
      if (wants("concurrent")) push(raw, "concurrent", await concurrent(ctx, { ours, peer }, flip, 0));
      if (wants("slow")) push(raw, "slow", await concurrent(ctx, { ours, peer }, flip, options.slowRate));
      if (wants("fanout")) push(raw, "fanout", await fanout(ctx, { ours, peer }, flip));
      if (wants("unary")) push(raw, "unary", await unary(ctx, { ours, bare }, flip));
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

    rows.push(...summarize(options, raw));
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

function log(message: string): void {
  console.error(`[bench] ${message}`);
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

/** What a row adds to a server it starts: Node.js flags, serve arguments, and a reader of its stdout lines. */
interface ExtraServerOptions {
  nodeArgs?: string[];
  args?: string[];
  onLine?: (line: string) => void;
}

function startOurs(ctx: Context, dataDir: string, extra: ExtraServerOptions = {}): Promise<ServerProcess> {
  const log = ctx.options.serverLog;
  return startServer({
    name: "atomix-plugins",
    command: process.execPath,
    args: [
      ...SERVER_NODE_FLAGS,
      ...ctx.options.serverNodeArgs,
      ...(extra.nodeArgs ?? []),
      CLI,
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--data",
      dataDir,
      "--log-level",
      "info",
      ...ctx.options.serverArgs,
      ...(extra.args ?? []),
    ],
    onLine: (line) => {
      if (log) appendFileSync(log, `${Date.now()} ${line}\n`);
      extra.onLine?.(line);
    },
  });
}

/**
 * The bare grpc-js handler, with the Node.js flags our server runs with (its
 * young generation capped, which trades calls/s for memory): the ratio is
 * then what our code costs, not what the flag does (README, Performance).
 */
function startBare(extra: ExtraServerOptions = {}): Promise<ServerProcess> {
  return startServer({
    name: "bare grpc-js",
    command: process.execPath,
    args: [...SERVER_NODE_FLAGS, ...(extra.nodeArgs ?? []), join(ROOT, "dist/bench/bare-unary-server.js")],
    onLine: extra.onLine,
  });
}

function ourChunkSize(ctx: Context): number {
  const at = ctx.options.serverArgs.indexOf("--chunk-size");
  return at >= 0 ? Number(ctx.options.serverArgs[at + 1]) : DEFAULT_CHUNK_SIZE;
}

function startPeer(ctx: Context, sizesMiB: number[], withFanout = true): Promise<ServerProcess> {
  const chunk = ctx.options.peerChunk || ourChunkSize(ctx);
  const fanout = withFanout ? [...ctx.fanoutFiles] : [];
  return startServer({
    name: "grpc-go peer",
    command: ctx.go.server,
    args: [
      "-chunk",
      String(chunk),
      ...sizesMiB.flatMap((mib) => ["-file", `${nameFor(mib)}=${ctx.files.get(mib)}`]),
      ...fanout.flatMap(([name, path]) => ["-file", `${name}=${path}`]),
    ],
  });
}

interface PullFigures {
  wallMs: number;
  bytes: number;
  p50Ms: number;
  p99Ms: number;
}

function goPull(ctx: Context, address: string, name: string, n: number, rate = 0): Promise<PullFigures> {
  return run(ctx.go.client, [
    "-mode",
    "pull",
    "-addr",
    address,
    "-name",
    name,
    "-build",
    RUNTIME.buildVersion,
    "-n",
    String(n),
    "-rate",
    String(rate),
  ]).then((out) => JSON.parse(out) as PullFigures);
}

/** Runs `measure` for each entry in order (reversed when `flip`), so neither side always goes first. */
async function interleave<T>(
  flip: boolean,
  entries: [string, () => Promise<T>][],
): Promise<Record<string, T>> {
  const out: Record<string, T> = {};
  for (const [label, measure] of flip ? [...entries].reverse() : entries) out[label] = await measure();
  return out;
}

/** Best-of-N single-stream throughput and the server CPU per GiB it took. */
async function withCpu(
  server: ServerProcess,
  pulls: () => Promise<{ ms: number[]; bytes: number }>,
): Promise<{ mbps: number; cpuPerGiB: number }> {
  const before = await cpuSeconds(server.pid);
  const { ms, bytes } = await pulls();
  const cpu = (await cpuSeconds(server.pid)) - before;
  return { mbps: megabytesPerSecond(bytes / ms.length, median(ms)), cpuPerGiB: cpu / (bytes / GiB) };
}

async function singleStream(
  ctx: Context,
  s: { ours: ServerProcess; peer: ServerProcess; nginx: ServerProcess },
  flip: boolean,
): Promise<Sample> {
  const { singlePulls } = ctx.options;
  const mib = ctx.options.singleMiB;
  const name = nameFor(mib);
  const results = await interleave(flip, [
    ["nginx", () => withCpu(s.nginx, () => curlPulls(ctx, `http://${s.nginx.address}/${name}`, false))],
    // What a runtime using curl needs to check what our client checks.
    [
      "nginxVerified",
      () => withCpu(s.nginx, () => curlPulls(ctx, `http://${s.nginx.address}/${name}`, true)),
    ],
    [
      "oursTs",
      () =>
        withCpu(s.ours, async () => {
          const out = await run(process.execPath, [
            join(ROOT, "dist/bench/ts-pull.js"),
            JSON.stringify({ address: s.ours.address, key: keyFor(name), dir: ctx.sink, count: singlePulls }),
          ]);
          const { results } = JSON.parse(out) as { results: { ms: number; bytes: number }[] };
          return { ms: results.map((r) => r.ms), bytes: results.reduce((a, r) => a + r.bytes, 0) };
        }),
    ],
    ["oursGo", () => withCpu(s.ours, () => goPulls(ctx, s.ours, name, singlePulls))],
    ["peerGo", () => withCpu(s.peer, () => goPulls(ctx, s.peer, name, singlePulls))],
  ]);
  const sample: Sample = {};
  for (const [label, r] of Object.entries(results)) {
    sample[`${label}MBps`] = r.mbps;
    sample[`${label}CpuPerGiB`] = r.cpuPerGiB;
  }
  sample.digestMs = digestMs(mib);
  return sample;
}

/**
 * `singlePulls` downloads of `url` by curl to a file, timed by curl itself;
 * with `verify`, each file is then digested by OpenSSL (SHA-NI, as Node.js's
 * hash is), and the digest's wall time is added.
 */
async function curlPulls(
  ctx: Context,
  url: string,
  verify: boolean,
): Promise<{ ms: number[]; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < ctx.options.singlePulls; i++) {
    const to = join(ctx.sink, `curl-${i}`);
    const out = await run("curl", ["-sS", "--fail", "-o", to, "-w", "%{time_total} %{size_download}", url]);
    const [seconds, size] = out.trim().split(" ").map(Number) as [number, number];
    const started = performance.now();
    if (verify) await run("openssl", ["dgst", "-sha256", to]);
    ms.push(seconds * 1000 + (verify ? performance.now() - started : 0));
    bytes += size;
    await rm(to, { force: true });
  }
  return { ms, bytes };
}

/** The SHA-256 of `mib` MiB in this process: what checking the digest costs our client, alone. */
function digestMs(mib: number): number {
  const bytes = randomBytes(mib * MiB);
  const ms: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    createHash("sha256").update(bytes).digest();
    ms.push(performance.now() - started);
  }
  return median(ms);
}

async function goPulls(
  ctx: Context,
  server: ServerProcess,
  name: string,
  count: number,
): Promise<{ ms: number[]; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const r = await goPull(ctx, server.address, name, 1);
    ms.push(r.wallMs);
    bytes += r.bytes;
  }
  return { ms, bytes };
}

async function concurrent(
  ctx: Context,
  s: { ours: ServerProcess; peer: ServerProcess },
  flip: boolean,
  rate: number,
): Promise<Sample> {
  const name = nameFor(ctx.options.concurrentMiB);
  const measure = async (server: ServerProcess) => {
    const watch = await watchPeakRss(server.pid);
    const figures = await goPull(ctx, server.address, name, ctx.options.concurrency, rate);
    const peak = await watch.stop();
    return { ...figures, peak };
  };
  const r = await interleave(flip, [
    ["ours", () => measure(s.ours)],
    ["peer", () => measure(s.peer)],
  ]);
  const sample: Sample = {};
  for (const [label, f] of Object.entries(r)) {
    sample[`${label}MBps`] = megabytesPerSecond(f.bytes, f.wallMs);
    sample[`${label}P50Ms`] = f.p50Ms;
    sample[`${label}P99Ms`] = f.p99Ms;
    sample[`${label}PeakMiB`] = f.peak / MiB;
  }
  return sample;
}

/**
 * A rollout: `count` pullers, each on its own connection, all pulling at
 * once one artifact (`same`) or four different ones (`mixed`, round robin),
 * from each server in turn; the server's peak RSS and open descriptors over
 * the phase.
 */
async function fanout(
  ctx: Context,
  s: { ours: ServerProcess; peer: ServerProcess },
  flip: boolean,
): Promise<Sample> {
  const names = [...ctx.fanoutFiles.keys()];
  const sample: Sample = {};
  for (const count of ctx.options.fanout) {
    for (const [mode, list] of [
      ["same", names.slice(0, 1)],
      ["mixed", names],
    ] as const) {
      const measure = async (server: ServerProcess) => {
        const rss = await watchPeakRss(server.pid);
        const fds = await watchDescriptors(server.pid);
        const figures = await goPull(ctx, server.address, list.join(","), count);
        return { ...figures, peak: await rss.stop(), fds: await fds.stop() };
      };
      const r = await interleave(flip, [
        ["ours", () => measure(s.ours)],
        ["peer", () => measure(s.peer)],
      ]);
      for (const [label, f] of Object.entries(r)) {
        const at = `${label}${mode}${count}`;
        sample[`${at}MBps`] = megabytesPerSecond(f.bytes, f.wallMs);
        sample[`${at}P50Ms`] = f.p50Ms;
        sample[`${at}P99Ms`] = f.p99Ms;
        sample[`${at}PeakMiB`] = f.peak / MiB;
        sample[`${at}Fds`] = f.fds;
      }
      log(
        `fan-out ${count} ${mode}: ours ${fmt(sample[`ours${mode}${count}MBps`] ?? 0)} MB/s ${fmt(sample[`ours${mode}${count}PeakMiB`] ?? 0)} MiB, peer ${fmt(sample[`peer${mode}${count}MBps`] ?? 0)} MB/s ${fmt(sample[`peer${mode}${count}PeakMiB`] ?? 0)} MiB`,
      );
    }
  }
  return sample;
}

interface UnaryFigures {
  calls: number;
  callsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/** The grpc-go client calling the cache-hit CompilePlugin on one connection for `seconds`. */
async function unaryLoad(ctx: Context, server: ServerProcess, callers: number, seconds: number) {
  const out = await run(ctx.go.client, [
    ...["-mode", "unary", "-addr", server.address, "-name", nameFor(ctx.options.singleMiB)],
    ...["-build", RUNTIME.buildVersion, "-c", String(callers), "-duration", `${seconds}s`],
  ]);
  return JSON.parse(out) as UnaryFigures;
}

async function unary(ctx: Context, s: { ours: ServerProcess; bare: ServerProcess }, flip: boolean) {
  const call = (server: ServerProcess, callers: number) =>
    unaryLoad(ctx, server, callers, ctx.options.unarySeconds);
  const r = await interleave(flip, [
    ["oursOne", () => call(s.ours, 1)],
    ["bareOne", () => call(s.bare, 1)],
    ["oursMany", () => call(s.ours, ctx.options.unaryCallers)],
    ["bareMany", () => call(s.bare, ctx.options.unaryCallers)],
  ]);
  const sample: Sample = {};
  for (const [label, f] of Object.entries(r)) {
    sample[`${label}P50Ms`] = f.p50Ms;
    sample[`${label}P99Ms`] = f.p99Ms;
    sample[`${label}CallsPerSec`] = f.callsPerSec;
  }
  return sample;
}

/**
 * What each scavenge promoted to the old generation, read from a server run
 * with `--trace-gc-nvp` (one line per GC; `gc=s` marks a scavenge).
 */
function promotedPerScavenge() {
  let values: number[] = [];
  return {
    onLine(line: string) {
      if (!line.includes(" gc=s ")) return;
      const promoted = / promoted=(\d+)/.exec(line);
      if (promoted) values.push(Number(promoted[1]));
    },
    /** The median since the last call, in KiB. */
    takeMedianKiB(): number {
      const taken = values;
      values = [];
      return median(taken) / 1024;
    },
  };
}

/**
 * A scavenge promotes at 2 x 4 MiB young generation either a few KiB (the
 * calls in flight at one scavenge are gone by the next) or 600-900 KiB (each
 * promotes the last one's survivors), and a process keeps the regime it
 * falls into, which costs 1.3-1.6x the CPU a call: one process of each side
 * is one draw (README, Performance). So this row starts a fresh pair each
 * time, says which regime each side drew, and compares calls/s and CPU a
 * call over several pairs.
 */
async function unaryFresh(ctx: Context, dataDir: string, flip: boolean): Promise<Sample> {
  const trace = { ours: promotedPerScavenge(), bare: promotedPerScavenge() };
  const nodeArgs = ["--trace-gc-nvp"];
  const ours = await startOurs(ctx, dataDir, { nodeArgs, onLine: trace.ours.onLine });
  const bare = await startBare({ nodeArgs, onLine: trace.bare.onLine }).catch(async (error: unknown) => {
    await ours.stop();
    throw error;
  });
  try {
    const load = (server: ServerProcess, seconds: number) =>
      unaryLoad(ctx, server, ctx.options.unaryCallers, seconds);
    const measure = async (side: "ours" | "bare", server: ServerProcess) => {
      await load(server, 1); // warm-up: JIT, and the young generation grown to its cap
      trace[side].takeMedianKiB();
      const before = await cpuSeconds(server.pid);
      const figures = await load(server, ctx.options.unarySeconds);
      const cpu = (await cpuSeconds(server.pid)) - before;
      return {
        ...figures,
        cpuUsPerCall: (cpu * 1e6) / figures.calls,
        promotedKiB: trace[side].takeMedianKiB(),
      };
    };
    const r = await interleave(flip, [
      ["ours", () => measure("ours", ours)],
      ["bare", () => measure("bare", bare)],
    ]);
    const sample: Sample = {};
    for (const [side, f] of Object.entries(r)) {
      sample[`${side}CallsPerSec`] = f.callsPerSec;
      sample[`${side}CpuUsPerCall`] = f.cpuUsPerCall;
      sample[`${side}PromotedKiB`] = f.promotedKiB;
    }
    return sample;
  } finally {
    await Promise.all([ours.stop(), bare.stop()]);
  }
}

/** How long a fresh server is left alone before its resident memory is read: start-up work settles. */
const FRESH_SETTLE_MS = 1_500;

/**
 * Each artifact pulled once from a freshly started server: its lifetime peak
 * RSS, and its resident memory before that first call (the floor), beside
 * the bare grpc-js server's.
 */
async function rssBySize(ctx: Context, dataDir: string): Promise<Sample> {
  const sample: Sample = {};
  const bare = await startBare();
  try {
    await new Promise((resolve) => setTimeout(resolve, FRESH_SETTLE_MS));
    sample.bareFreshMiB = (await residentNow(bare.pid)) / MiB;
  } finally {
    await bare.stop();
  }
  for (const mib of ctx.options.rssSizesMiB) {
    for (const side of ["ours", "peer"] as const) {
      const server = side === "ours" ? await startOurs(ctx, dataDir) : await startPeer(ctx, [mib], false);
      try {
        await new Promise((resolve) => setTimeout(resolve, FRESH_SETTLE_MS));
        // The mean over this round's fresh starts.
        const fresh = (await residentNow(server.pid)) / MiB / ctx.options.rssSizesMiB.length;
        sample[`${side}FreshMiB`] = (sample[`${side}FreshMiB`] ?? 0) + fresh;
        await goPull(ctx, server.address, nameFor(mib), 1);
        sample[`${side}${mib}PeakMiB`] = (await lifetimePeakRss(server.pid)) / MiB;
      } finally {
        await server.stop();
      }
    }
  }
  return sample;
}

function summarize(options: BenchOptions, raw: Record<string, Sample[]>): Row[] {
  const rows: Row[] = [];
  const m = (section: string, field: string) =>
    median((raw[section] ?? []).map((s) => s[field] ?? Number.NaN));
  const ratio = (section: string, a: string, b: string) =>
    median((raw[section] ?? []).map((s) => (s[a] ?? Number.NaN) / (s[b] ?? Number.NaN)));
  const single = `single stream ${options.singleMiB} MiB`;
  if (raw.single) {
    rows.push(
      {
        figure: `${single}, our TS client vs nginx + curl`,
        ours: m("single", "oursTsMBps"),
        peer: m("single", "nginxMBps"),
        ratio: ratio("single", "oursTsMBps", "nginxMBps"),
        unit: "MB/s",
        target: { ratioAtLeast: 0.8 },
      },
      {
        figure: `${single}, our TS client vs nginx + curl, then openssl sha256 (both verify)`,
        ours: m("single", "oursTsMBps"),
        peer: m("single", "nginxVerifiedMBps"),
        ratio: ratio("single", "oursTsMBps", "nginxVerifiedMBps"),
        unit: "MB/s",
      },
      {
        figure: `  SHA-256 of ${options.singleMiB} MiB in Node.js (the digest's cost, alone)`,
        ours: m("single", "digestMs"),
        unit: "ms",
      },
      {
        figure: "  server CPU per GiB (TS client; nginx)",
        ours: m("single", "oursTsCpuPerGiB"),
        peer: m("single", "nginxCpuPerGiB"),
        ratio: ratio("single", "oursTsCpuPerGiB", "nginxCpuPerGiB"),
        unit: "s/GiB",
        target: { oursAtMost: 1.0 },
      },
      {
        figure: `${single}, grpc-go client vs grpc-go peer`,
        ours: m("single", "oursGoMBps"),
        peer: m("single", "peerGoMBps"),
        ratio: ratio("single", "oursGoMBps", "peerGoMBps"),
        unit: "MB/s",
        target: { ratioAtLeast: 1.0 },
      },
      {
        figure: "  server CPU per GiB (grpc-go client)",
        ours: m("single", "oursGoCpuPerGiB"),
        peer: m("single", "peerGoCpuPerGiB"),
        ratio: ratio("single", "oursGoCpuPerGiB", "peerGoCpuPerGiB"),
        unit: "s/GiB",
      },
    );
  }
  const concurrentRows = (section: string, label: string, withThroughput: boolean) => {
    if (!raw[section]) return;
    if (withThroughput) {
      rows.push(
        {
          figure: `${label}: aggregate`,
          ours: m(section, "oursMBps"),
          peer: m(section, "peerMBps"),
          ratio: ratio(section, "oursMBps", "peerMBps"),
          unit: "MB/s",
          target: { ratioAtLeast: 1.0 },
        },
        {
          figure: "  per-pull p50",
          ours: m(section, "oursP50Ms"),
          peer: m(section, "peerP50Ms"),
          ratio: ratio(section, "oursP50Ms", "peerP50Ms"),
          unit: "ms",
        },
        {
          figure: "  per-pull p99",
          ours: m(section, "oursP99Ms"),
          peer: m(section, "peerP99Ms"),
          ratio: ratio(section, "oursP99Ms", "peerP99Ms"),
          unit: "ms",
        },
      );
    }
    rows.push({
      figure: withThroughput ? "  server peak RSS" : `${label}: server peak RSS`,
      ours: m(section, "oursPeakMiB"),
      peer: m(section, "peerPeakMiB"),
      ratio: ratio(section, "oursPeakMiB", "peerPeakMiB"),
      unit: "MiB",
      target: { oursAtMost: 256 },
    });
  };
  concurrentRows(
    "concurrent",
    `${options.concurrency} concurrent pulls of ${options.concurrentMiB} MiB, grpc-go clients`,
    true,
  );
  concurrentRows(
    "slow",
    `${options.concurrency} clients reading at ${options.slowRate / 1e6} MB/s each`,
    false,
  );
  if (raw.fanout) {
    for (const count of options.fanout) {
      for (const mode of ["same", "mixed"] as const) {
        const at = (side: string, field: string) => `${side}${mode}${count}${field}`;
        const pair = (field: string) => ({
          ours: m("fanout", at("ours", field)),
          peer: m("fanout", at("peer", field)),
          ratio: ratio("fanout", at("ours", field), at("peer", field)),
        });
        const what = mode === "same" ? "one" : `${options.fanoutArtifacts} different`;
        rows.push(
          {
            figure: `fan-out: ${count} pulls of ${what} ${options.fanoutMiB} MiB artifact${mode === "same" ? "" : "s"}, a connection each: aggregate`,
            ...pair("MBps"),
            unit: "MB/s",
            target: { ratioAtLeast: 1.0 },
          },
          { figure: "  per-pull p50", ...pair("P50Ms"), unit: "ms" },
          { figure: "  per-pull p99", ...pair("P99Ms"), unit: "ms" },
          {
            figure: "  server peak RSS",
            ...pair("PeakMiB"),
            unit: "MiB",
            target: count <= 1000 ? { oursAtMost: 256 } : undefined,
          },
          { figure: "  server open descriptors, peak", ...pair("Fds"), unit: "fds" },
        );
      }
    }
  }
  if (raw.rss) {
    rows.push({
      figure: "fresh server resident before its first call (embedded store)",
      ours: m("rss", "oursFreshMiB"),
      peer: m("rss", "peerFreshMiB"),
      ratio: ratio("rss", "oursFreshMiB", "peerFreshMiB"),
      unit: "MiB",
      target: { oursAtMost: 50 },
      note: `bare grpc-js server ${fmt(m("rss", "bareFreshMiB"))} MiB`,
    });
    for (const mib of options.rssSizesMiB) {
      rows.push({
        figure: `server peak RSS pulling ${mib} MiB (fresh server)`,
        ours: m("rss", `ours${mib}PeakMiB`),
        peer: m("rss", `peer${mib}PeakMiB`),
        ratio: ratio("rss", `ours${mib}PeakMiB`, `peer${mib}PeakMiB`),
        unit: "MiB",
      });
    }
    const small = Math.min(...options.rssSizesMiB);
    const large = Math.max(...options.rssSizesMiB);
    rows.push({
      figure: `  our peak RSS, ${large} MiB / ${small} MiB artifact`,
      ours: ratio("rss", `ours${large}PeakMiB`, `ours${small}PeakMiB`),
      unit: "×",
      target: { oursAtMost: 1.1 },
    });
  }
  if (raw.unary) {
    rows.push(
      {
        figure: "cache-hit CompilePlugin vs bare grpc-js unary, 1 caller: p50",
        ours: m("unary", "oursOneP50Ms"),
        peer: m("unary", "bareOneP50Ms"),
        ratio: ratio("unary", "oursOneP50Ms", "bareOneP50Ms"),
        unit: "ms",
        target: { oursAtMost: 0.3 },
      },
      {
        figure: "  p99",
        ours: m("unary", "oursOneP99Ms"),
        peer: m("unary", "bareOneP99Ms"),
        ratio: ratio("unary", "oursOneP99Ms", "bareOneP99Ms"),
        unit: "ms",
      },
      {
        figure: `  calls/s at ${options.unaryCallers} callers`,
        ours: m("unary", "oursManyCallsPerSec"),
        peer: m("unary", "bareManyCallsPerSec"),
        ratio: ratio("unary", "oursManyCallsPerSec", "bareManyCallsPerSec"),
        unit: "calls/s",
        target: { ratioAtLeast: 0.9 },
      },
      {
        figure: `  p50 / p99 at ${options.unaryCallers} callers`,
        ours: m("unary", "oursManyP50Ms"),
        peer: m("unary", "bareManyP50Ms"),
        ratio: ratio("unary", "oursManyP50Ms", "bareManyP50Ms"),
        unit: "ms (p50)",
        note: `p99 ${fmt(m("unary", "oursManyP99Ms"))} vs ${fmt(m("unary", "bareManyP99Ms"))} ms`,
      },
    );
  }
  const fresh = raw.unaryFresh ?? [];
  if (fresh.length > 0) {
    // Below this a scavenge promoted only what was still starting: the low regime.
    const low = (side: string) =>
      fresh.filter((s) => (s[`${side}PromotedKiB`] ?? Number.POSITIVE_INFINITY) < 100);
    const regimes = `promoting < 100 KiB a scavenge: ours in ${low("ours").length}, bare in ${low("bare").length} of ${fresh.length}`;
    const inLow = (side: string) => median(low(side).map((s) => s[`${side}CpuUsPerCall`] ?? Number.NaN));
    rows.push(
      {
        figure: `  calls/s at ${options.unaryCallers} callers, fresh pairs of processes`,
        ours: m("unaryFresh", "oursCallsPerSec"),
        peer: m("unaryFresh", "bareCallsPerSec"),
        ratio: ratio("unaryFresh", "oursCallsPerSec", "bareCallsPerSec"),
        unit: "calls/s",
        note: regimes,
      },
      {
        figure: "  server CPU a call, fresh pairs (all; in the low-promotion regime)",
        ours: m("unaryFresh", "oursCpuUsPerCall"),
        peer: m("unaryFresh", "bareCpuUsPerCall"),
        ratio: ratio("unaryFresh", "oursCpuUsPerCall", "bareCpuUsPerCall"),
        unit: "µs",
        note: `low regime only: ${fmt(inLow("ours"))} vs ${fmt(inLow("bare"))} µs`,
      },
    );
  }
  return rows;
}

function fmt(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

await main();
