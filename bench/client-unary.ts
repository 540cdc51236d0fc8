/**
 * Calls the cache-hit CompilePlugin from `callers` callers on one connection
 * for `seconds`, with one of two Node.js gRPC clients, and prints the calls,
 * calls/s, p50 and p99 as JSON (as the grpc-go client does for `unary`):
 *
 * - `ours`: the client package's own unary path (transport/grpc-channel.ts
 *   over `node:http2`);
 * - `connect`: connect-node's gRPC transport (also over `node:http2`), with
 *   the service read from a descriptor set protoc made of proto/.
 *
 * A process of its own, so that the benchmark's bookkeeping shares nothing
 * with the client measured.
 *
 *   node dist/bench/client-unary.js '{"stack":"ours","address":...,"key":...,"callers":1,"seconds":3,"descriptors":...}'
 */
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { serverTarget } from "atomix-plugins-client/server-target";
import { grpcChannel } from "atomix-plugins-client/transport/grpc-channel";
import { PluginCompilerDefinition } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { BuildKey } from "atomix-plugins-core/model/build-key";

const { stack, address, key, callers, seconds, descriptors } = JSON.parse(process.argv[2] ?? "{}") as {
  stack: "ours" | "connect";
  address: string;
  key: BuildKey;
  callers: number;
  seconds: number;
  /** A FileDescriptorSet of atomix/runtime/v1/plugin.proto (protoc --include_imports). */
  descriptors: string;
};
const request = { runtime: { ...key.runtime }, plugin: { ...key.plugin } };

function ours(): { call: () => Promise<unknown>; close: () => void } {
  const channel = grpcChannel(serverTarget(address, undefined));
  const method = PluginCompilerDefinition.methods.compilePlugin;
  return {
    call: () => channel.unary(PluginCompilerDefinition, method, request),
    close: () => channel.close(),
  };
}

function connect(): { call: () => Promise<unknown>; close: () => void } {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(descriptors));
  const service = createFileRegistry(set).getService("atomix.runtime.v1.PluginCompiler");
  if (!service) throw new Error("the descriptor set has no atomix.runtime.v1.PluginCompiler");
  const client = createClient(service, createGrpcTransport({ baseUrl: `http://${address}` })) as unknown as {
    compilePlugin(request: unknown): Promise<unknown>;
  };
  return { call: () => client.compilePlugin(request), close: () => {} };
}

const client = stack === "ours" ? ours() : connect();
try {
  await client.call(); // warm-up, the connection, and a check that the key is a hit
  const latencies: number[] = [];
  const stop = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (performance.now() < stop) {
        const began = performance.now();
        await client.call();
        latencies.push(performance.now() - began);
      }
    }),
  );
  const wall = performance.now() - start;
  latencies.sort((a, b) => a - b);
  const percentile = (p: number) => latencies[Math.round(p * (latencies.length - 1))] ?? 0;
  console.log(
    JSON.stringify({
      calls: latencies.length,
      callsPerSec: latencies.length / (wall / 1000),
      p50Ms: percentile(0.5),
      p99Ms: percentile(0.99),
    }),
  );
} finally {
  client.close();
}
