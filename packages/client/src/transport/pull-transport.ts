import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import { DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { PULL_METADATA } from "atomix-plugins-core/protocol/metadata";

/**
 * The PullPlugin protocol as the client speaks it, apart from how the bytes
 * travel (socket-pull-transport.ts): the request's metadata, the announced
 * artifact, and how a call that ended well ended. pull-artifact.ts drives
 * attempts through the PullTransport interface; what to retry is decided
 * from the code alone (retry-policy.ts).
 */

/** How one PullPlugin call ended, when it ended well. */
export type AttemptOutcome = "complete" | "not-modified" | "changed";

/**
 * What a server said of the artifact it streams: our extension metadata,
 * which `atomix.runtime.v1` does not promise. A server that is not
 * atomix-plugins may announce nothing, a size alone, or its digest only in
 * the trailers.
 */
export interface Announced {
  digest?: Digest;
  size?: number;
}

export interface AttemptOptions {
  /** `x-plugin-offset`: the bytes already in hand. */
  offset: number;
  /** `x-plugin-if-none-match`: the digest of a cached copy. */
  ifNoneMatch: Digest | undefined;
  /** Epoch milliseconds the call must end by. */
  deadline: number | undefined;
  signal: AbortSignal | undefined;
  /**
   * Sees the response headers' digest and size, either or both absent when
   * the server does not announce them; false abandons the attempt
   * ("changed"). Not called for a trailers-only answer (an error).
   */
  onHeaders(headers: Announced): boolean;
  /** Sees the digest and size the trailers of a call that ended with OK announce, if any. */
  onTrailers?(trailers: Announced): void;
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
 * A transport keeps its connection to the server from one call to the next
 * where it can, so a retry or the next pull pays no new handshake.
 */
export interface PullTransport {
  pullOnce(key: BuildKey, options: AttemptOptions): Promise<AttemptOutcome>;
  /** Closes the connections it keeps. */
  close(): void;
}

export const PULL_PATH = "/atomix.runtime.v1.PluginRegistry/PullPlugin";

/** The request metadata of one attempt: where to resume, and the cached copy's digest. */
export function pullRequestMetadata(
  options: Pick<AttemptOptions, "offset" | "ifNoneMatch">,
): [string, string][] {
  const metadata: [string, string][] = [];
  if (options.offset > 0) metadata.push([PULL_METADATA.offset, String(options.offset)]);
  if (options.ifNoneMatch) metadata.push([PULL_METADATA.ifNoneMatch, options.ifNoneMatch]);
  return metadata;
}

/**
 * Reads the digest and size a pull's headers or trailers announce. Each is
 * optional (the API does not promise them); one that is present must be
 * well formed: a server that announces a digest or size it cannot state
 * cannot be checked against it (DATA_LOSS).
 */
export function announcedArtifact(digest: string | undefined, size: string | undefined): Announced {
  const announced: Announced = {};
  if (digest !== undefined) {
    if (!DIGEST_PATTERN.test(digest)) {
      throw new PluginError(
        Code.DataLoss,
        `the server announced digest ${quoted(digest)}, which is not sha256:<64 lowercase hex>`,
      );
    }
    announced.digest = digest as Digest;
  }
  if (size !== undefined) {
    const bytes = Number(size);
    if (!/^\d{1,16}$/.test(size) || !Number.isSafeInteger(bytes)) {
      throw new PluginError(
        Code.DataLoss,
        `the server announced size ${quoted(size)}, which is not a byte count`,
      );
    }
    announced.size = bytes;
  }
  return announced;
}

/** A call that ended with OK: its trailers say whether the cached copy is current. */
export function attemptOutcome(notModified: string | undefined): AttemptOutcome {
  return notModified === "true" ? "not-modified" : "complete";
}
