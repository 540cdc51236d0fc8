import { createHash } from "node:crypto";
import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import {
  type InspectPluginRequest,
  type Manifest,
  PluginAdminDefinition,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import {
  PluginCompilerDefinition,
  PluginRegistryDefinition,
  type PullPluginRequest,
  type PullPluginResponse,
} from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import { PULL_METADATA } from "atomix-plugins-core/protocol/metadata";
import { grpcService } from "../../src/server/grpc-service.js";

/** What the hostile server answers for one plugin name. */
export interface HostileAnswer {
  /** The manifest InspectPlugin answers (the key asked for, unless it names another). */
  manifest: Partial<Manifest>;
  /** The bytes PullPlugin sends from the offset asked for, whatever the manifest says. */
  body: (offset: number) => Buffer;
  /** InspectPlugin takes the call and never answers. */
  silent?: boolean;
  /** PullPlugin sends the body's 64 KiB messages up to byte `after`, the rest once `open` settles. */
  gate?: { after: number; open: Promise<void> };
}

export interface HostileUpstream {
  /** host:port. */
  readonly address: string;
  /** Answers by plugin name; a name not here is NOT_FOUND. */
  readonly answers: Map<string, HostileAnswer>;
  /** PullPlugin calls seen, by plugin name. */
  readonly pulls: Map<string, number>;
  /** What ListPlugins answers, whatever the filter. */
  readonly listing: Manifest[];
  /** CompilePlugin calls seen; none is ever answered. */
  readonly compiles: number;
  close(): Promise<void>;
}

export const sha256 = (data: Uint8Array) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/**
 * A gRPC server that speaks our API (InspectPlugin, PullPlugin) and answers
 * whatever a test tells it to: what a compromised or broken upstream
 * atomix-plugins server can send a tier in front of it.
 */
export async function startHostileUpstream(): Promise<HostileUpstream> {
  const answers = new Map<string, HostileAnswer>();
  const pulls = new Map<string, number>();
  let compiles = 0;
  const listing: Manifest[] = [];
  const server = new Server();
  server.addService(grpcService(PluginAdminDefinition), {
    listPlugins(_call: unknown, callback: sendUnaryData<{ manifests: Manifest[]; nextPageToken: string }>) {
      callback(null, { manifests: listing, nextPageToken: "" });
    },
    inspectPlugin(call: ServerUnaryCall<InspectPluginRequest, Manifest>, callback: sendUnaryData<Manifest>) {
      const answer = answers.get(call.request.plugin?.name ?? "");
      if (!answer) return callback({ code: status.NOT_FOUND, details: "not here" });
      if (answer.silent) return;
      callback(null, {
        runtime: call.request.runtime,
        plugin: call.request.plugin,
        digest: "",
        size: 0,
        mediaType: "application/octet-stream",
        createdAt: "2026-01-01T00:00:00Z",
        annotations: {},
        heldHere: true,
        ...answer.manifest,
      } as Manifest);
    },
  } as never);
  server.addService(grpcService(PluginCompilerDefinition), {
    compilePlugin() {
      // Takes every build and never answers, as an upstream behind a connection lost without a reset.
      compiles += 1;
    },
  } as never);
  server.addService(grpcService(PluginRegistryDefinition), {
    async pullPlugin(call: ServerWritableStream<PullPluginRequest, PullPluginResponse>) {
      const name = call.request.plugin?.name ?? "";
      pulls.set(name, (pulls.get(name) ?? 0) + 1);
      const answer = answers.get(name);
      if (!answer) {
        call.emit("error", { code: status.NOT_FOUND, details: "not here" });
        return;
      }
      const headers = new Metadata();
      headers.set(PULL_METADATA.digest, String(answer.manifest.digest));
      headers.set(PULL_METADATA.size, String(answer.manifest.size));
      call.sendMetadata(headers);
      const offset = Number(call.metadata.get(PULL_METADATA.offset)[0] ?? 0);
      const body = answer.body(offset);
      const gate = answer.gate;
      for (let at = 0; at < body.byteLength; at += 65536) {
        if (gate && offset + at >= gate.after) await gate.open;
        call.write({ data: body.subarray(at, at + 65536) });
      }
      call.end();
    },
  } as never);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return {
    address: `127.0.0.1:${port}`,
    answers,
    pulls,
    listing,
    get compiles() {
      return compiles;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        resolve();
      }),
  };
}
