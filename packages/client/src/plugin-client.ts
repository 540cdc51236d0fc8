import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Code, PluginError, quoted, UntrustedArtifactError } from "atomix-plugins-core/errors/plugin-error";
import {
  type CacheReport,
  type Manifest,
  PluginAdminDefinition,
  type PushPluginRequest,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { PluginCompilerDefinition } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import { DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import {
  type BuildKey,
  buildKeyText,
  formatBuildKey,
  parseBuildKey,
} from "atomix-plugins-core/model/build-key";
import type { ProvenanceStatement } from "atomix-plugins-core/model/provenance";
import { type PluginReference, parseReference } from "atomix-plugins-core/model/reference";
import type { ConnectionOptions } from "./connection-options.js";
import { type TrustedKeySet, trustedKeySet, verifyProvenance } from "./provenance-check.js";
import {
  type CallControl,
  type PullOptions,
  type PullResult,
  pullArtifact,
  type RetryControl,
} from "./pull-artifact.js";
import { backoffDelay, cancelled, isRetryable, resolveRetryPolicy, sleep } from "./retry-policy.js";
import { serverTarget } from "./server-target.js";
import { type CallSettings, callSettings } from "./transport/grpc-channel.js";
import { transport } from "./transport/transport.js";

export interface PushOptions extends CallControl {
  mediaType?: string;
  annotations?: Record<string, string>;
  /**
   * Digest the server must find. Computed when pushing a file or an array of
   * chunks; a stream of chunks needs `digest` or `size`, so that the server
   * can tell a push cut short from a whole one.
   */
  digest?: Digest;
  /** Size in bytes the server must find; see `digest`. */
  size?: number;
  /** Called after every chunk handed to the transport, with the bytes sent so far. */
  onProgress?: (sent: number) => void;
}

export interface ProvenanceAnswer {
  digest: Digest;
  mediaType: string;
  /** The Sigstore bundle, JSON. */
  bundle: Buffer;
  /** The verified statement, when the client has trusted keys. */
  statement?: ProvenanceStatement;
}

/** A stored artifact's manifest as the admin API returns it. */
export type PluginManifest = Manifest;

export interface ListPageRequest {
  pluginName?: string | undefined;
  runtimeVersion?: string | undefined;
  /** 0 or absent: the server's maximum, 1000. */
  pageSize?: number | undefined;
  /** The previous page's `nextPageToken`. */
  pageToken?: string | undefined;
}

export interface ManifestPage {
  manifests: PluginManifest[];
  /** Set when more manifests may follow. */
  nextPageToken: string | undefined;
}

/**
 * What CompilePlugin answered. The API's answer is a string the client does
 * not interpret, unless it is this project's `atomix-plugin://` reference for
 * the key asked for: then it names the artifact's digest too, which a pull
 * can pin (`expectedDigest`). Without one, pull by `key`.
 */
export interface CompileResult {
  /** The server's answer, as it came. */
  plugin: string;
  /** The key compiled. */
  key: BuildKey;
  /** The digest the answer pins, when it is a reference. */
  digest?: Digest;
  /** The answer parsed, when it is a reference to `key`. */
  reference?: PluginReference;
}

export interface GarbageReport {
  removedBlobs: number;
  freedBytes: number;
  /**
   * Each cache the server keeps on disk between builds (`go-build`,
   * `go-modules`, `build-records`): what it holds now, its bound (`maxBytes`
   * or `maxEntries`, the other 0), and what was reclaimed since the last gc.
   */
  caches: CacheReport[];
}

/** One cache the server keeps between builds, as `gc` reports it: the admin API's message as it is. */
export type { CacheReport };

/**
 * A client of one atomix-plugins server. Every method takes `signal` and
 * `timeoutMs`, and rejects with a `PluginError` carrying the gRPC code and
 * the server's message. Keys are validated before any call
 * (INVALID_ARGUMENT). Call `close()` when done.
 */
export interface PluginClient {
  /**
   * Pulls the artifact of `key` to `options.to`, verified, resumable and
   * cached; see PullOptions and PullResult.
   */
  pull(key: BuildKey, options: PullOptions): Promise<PullResult>;
  /**
   * Builds (or finds) the artifact of `key` and returns the server's answer,
   * with the reference it holds when it is one (see CompileResult).
   * Retries UNAVAILABLE: compiling a key twice gives the same artifact.
   */
  compile(key: BuildKey, options?: CallControl & RetryControl): Promise<CompileResult>;
  /** Publishes a prebuilt artifact for `key`, replacing what was stored. */
  push(
    key: BuildKey,
    data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options?: PushOptions,
  ): Promise<PluginManifest>;
  /** Publishes a file; its digest and size are computed first and checked by the server. */
  pushFile(
    key: BuildKey,
    path: string,
    options?: Omit<PushOptions, "digest" | "size">,
  ): Promise<PluginManifest>;
  /**
   * Every stored manifest matching `filter`, following the server's pages;
   * all held in memory: for large stores use `listPage` or `listEach`.
   */
  list(
    filter?: { pluginName?: string; runtimeVersion?: string },
    options?: CallControl,
  ): Promise<PluginManifest[]>;
  /**
   * One page of stored manifests, in the store's order; `nextPageToken` is
   * set when more may follow (pass it as `pageToken`). The server sends at
   * most 1000 per page whatever `pageSize` asks.
   */
  listPage(request: ListPageRequest, options?: CallControl): Promise<ManifestPage>;
  /** The stored manifests matching `filter`, page by page as the loop consumes them. */
  listEach(
    filter?: { pluginName?: string; runtimeVersion?: string },
    options?: CallControl,
  ): AsyncIterable<PluginManifest>;
  /** The manifest stored for `key`; NOT_FOUND if none. */
  inspect(key: BuildKey, options?: CallControl): Promise<PluginManifest>;
  /** Forgets `key` (its blob stays until collectGarbage); false if it was not stored. */
  remove(key: BuildKey, options?: CallControl): Promise<boolean>;
  /** Removes the blobs no key refers to. */
  collectGarbage(options?: CallControl): Promise<GarbageReport>;
  /**
   * The signed provenance of the artifact stored for `key` (a Sigstore
   * bundle) and the digest it is for; NOT_FOUND if none. Checked against
   * `trustedKeys` when the client has them.
   */
  provenance(key: BuildKey, options?: CallControl): Promise<ProvenanceAnswer>;
  close(): void;
}

const PUSH_CHUNK = 256 * 1024;

/**
 * The digest and size a push announces: the caller's, or computed from an
 * array of chunks in memory. A stream with neither is refused here, as the
 * server would refuse it.
 */
function announce(
  data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: Pick<PushOptions, "digest" | "size">,
): { digest?: Digest; size?: number } {
  if (options.digest !== undefined || options.size !== undefined) {
    return {
      ...(options.digest ? { digest: options.digest } : {}),
      ...(options.size ? { size: options.size } : {}),
    };
  }
  if (!Array.isArray(data)) {
    throw new PluginError(
      Code.InvalidArgument,
      "push of a stream needs options.size or options.digest, so that the server stores it only whole",
    );
  }
  const hash = createHash("sha256");
  let size = 0;
  for (const chunk of data as Uint8Array[]) {
    hash.update(chunk);
    size += chunk.byteLength;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

/** The answer of CompilePlugin for `key`: a reference when it parses as one to `key`, else opaque. */
function compileResult(key: BuildKey, plugin: string): CompileResult {
  let reference: PluginReference | undefined;
  try {
    reference = parseReference(plugin);
  } catch {
    return { plugin, key };
  }
  // A reference to another key pins nothing about this one.
  if (buildKeyText(reference.key) !== buildKeyText(key)) return { plugin, key };
  return { plugin, key, digest: reference.digest, reference };
}

/** Connects (lazily: the first call dials) to the server at `connection.address`. */
export function createPluginClient(connection: ConnectionOptions): PluginClient {
  const target = serverTarget(connection.address, connection.tls, connection.proxy);
  const wire = transport(target, { token: connection.token });
  const trusted = connection.trustedKeys?.length ? trustedKeySet(connection.trustedKeys) : undefined;

  /** A unary call with the caller's deadline and, when `retry` is given, retries. */
  async function unary<Response>(
    control: (CallControl & RetryControl) | undefined,
    start: (settings: CallSettings) => Promise<Response>,
    retry = false,
  ): Promise<Response> {
    const deadline = control?.timeoutMs ? Date.now() + control.timeoutMs : undefined;
    const policy = resolveRetryPolicy(retry ? control?.retry : { maxAttempts: 1 });
    for (let attempt = 1; ; attempt++) {
      try {
        return await start({ signal: control?.signal, deadline });
      } catch (error) {
        const failure = PluginError.from(error);
        if (!isRetryable(failure.code) || attempt >= policy.maxAttempts) throw failure;
        const delay = backoffDelay(attempt, policy);
        if (deadline !== undefined && Date.now() + delay >= deadline) {
          throw new PluginError(
            Code.DeadlineExceeded,
            `the deadline passed while retrying: ${failure.message}`,
            { cause: failure },
          );
        }
        await sleep(delay, control?.signal);
      }
    }
  }

  const request = (key: BuildKey) => {
    const valid = parseBuildKey(key);
    return { runtime: { ...valid.runtime }, plugin: { ...valid.plugin } };
  };

  type Provenance = Awaited<ReturnType<typeof fetchProvenance>>;

  async function fetchProvenance(key: BuildKey, options: CallControl | undefined) {
    const body = request(key);
    const answer = await unary(options, (settings) =>
      wire.unary(PluginAdminDefinition, PluginAdminDefinition.methods.getProvenance, body, {
        ...settings,
        idempotent: true,
      }),
    );
    if (!DIGEST_PATTERN.test(answer.digest)) {
      throw new PluginError(
        Code.DataLoss,
        `the server answered a provenance for digest ${quoted(answer.digest)}`,
      );
    }
    return {
      digest: answer.digest as Digest,
      mediaType: answer.mediaType,
      bundle: Buffer.from(answer.bundle),
    };
  }

  /** The provenance check of a pull: the signed statement must name exactly these bytes and this key. */
  async function checkProvenance(
    key: BuildKey,
    digest: Digest,
    options: CallControl,
    prefetched: Provenance | undefined,
  ): Promise<void> {
    let answer: Provenance;
    try {
      answer = prefetched?.digest === digest ? prefetched : await fetchProvenance(key, options);
    } catch (error) {
      const failure = PluginError.from(error);
      // UNIMPLEMENTED: a server of atomix.runtime.v1 alone has no admin API, so no provenance.
      if (failure.code !== Code.NotFound && failure.code !== Code.Unimplemented) throw failure;
      // The server's own message repeats the key and digest: it stays the cause, out of the line.
      const why =
        failure.code === Code.NotFound
          ? "the server stored it unsigned: built without --signing-key, or pushed without an admin token"
          : "the server offers no provenance";
      throw new UntrustedArtifactError(
        `${formatBuildKey(key)} carries no signed provenance (${why}); pull it from a server that signs (serve --signing-key), or without --trust-key to take it unverified`,
        { cause: failure },
      );
    }
    if (answer.digest !== digest) {
      throw new PluginError(
        Code.Aborted,
        `${formatBuildKey(key)} was replaced on the server during the pull (${digest}, now ${answer.digest}); pull again`,
      );
    }
    verifyProvenance(answer.bundle, { key, digest }, trusted as TrustedKeySet);
  }

  async function push(
    key: BuildKey,
    data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options: PushOptions = {},
  ) {
    if (options.signal?.aborted) throw cancelled(options.signal);
    const header = request(key);
    const announced = announce(data, options);
    async function* requests(): AsyncGenerator<PushPluginRequest> {
      yield {
        part: {
          $case: "header",
          value: {
            ...header,
            digest: announced.digest ?? "",
            size: announced.size ?? 0,
            mediaType: options.mediaType ?? "",
            annotations: options.annotations ?? {},
          },
        },
      };
      let sent = 0;
      for await (const chunk of data) {
        for (let at = 0; at < chunk.byteLength; at += PUSH_CHUNK) {
          const part = Buffer.from(
            chunk.buffer,
            chunk.byteOffset + at,
            Math.min(PUSH_CHUNK, chunk.byteLength - at),
          );
          yield { part: { $case: "data", value: part } };
          sent += part.byteLength;
          options.onProgress?.(sent);
        }
      }
    }
    const response = await wire.clientStream(
      PluginAdminDefinition,
      PluginAdminDefinition.methods.pushPlugin,
      requests(),
      callSettings(options),
    );
    if (!response.manifest) throw new PluginError(Code.Internal, "push answered without a manifest");
    return response.manifest;
  }

  return {
    async pull(key, options) {
      const valid = parseBuildKey(key);
      if (!trusted) return pullArtifact(wire, valid, options);
      const before = options.accept;
      // Asked for while the bytes stream, so that the check adds no round
      // trip after them; asked again when it does not fit what arrived (the
      // key was built or replaced meanwhile).
      let early: Promise<Provenance> | undefined = fetchProvenance(valid, options);
      early.catch(() => {});
      const result = await pullArtifact(wire, valid, {
        ...options,
        accept: async (artifact) => {
          await before?.(artifact);
          const prefetched = await early?.catch(() => undefined);
          early = undefined;
          await checkProvenance(valid, artifact.digest, options, prefetched);
        },
      });
      return { ...result, verifiedBy: "provenance" };
    },

    push,

    async pushFile(key, path, options = {}) {
      parseBuildKey(key);
      const hash = createHash("sha256");
      try {
        await stat(path);
      } catch (error) {
        throw PluginError.from(error, `reading ${path}`);
      }
      let size = 0;
      for await (const chunk of createReadStream(path, {
        highWaterMark: PUSH_CHUNK,
        signal: options.signal,
      })) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).byteLength;
      }
      const digest = `sha256:${hash.digest("hex")}` as Digest;
      return push(key, createReadStream(path, { highWaterMark: PUSH_CHUNK }), { ...options, digest, size });
    },

    async compile(key, options) {
      const body = request(key);
      const response = await unary(
        options,
        (settings) =>
          wire.unary(
            PluginCompilerDefinition,
            PluginCompilerDefinition.methods.compilePlugin,
            body,
            settings,
          ),
        true,
      );
      return compileResult(parseBuildKey(key), response.plugin);
    },

    async listPage(request, options) {
      const body = {
        pluginName: request.pluginName ?? "",
        runtimeVersion: request.runtimeVersion ?? "",
        pageSize: request.pageSize ?? 0,
        pageToken: request.pageToken ?? "",
      };
      const response = await unary(options, (settings) =>
        wire.unary(PluginAdminDefinition, PluginAdminDefinition.methods.listPlugins, body, {
          ...settings,
          idempotent: true,
        }),
      );
      return { manifests: response.manifests, nextPageToken: response.nextPageToken || undefined };
    },

    async *listEach(filter = {}, options) {
      let pageToken: string | undefined;
      do {
        const page = await this.listPage({ ...filter, pageToken }, options);
        yield* page.manifests;
        pageToken = page.nextPageToken;
      } while (pageToken);
    },

    async list(filter = {}, options) {
      const all: PluginManifest[] = [];
      for await (const manifest of this.listEach(filter, options)) all.push(manifest);
      return all;
    },

    async inspect(key, options) {
      const body = request(key);
      return unary(options, (settings) =>
        wire.unary(PluginAdminDefinition, PluginAdminDefinition.methods.inspectPlugin, body, {
          ...settings,
          idempotent: true,
        }),
      );
    },

    async remove(key, options) {
      const body = request(key);
      const response = await unary(options, (settings) =>
        wire.unary(PluginAdminDefinition, PluginAdminDefinition.methods.removePlugin, body, settings),
      );
      return response.removed;
    },

    async provenance(key, options) {
      const valid = parseBuildKey(key);
      const answer = await fetchProvenance(valid, options);
      if (!trusted) return answer;
      return {
        ...answer,
        statement: verifyProvenance(answer.bundle, { key: valid, digest: answer.digest }, trusted),
      };
    },

    async collectGarbage(options) {
      const report = await unary(options, (settings) =>
        wire.unary(PluginAdminDefinition, PluginAdminDefinition.methods.collectGarbage, {}, settings),
      );
      return {
        removedBlobs: Number(report.removedBlobs),
        freedBytes: Number(report.freedBytes),
        caches: report.caches,
      };
    },

    close() {
      wire.close();
    },
  };
}

export type { CallControl, ConnectionOptions, PullOptions, PullResult, RetryControl };
