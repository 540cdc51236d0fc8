import { createHash, randomUUID } from "node:crypto";
import { once } from "node:events";
import { createReadStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { type CallOptions, Metadata } from "@grpc/grpc-js";
import { Code, PluginError } from "../errors/plugin-error.js";
import type { Manifest } from "../gen/atomix/plugins/admin/v1/admin.js";
import type { PullPluginResponse } from "../gen/atomix/runtime/v1/plugin.js";
import { type BuildKey, formatBuildKey } from "../model/build-key.js";
import { type PluginReference, parseReference } from "../model/reference.js";
import { PULL_METADATA } from "../protocol/metadata.js";
import type { Digest } from "../store/artifact-store.js";
import { fromServiceError } from "./call-error.js";
import { type ConnectionOptions, createGrpcClients } from "./grpc-clients.js";

export interface CallControl {
  /** Abandons the call (the returned promise rejects with CANCELLED). */
  signal?: AbortSignal;
  /** Milliseconds before the call fails with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
}

export interface PullOptions extends CallControl {
  /** Where the verified artifact is written (atomically). */
  to: string;
  /** Refuse the artifact unless its digest is this one. */
  expectedDigest?: Digest;
  /** Called as bytes arrive, with the running total and the whole size. */
  onProgress?: (received: number, total: number) => void;
}

export interface PullResult {
  path: string;
  digest: Digest;
  size: number;
}

export interface PushOptions extends CallControl {
  mediaType?: string;
  annotations?: Record<string, string>;
  /** Digest the server must find; computed from the file when pushing a file. */
  digest?: Digest;
  size?: number;
  onProgress?: (sent: number) => void;
}

export type PluginManifest = Manifest;

/** A client of one atomix-plugins server. */
export interface PluginClient {
  pull(key: BuildKey, options: PullOptions): Promise<PullResult>;
  compile(key: BuildKey, options?: CallControl): Promise<PluginReference>;
  push(
    key: BuildKey,
    data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options?: PushOptions,
  ): Promise<PluginManifest>;
  pushFile(
    key: BuildKey,
    path: string,
    options?: Omit<PushOptions, "digest" | "size">,
  ): Promise<PluginManifest>;
  list(
    filter?: { pluginName?: string; runtimeVersion?: string },
    options?: CallControl,
  ): Promise<PluginManifest[]>;
  inspect(key: BuildKey, options?: CallControl): Promise<PluginManifest>;
  remove(key: BuildKey, options?: CallControl): Promise<boolean>;
  collectGarbage(options?: CallControl): Promise<{ removedBlobs: number; freedBytes: number }>;
  close(): void;
}

const PUSH_CHUNK = 256 * 1024;

export function createPluginClient(connection: ConnectionOptions): PluginClient {
  const clients = createGrpcClients(connection);

  function callOptions(control: CallControl | undefined): Partial<CallOptions> {
    return control?.timeoutMs ? { deadline: Date.now() + control.timeoutMs } : {};
  }

  /** Runs a unary call as a promise, wired to the caller's signal. */
  function unary<Response>(
    control: CallControl | undefined,
    start: (
      metadata: Metadata,
      options: Partial<CallOptions>,
      callback: (error: unknown, response: Response) => void,
    ) => { cancel(): void },
  ): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      control?.signal?.throwIfAborted();
      const call = start(new Metadata(), callOptions(control), (error, response) => {
        control?.signal?.removeEventListener("abort", cancel);
        if (error) reject(fromServiceError(error));
        else resolve(response);
      });
      const cancel = () => call.cancel();
      control?.signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  const request = (key: BuildKey) => ({ runtime: { ...key.runtime }, plugin: { ...key.plugin } });

  async function pull(key: BuildKey, options: PullOptions): Promise<PullResult> {
    options.signal?.throwIfAborted();
    const partial = join(dirname(options.to), `.${basename(options.to)}.${randomUUID()}.partial`);
    const call = clients.registry.pullPlugin(request(key), new Metadata(), callOptions(options));
    const cancel = () => call.cancel();
    options.signal?.addEventListener("abort", cancel, { once: true });
    let expected: { digest: string; size: number } | undefined;
    call.once("metadata", (metadata: Metadata) => {
      expected = {
        digest: String(metadata.get(PULL_METADATA.digest)[0] ?? ""),
        size: Number(metadata.get(PULL_METADATA.size)[0] ?? Number.NaN),
      };
    });
    const hash = createHash("sha256");
    let received = 0;
    const file = await open(partial, "wx", 0o644);
    try {
      try {
        for await (const message of call as AsyncIterable<PullPluginResponse>) {
          hash.update(message.data);
          await file.write(message.data);
          received += message.data.byteLength;
          options.onProgress?.(received, expected?.size ?? Number.NaN);
        }
        await file.sync();
      } finally {
        await file.close();
        options.signal?.removeEventListener("abort", cancel);
      }
      const digest = `sha256:${hash.digest("hex")}` as Digest;
      if (!expected) throw new PluginError(Code.DataLoss, "the server sent no x-plugin-digest metadata");
      if (received !== expected.size || digest !== expected.digest) {
        throw new PluginError(
          Code.DataLoss,
          `${formatBuildKey(key)}: received ${received} bytes hashing to ${digest}, the server announced ${expected.size} bytes and ${expected.digest}`,
        );
      }
      if (options.expectedDigest && digest !== options.expectedDigest) {
        throw new PluginError(
          Code.DataLoss,
          `${formatBuildKey(key)} has digest ${digest}, not the expected ${options.expectedDigest}`,
        );
      }
      await rename(partial, options.to);
      return { path: options.to, digest, size: received };
    } catch (error) {
      await rm(partial, { force: true });
      throw fromServiceError(error);
    }
  }

  async function push(
    key: BuildKey,
    data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options: PushOptions = {},
  ) {
    options.signal?.throwIfAborted();
    let settle!: { resolve: (m: PluginManifest) => void; reject: (e: unknown) => void };
    const done = new Promise<PluginManifest>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const call = clients.admin.pushPlugin(new Metadata(), callOptions(options), (error, response) => {
      if (error) settle.reject(fromServiceError(error));
      else if (!response.manifest)
        settle.reject(new PluginError(Code.Internal, "push answered without a manifest"));
      else settle.resolve(response.manifest);
    });
    done.catch(() => {}); // observed below; a failure before then must not go unhandled
    const cancel = () => call.cancel();
    options.signal?.addEventListener("abort", cancel, { once: true });
    try {
      call.write({
        part: {
          $case: "header",
          value: {
            ...request(key),
            digest: options.digest ?? "",
            size: options.size ?? 0,
            mediaType: options.mediaType ?? "",
            annotations: options.annotations ?? {},
          },
        },
      });
      let sent = 0;
      for await (const chunk of data) {
        for (let at = 0; at < chunk.byteLength; at += PUSH_CHUNK) {
          const part = Buffer.from(
            chunk.buffer,
            chunk.byteOffset + at,
            Math.min(PUSH_CHUNK, chunk.byteLength - at),
          );
          if (!call.write({ part: { $case: "data", value: part } })) {
            await Promise.race([once(call, "drain"), done]);
          }
          sent += part.byteLength;
          options.onProgress?.(sent);
        }
      }
      call.end();
      return await done;
    } catch (error) {
      call.cancel();
      throw fromServiceError(error);
    } finally {
      options.signal?.removeEventListener("abort", cancel);
    }
  }

  return {
    pull,
    push,

    async pushFile(key, path, options = {}) {
      const hash = createHash("sha256");
      let size = 0;
      for await (const chunk of createReadStream(path, { highWaterMark: PUSH_CHUNK })) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).byteLength;
      }
      const digest = `sha256:${hash.digest("hex")}` as Digest;
      return push(key, createReadStream(path, { highWaterMark: PUSH_CHUNK }), { ...options, digest, size });
    },

    async compile(key, options) {
      const response = await unary<{ plugin: string }>(options, (md, o, cb) =>
        clients.compiler.compilePlugin(request(key), md, o, cb),
      );
      return parseReference(response.plugin);
    },

    async list(filter = {}, options) {
      const response = await unary<{ manifests: PluginManifest[] }>(options, (md, o, cb) =>
        clients.admin.listPlugins(
          { pluginName: filter.pluginName ?? "", runtimeVersion: filter.runtimeVersion ?? "" },
          md,
          o,
          cb,
        ),
      );
      return response.manifests;
    },

    inspect(key, options) {
      return unary<PluginManifest>(options, (md, o, cb) =>
        clients.admin.inspectPlugin(request(key), md, o, cb),
      );
    },

    async remove(key, options) {
      const response = await unary<{ removed: boolean }>(options, (md, o, cb) =>
        clients.admin.removePlugin(request(key), md, o, cb),
      );
      return response.removed;
    },

    collectGarbage(options) {
      return unary<{ removedBlobs: number; freedBytes: number }>(options, (md, o, cb) =>
        clients.admin.collectGarbage({}, md, o, cb),
      );
    },

    close() {
      clients.close();
    },
  };
}
