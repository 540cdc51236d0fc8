import { createHash, randomUUID } from "node:crypto";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Code, codeName, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import { plural } from "atomix-plugins-core/model/plural";
import { isMismatch } from "./connection-failure.js";
import { openPluginCache } from "./plugin-cache.js";
import {
  backoffDelay,
  cancelled,
  isRetryable,
  type RetryPolicy,
  resolveRetryPolicy,
  sleep,
} from "./retry-policy.js";
import type { Announced, AttemptOutcome, PullTransport } from "./transport/pull-transport.js";

export interface CallControl {
  /** Abandons the call: it rejects with CANCELLED and, for a pull, leaves `to` untouched. */
  signal?: AbortSignal;
  /**
   * Milliseconds the whole call may take, retries and backoff included, before
   * it fails with DEADLINE_EXCEEDED. No limit by default.
   */
  timeoutMs?: number;
}

export interface RetryControl {
  /** Retries of UNAVAILABLE and broken streams; see RetryPolicy for the defaults. */
  retry?: RetryPolicy;
}

export interface PullProgress {
  /** Bytes of the artifact in hand, whichever attempt brought them. */
  received: number;
  /** The artifact's size, as the server announced it; undefined when it did not. */
  total: number | undefined;
  /** 1-based attempt that is streaming. */
  attempt: number;
}

export interface PullOptions extends CallControl, RetryControl {
  /** Where the verified artifact is written; replaced atomically, never left half-written. */
  to: string;
  /**
   * Refuse the artifact unless it has this digest: FAILED_PRECONDITION
   * before any byte is fetched when the server announces another digest,
   * DATA_LOSS when the bytes received hash to another.
   */
  expectedDigest?: Digest;
  /**
   * The largest artifact accepted: RESOURCE_EXHAUSTED past it (before any
   * byte when the server announces a larger size). 1 GiB by default (the
   * server's own default `--max-artifact-size`), whatever the server
   * announces: a server cannot make a pull fill the disk by announcing a
   * terabyte.
   */
  maxBytes?: number;
  /**
   * A local cache directory (see PluginCache). A pull whose cached copy is
   * still current transfers no artifact bytes; with `expectedDigest` and a
   * cached copy of that digest, it makes no call at all.
   */
  cacheDir?: string;
  /**
   * Bytes the cache's artifacts may take; least recently used ones are
   * evicted after each pull that adds one. Unbounded by default.
   */
  cacheMaxBytes?: number;
  /** Called after every chunk written. */
  onProgress?: (progress: PullProgress) => void;
  /**
   * Last word before the artifact is put in place, whether its bytes came
   * from the network or the cache: called with its verified digest and size,
   * a rejection refuses it (nothing is written to `to` or cached). The
   * client's provenance check (`trustedKeys`) is one.
   */
  accept?: (artifact: { digest: Digest; size: number }) => Promise<void>;
}

/** One request to the server, as it went. */
export interface PullAttempt {
  /** The `x-plugin-offset` it asked for: the bytes already in hand. */
  offset: number;
  /** Artifact bytes it received. */
  bytes: number;
  /** Why it ended early, if it did ("UNAVAILABLE: Connection dropped"). */
  error?: string;
}

/**
 * What vouched for the bytes of a pull, strongest first: signed provenance
 * under a trusted key, the digest the caller pinned, the digest the server
 * announced (catches damage, not a lying server), or nothing: a server that
 * announces no digest, with nothing pinned or trusted.
 */
export type VerifiedBy = "provenance" | "pin" | "server" | "none";

export interface PullResult {
  path: string;
  /** The sha256 of the bytes written, computed as they arrived. */
  digest: Digest;
  size: number;
  verifiedBy: VerifiedBy;
  /** True when the bytes came from the local cache. */
  fromCache: boolean;
  /** Artifact bytes received over the network, all attempts together. */
  transferredBytes: number;
  attempts: PullAttempt[];
}

/**
 * Pulls one artifact to `options.to`: streams into a temporary file next to
 * it, resumes from the bytes in hand after transient failures (the hash state
 * is carried across attempts), verifies size and digest, then renames it
 * into place. On any failure `to` is untouched and the temporary file gone.
 */
export async function pullArtifact(
  transport: PullTransport,
  key: BuildKey,
  options: PullOptions,
): Promise<PullResult> {
  const { signal } = options;
  if (signal?.aborted) throw cancelled(signal);
  if (options.expectedDigest !== undefined && !DIGEST_PATTERN.test(options.expectedDigest)) {
    throw new PluginError(
      Code.InvalidArgument,
      `expectedDigest "${options.expectedDigest}" must be sha256:<64 lowercase hex>`,
    );
  }
  if (options.maxBytes !== undefined && (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 0)) {
    throw new PluginError(
      Code.InvalidArgument,
      `maxBytes must be a whole number of bytes ≥ 0, not ${options.maxBytes}`,
    );
  }
  const policy = resolveRetryPolicy(options.retry);
  const deadline = options.timeoutMs ? Date.now() + options.timeoutMs : undefined;
  const cache = options.cacheDir
    ? await openPluginCache(options.cacheDir, { maxBytes: options.cacheMaxBytes })
    : undefined;
  const partial = join(dirname(options.to), `.${basename(options.to)}.${randomUUID()}.partial`);
  const what = formatBuildKey(key);
  const limit = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const limitName = options.maxBytes === undefined ? "maxBytes, 1 GiB by default" : "maxBytes";

  let file: FileHandle | undefined;
  try {
    // A digest pinned by the caller and already cached needs no server at all.
    if (cache && options.expectedDigest) {
      const entry = await cache.lookupDigest(options.expectedDigest);
      if (entry && (await cache.copyOut(entry, partial))) {
        await options.accept?.(entry);
        await rename(partial, options.to);
        return {
          path: options.to,
          ...entry,
          verifiedBy: "pin",
          fromCache: true,
          transferredBytes: 0,
          attempts: [],
        };
      }
    }

    let cached = cache ? await cache.lookup(key) : undefined;
    file = await openPartial(partial, options.to);
    let hash = createHash("sha256");
    let received = 0;
    /** What the response headers of the artifact being received announced. */
    let announced: Announced | undefined;
    /** What the trailers of the last attempt announced. */
    let trailed: Announced = {};
    const attempts: PullAttempt[] = [];
    let failures = 0;

    /** Drops the bytes in hand. */
    const discard = async () => {
      announced = undefined;
      await (file as FileHandle).truncate(0);
      hash = createHash("sha256");
      received = 0;
    };
    /**
     * After a failure: the next attempt asks for the bytes not yet in hand
     * only from a server that resumes (`x-plugin-offset`, our extension,
     * which every server that announces `x-plugin-digest` honours); from
     * any other the artifact is fetched again from byte 0.
     */
    const resumeOrRestart = async (attempt: PullAttempt) => {
      if (received === 0 || announced?.digest !== undefined) return;
      attempt.error += "; the server does not resume a pull: starting over";
      await discard();
    };

    let restarts = 0;
    /** Drops the bytes in hand: the artifact changed between attempts. */
    const startOver = async () => {
      restarts += 1;
      if (restarts > MAX_RESTARTS) {
        throw new PluginError(
          Code.Aborted,
          `${what} changed ${restarts} times during the pull; try again later`,
        );
      }
      await discard();
    };

    /** Waits before the next attempt, or throws when the policy or the deadline says stop. */
    const backOff = async (failure: PluginError) => {
      failures += 1;
      if (failures >= policy.maxAttempts) {
        const of = announced?.size === undefined ? "" : ` of ${announced.size}`;
        const inHand = received > 0 ? ` with ${received}${of} bytes in hand` : "";
        throw new PluginError(
          failure.code,
          `${what}: gave up after ${plural(failures, "attempt")}${inHand}: ${failure.message}`,
          { cause: failure },
        );
      }
      const delay = backoffDelay(failures, policy);
      if (deadline !== undefined && Date.now() + delay >= deadline) {
        throw new PluginError(
          Code.DeadlineExceeded,
          `${what}: the deadline passed while retrying: ${failure.message}`,
          { cause: failure },
        );
      }
      await sleep(delay, signal);
    };

    for (;;) {
      const attempt: PullAttempt = { offset: received, bytes: 0 };
      attempts.push(attempt);
      const ifNoneMatch = received === 0 ? cached?.digest : undefined;
      trailed = {};
      let outcome: AttemptOutcome;
      try {
        outcome = await transport.pullOnce(key, {
          offset: received,
          ifNoneMatch,
          deadline,
          signal,
          onHeaders(headers) {
            if (announced && (headers.digest !== announced.digest || headers.size !== announced.size)) {
              return false; // the artifact changed between attempts
            }
            if (
              options.expectedDigest &&
              headers.digest !== undefined &&
              headers.digest !== options.expectedDigest
            ) {
              throw new PluginError(
                Code.FailedPrecondition,
                `the server holds ${headers.digest} for ${what}, not the expected ${options.expectedDigest}`,
              );
            }
            if (headers.size !== undefined && headers.size > limit) {
              throw new PluginError(
                Code.ResourceExhausted,
                `the server announced ${headers.size} bytes for ${what}, more than the ${limit} accepted (${limitName})`,
              );
            }
            announced = headers;
            return true;
          },
          onTrailers(trailers) {
            trailed = trailers;
          },
          async onData(chunks) {
            let bytes = 0;
            for (const chunk of chunks) {
              bytes += chunk.byteLength;
              hash.update(chunk);
            }
            const size = announced?.size;
            if (size !== undefined && received + bytes > size) {
              throw new PluginError(
                Code.DataLoss,
                `the server sent more than the ${size} bytes it announced for ${what}`,
              );
            }
            if (received + bytes > limit) {
              throw new PluginError(
                Code.ResourceExhausted,
                `the server sent more than the ${limit} bytes accepted for ${what} (${limitName}), without announcing a size`,
              );
            }
            await writeAll(file as FileHandle, chunks, bytes, received);
            received += bytes;
            attempt.bytes += bytes;
            options.onProgress?.({ received, total: size, attempt: attempts.length });
          },
        });
      } catch (error) {
        const failure = PluginError.from(error);
        attempt.error = `${codeName(failure.code)}: ${failure.message}`;
        if (failure.code === Code.OutOfRange && received > 0) {
          // Our offset never exceeds what the server announced, so the
          // artifact shrank or was replaced: start over.
          await startOver();
          continue;
        }
        if (!isRetryable(failure.code, "pull") || isMismatch(failure)) throw failure;
        await backOff(failure);
        await resumeOrRestart(attempt);
        continue;
      }

      if (outcome === "changed") {
        attempt.error = "the artifact changed on the server; starting over";
        await startOver();
        continue;
      }
      if (outcome === "not-modified") {
        if (!cache || !cached || cached.digest !== announced?.digest) {
          throw new PluginError(Code.DataLoss, `the server answered "not modified" for ${what} unasked`);
        }
        await file.close();
        file = undefined;
        await rm(partial, { force: true });
        if (await cache.copyOut(cached, partial)) {
          await options.accept?.(cached);
          await rename(partial, options.to);
          return {
            path: options.to,
            ...cached,
            verifiedBy: options.expectedDigest ? "pin" : "server",
            fromCache: true,
            transferredBytes: 0,
            attempts,
          };
        }
        // The cached copy was damaged (and is now evicted): fetch the bytes.
        attempt.error = "the cached copy no longer matches its digest; fetching it";
        cached = undefined;
        file = await openPartial(partial, options.to);
        continue;
      }
      const size = announced?.size;
      if (size !== undefined && received < size) {
        // The stream ended cleanly but short: a proxy or the network cut it.
        attempt.error = `the stream ended after ${received} of ${size} bytes`;
        await backOff(new PluginError(Code.Unavailable, attempt.error));
        await resumeOrRestart(attempt);
        continue;
      }
      if (trailed.size !== undefined && trailed.size !== received) {
        throw new PluginError(
          Code.DataLoss,
          `${what}: received ${received} bytes, but the server's trailers announced ${trailed.size}`,
        );
      }

      const artifact = { digest: `sha256:${hash.digest("hex")}` as Digest, size: received };
      const verifiedBy = verify(artifact, { announced, trailed, expected: options.expectedDigest, what });
      await file.sync();
      await file.close();
      file = undefined;
      await options.accept?.(artifact);
      await cache?.add(key, partial, artifact);
      await rename(partial, options.to);
      const transferredBytes = attempts.reduce((sum, a) => sum + a.bytes, 0);
      return { path: options.to, ...artifact, verifiedBy, fromCache: false, transferredBytes, attempts };
    }
  } catch (error) {
    await file?.close().catch(() => {});
    await rm(partial, { force: true });
    throw PluginError.from(error);
  }
}

/** Times a pull starts over because the artifact changed, before it gives up. */
const MAX_RESTARTS = 3;

/** The bound of a pull unless the caller gives `maxBytes`. */
const DEFAULT_MAX_BYTES = 1024 ** 3;

/**
 * Holds the digest of the bytes received against every digest there is for
 * them: the server's (headers, or trailers at the end) and the caller's
 * pin. Bytes that contradict one are DATA_LOSS; a server whose own digest
 * fits its bytes but not the pin holds another artifact (FAILED_PRECONDITION).
 */
function verify(
  { digest, size }: { digest: Digest; size: number },
  claims: {
    announced: Announced | undefined;
    trailed: Announced;
    expected: Digest | undefined;
    what: string;
  },
): VerifiedBy {
  const { what, expected } = claims;
  const serverDigests = [claims.announced?.digest, claims.trailed.digest].filter(
    (claim): claim is Digest => claim !== undefined,
  );
  for (const claim of serverDigests) {
    if (claim !== digest) {
      throw new PluginError(
        Code.DataLoss,
        `${what}: received ${size} bytes hashing to ${digest}, but the server announced ${claim}; the server's stored copy is damaged, or the transfer was`,
      );
    }
  }
  if (expected !== undefined && digest !== expected) {
    if (serverDigests.length > 0) {
      throw new PluginError(
        Code.FailedPrecondition,
        `the server holds ${digest} for ${what}, not the expected ${expected}`,
      );
    }
    throw new PluginError(
      Code.DataLoss,
      `${what}: received ${size} bytes hashing to ${digest}, not the expected ${expected}; nothing was written`,
    );
  }
  if (expected !== undefined) return "pin";
  return serverDigests.length > 0 ? "server" : "none";
}

async function openPartial(partial: string, to: string): Promise<FileHandle> {
  try {
    return await open(partial, "w", 0o644);
  } catch (error) {
    throw PluginError.from(error, `cannot write next to ${to}`);
  }
}

/** Writes `chunks` (`bytes` in all) at `position`, one system call for all of them when the disk allows. */
async function writeAll(file: FileHandle, chunks: Buffer[], bytes: number, position: number): Promise<void> {
  let { bytesWritten } = await file.writev(chunks, position);
  if (bytesWritten === bytes) return;
  // A short write: finish chunk by chunk from where it stopped.
  let at = 0;
  for (const chunk of chunks) {
    const end = at + chunk.byteLength;
    let done = Math.max(0, bytesWritten - at);
    while (done < chunk.byteLength) {
      const result = await file.write(chunk, done, chunk.byteLength - done, position + at + done);
      done += result.bytesWritten;
      bytesWritten += result.bytesWritten;
    }
    at = end;
  }
}
