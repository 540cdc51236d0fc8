/**
 * Section `client-unary`: which Node.js client should carry the unary
 * calls. The client package's own unary path (transport/grpc-channel.ts,
 * hand-written gRPC over `node:http2`) against connect-node's gRPC transport
 * (`@connectrpc/connect-node`, also over `node:http2`), each calling the
 * cache-hit CompilePlugin on our server from a process of its own: p50 at
 * one caller, calls/s at 64 callers, and what each adds to an install.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import {
  type Context,
  interleave,
  keyFor,
  nameFor,
  ROOT,
  type Sample,
  sampleMedians,
} from "../lib/bench-context.js";
import type { BenchOptions } from "../lib/options.js";
import { run, type ServerProcess } from "../lib/processes.js";
import type { Row } from "../lib/table.js";

interface UnaryFigures {
  calls: number;
  callsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * What connect-node adds to an install of the client: its two packages.
 * Its peer @bufbuild/protobuf is not counted: the core package's generated
 * code depends on it already.
 */
const CONNECT_PACKAGES = ["@connectrpc/connect", "@connectrpc/connect-node"];
/** The client package's unary path, as built. */
const OURS_FILES = ["transport/grpc-channel.js", "transport/grpc-wire.js"];

/** The descriptor set connect-node reads the service from, made once by protoc from proto/. */
export async function clientUnaryDescriptors(work: string): Promise<string> {
  const out = join(work, "plugin.desc");
  await run("protoc", [
    "-I",
    join(ROOT, "proto"),
    "--include_imports",
    `--descriptor_set_out=${out}`,
    "atomix/runtime/v1/plugin.proto",
  ]);
  return out;
}

function load(
  ctx: Context,
  stack: "ours" | "connect",
  server: ServerProcess,
  callers: number,
  descriptors: string,
) {
  const args = {
    stack,
    address: server.address,
    key: keyFor(nameFor(ctx.options.singleMiB)),
    callers,
    seconds: ctx.options.unarySeconds,
    descriptors,
  };
  return run(process.execPath, [join(ROOT, "dist/bench/client-unary.js"), JSON.stringify(args)]).then(
    (out) => JSON.parse(out) as UnaryFigures,
  );
}

export async function clientUnary(ctx: Context, ours: ServerProcess, descriptors: string, flip: boolean) {
  const callers = ctx.options.unaryCallers;
  const r = await interleave(flip, [
    ["oursOne", () => load(ctx, "ours", ours, 1, descriptors)],
    ["connectOne", () => load(ctx, "connect", ours, 1, descriptors)],
    ["oursMany", () => load(ctx, "ours", ours, callers, descriptors)],
    ["connectMany", () => load(ctx, "connect", ours, callers, descriptors)],
  ]);
  const sample: Sample = {};
  for (const [label, f] of Object.entries(r)) {
    sample[`${label}P50Ms`] = f.p50Ms;
    sample[`${label}P99Ms`] = f.p99Ms;
    sample[`${label}CallsPerSec`] = f.callsPerSec;
  }
  return sample;
}

async function bytesUnder(path: string): Promise<number> {
  const info = await stat(path);
  if (!info.isDirectory()) return info.size;
  let total = 0;
  for (const entry of await readdir(path)) total += await bytesUnder(join(path, entry));
  return total;
}

/** Bytes on disk each unary path adds to an install of the client package. */
export async function installSizes(): Promise<{ ours: number; connect: number }> {
  let ours = 0;
  for (const file of OURS_FILES) ours += await bytesUnder(join(ROOT, "packages/client/dist", file));
  let connect = 0;
  for (const name of CONNECT_PACKAGES) connect += await bytesUnder(join(ROOT, "node_modules", name));
  return { ours, connect };
}

export function clientUnaryRows(
  options: BenchOptions,
  raw: Record<string, Sample[]>,
  sizes: { ours: number; connect: number } | undefined,
): Row[] {
  if (!raw.clientUnary) return [];
  const { m, ratio } = sampleMedians(raw);
  const rows: Row[] = [
    {
      figure: "client unary, ours vs connect-node, cache-hit CompilePlugin, 1 caller: p50",
      ours: m("clientUnary", "oursOneP50Ms"),
      peer: m("clientUnary", "connectOneP50Ms"),
      ratio: ratio("clientUnary", "oursOneP50Ms", "connectOneP50Ms"),
      unit: "ms",
    },
    {
      figure: `  calls/s at ${options.unaryCallers} callers`,
      ours: m("clientUnary", "oursManyCallsPerSec"),
      peer: m("clientUnary", "connectManyCallsPerSec"),
      ratio: ratio("clientUnary", "oursManyCallsPerSec", "connectManyCallsPerSec"),
      unit: "calls/s",
    },
  ];
  if (sizes) {
    rows.push({
      figure: "  install size of the unary path (ours: its built files; connect: its packages)",
      ours: Math.round(sizes.ours / 1024),
      peer: Math.round(sizes.connect / 1024),
      ratio: sizes.ours / sizes.connect,
      unit: "KiB",
    });
  }
  return rows;
}
