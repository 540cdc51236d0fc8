/**
 * What every section of `npm run bench` shares: the keys and files it pulls,
 * the servers it starts side by side, the grpc-go client that measures them,
 * and the medians its rows are made of.
 */
import { appendFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { DEFAULT_CHUNK_SIZE } from "../../src/config.js";
import type { GoPeers } from "./go-peers.js";
import type { BenchOptions } from "./options.js";
import { run, SERVER_NODE_FLAGS, type ServerProcess, startServer } from "./processes.js";
import { median } from "./stats.js";

/** The checkout: this module runs from dist/bench/lib/. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const CLI = join(ROOT, "dist/src/cli/main.js");
export const RUNTIME = { version: "1.0.0", buildVersion: "go1.19.8" };
export const keyFor = (name: string): BuildKey => ({ runtime: RUNTIME, plugin: { name, version: "1.0.0" } });
export const nameFor = (mib: number) => `bench-${mib}m`;
export const fanoutName = (i: number) => `bench-fanout-${i}`;

export interface Context {
  options: BenchOptions;
  go: GoPeers;
  work: string;
  /** Where clients write what they pull: tmpfs, so disk flushes do not blur the network figures. */
  sink: string;
  files: Map<number, string>;
  /** The fan-out rows' artifacts, by name. */
  fanoutFiles: Map<string, string>;
}

export type Sample = Record<string, number>;

export function log(message: string): void {
  console.error(`[bench] ${message}`);
}

export function fmt(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** Runs `measure` for each entry in order (reversed when `flip`), so neither side always goes first. */
export async function interleave<T>(
  flip: boolean,
  entries: [string, () => Promise<T>][],
): Promise<Record<string, T>> {
  const out: Record<string, T> = {};
  for (const [label, measure] of flip ? [...entries].reverse() : entries) out[label] = await measure();
  return out;
}

/** What a row adds to a server it starts: Node.js flags, serve arguments, and a reader of its stdout lines. */
export interface ExtraServerOptions {
  nodeArgs?: string[];
  args?: string[];
  onLine?: (line: string) => void;
}

export function startOurs(
  ctx: Context,
  dataDir: string,
  extra: ExtraServerOptions = {},
): Promise<ServerProcess> {
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
export function startBare(extra: ExtraServerOptions = {}): Promise<ServerProcess> {
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

export function startPeer(ctx: Context, sizesMiB: number[], withFanout = true): Promise<ServerProcess> {
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

export interface PullFigures {
  wallMs: number;
  bytes: number;
  p50Ms: number;
  p99Ms: number;
}

export function goPull(
  ctx: Context,
  address: string,
  name: string,
  n: number,
  rate = 0,
): Promise<PullFigures> {
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

/** The median of a field over a section's rounds, and the median of the per-round ratio of two fields. */
export function sampleMedians(raw: Record<string, Sample[]>) {
  return {
    m: (section: string, field: string) => median((raw[section] ?? []).map((s) => s[field] ?? Number.NaN)),
    ratio: (section: string, a: string, b: string) =>
      median((raw[section] ?? []).map((s) => (s[a] ?? Number.NaN) / (s[b] ?? Number.NaN))),
  };
}
