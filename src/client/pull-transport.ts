import { Code, PluginError } from "../errors/plugin-error.js";
import { DIGEST_PATTERN, type Digest } from "../model/artifact.js";
import type { BuildKey } from "../model/build-key.js";
import { PULL_METADATA } from "../protocol/metadata.js";
import type { CacheEntry } from "./plugin-cache.js";

/**
 * The PullPlugin protocol as the client speaks it, apart from how the bytes
 * travel (socket-pull-transport.ts): the request's metadata, the announced
 * artifact, and how a call that ended well ended. pull-artifact.ts drives
 * attempts through the PullTransport interface; what to retry is decided
 * from the code alone (retry-policy.ts).
 */

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
 * Checks the response headers every pull starts with. Headers that announce
 * nothing (no digest, no size) come before an error status, which says why:
 * undefined then.
 */
export function announcedArtifact(digest: string, size: string): CacheEntry | undefined {
  if (digest === "" && size === "") return undefined;
  const bytes = Number(size);
  if (!DIGEST_PATTERN.test(digest) || size === "" || !Number.isSafeInteger(bytes) || bytes < 0) {
    throw new PluginError(
      Code.DataLoss,
      `the server announced digest "${digest}" and size "${size}", which are not valid`,
    );
  }
  return { digest: digest as Digest, size: bytes };
}

/** A call that ended with OK: its trailers say whether the cached copy is current. */
export function attemptOutcome(notModified: string | undefined): AttemptOutcome {
  return notModified === "true" ? "not-modified" : "complete";
}
