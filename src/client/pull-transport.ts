import { type CallOptions, Metadata, type StatusObject } from "@grpc/grpc-js";
import { Code, PluginError } from "../errors/plugin-error.js";
import type { PluginRegistryClient, PullPluginResponse } from "../gen/atomix/runtime/v1/plugin.js";
import { DIGEST_PATTERN, type Digest } from "../model/artifact.js";
import type { BuildKey } from "../model/build-key.js";
import { PULL_METADATA } from "../protocol/metadata.js";
import type { CacheEntry } from "./plugin-cache.js";
import { cancelled } from "./retry-policy.js";

/** How one PullPlugin call ended, when it ended well. */
export type AttemptOutcome = "complete" | "not-modified" | "changed";

export interface AttemptOptions {
  /** `x-plugin-offset`: the bytes already in hand. */
  offset: number;
  /** `x-plugin-if-none-match`: the digest of a cached copy. */
  ifNoneMatch: Digest | undefined;
  /** Epoch milliseconds the call must end by. */
  deadline: number | undefined;
  signal: AbortSignal | undefined;
  /** Sees the announced digest and size; false abandons the attempt ("changed"). */
  onHeaders(headers: CacheEntry): boolean;
  /**
   * Takes the next artifact bytes, in order. The stream waits while the
   * promise is pending, so a slow disk slows the server instead of
   * filling memory.
   */
  onData(chunks: Buffer[]): Promise<void>;
}

/**
 * One PullPlugin call, however it travels. Resolves when the stream ends with
 * OK; rejects with a PluginError carrying the call's gRPC code otherwise.
 */
export interface PullTransport {
  pullOnce(key: BuildKey, options: AttemptOptions): Promise<AttemptOutcome>;
  close(): void;
}

/** Checks the response headers every pull starts with. */
export function announcedArtifact(digest: string, size: string): CacheEntry {
  const bytes = Number(size);
  if (!DIGEST_PATTERN.test(digest) || size === "" || !Number.isSafeInteger(bytes) || bytes < 0) {
    throw new PluginError(
      Code.DataLoss,
      `the server announced digest "${digest}" and size "${size}", which are not valid`,
    );
  }
  return { digest: digest as Digest, size: bytes };
}

/**
 * PullPlugin over the generated grpc-js client: for targets and credentials
 * only grpc-js understands (name resolvers, proxies, credentials objects).
 */
export function grpcJsPullTransport(registry: PluginRegistryClient): PullTransport {
  return {
    pullOnce: (key, options) => pullWithGrpcJs(registry, key, options),
    close() {},
  };
}

async function pullWithGrpcJs(
  registry: PluginRegistryClient,
  key: BuildKey,
  options: AttemptOptions,
): Promise<AttemptOutcome> {
  const metadata = new Metadata();
  if (options.offset > 0) metadata.set(PULL_METADATA.offset, String(options.offset));
  if (options.ifNoneMatch) metadata.set(PULL_METADATA.ifNoneMatch, options.ifNoneMatch);
  const callOptions: Partial<CallOptions> = options.deadline ? { deadline: options.deadline } : {};
  const call = registry.pullPlugin(
    { runtime: { ...key.runtime }, plugin: { ...key.plugin } },
    metadata,
    callOptions,
  );
  const cancel = () => call.cancel();
  options.signal?.addEventListener("abort", cancel, { once: true });
  let headersError: unknown;
  let changed = false;
  call.once("metadata", (headers: Metadata) => {
    try {
      const announced = announcedArtifact(
        String(headers.get(PULL_METADATA.digest)[0] ?? ""),
        String(headers.get(PULL_METADATA.size)[0] ?? ""),
      );
      if (!options.onHeaders(announced)) {
        changed = true;
        call.cancel();
      }
    } catch (error) {
      headersError = error;
      call.cancel();
    }
  });
  let trailers: Metadata | undefined;
  call.on("status", (status: StatusObject) => {
    trailers = status.metadata;
  });
  try {
    for await (const message of call as AsyncIterable<PullPluginResponse>) {
      if (headersError || changed) break;
      await options.onData([message.data as Buffer]);
    }
  } catch (error) {
    if (!headersError && !changed) throw error;
  } finally {
    options.signal?.removeEventListener("abort", cancel);
    call.cancel(); // a no-op once the call has ended; frees it when we broke out early
  }
  if (headersError) throw headersError;
  if (changed) return "changed";
  if (options.signal?.aborted) throw cancelled(options.signal);
  if (trailers?.get(PULL_METADATA.notModified)[0] === "true") return "not-modified";
  return "complete";
}
