import { createHash, randomUUID } from "node:crypto";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Code, codeName, PluginError } from "../errors/plugin-error.js";
import { DIGEST_PATTERN, type Digest } from "../model/artifact.js";
import { type BuildKey, formatBuildKey } from "../model/build-key.js";
import { PULL_METADATA } from "../protocol/metadata.js";
import { type CacheEntry, openPluginCache } from "./plugin-cache.js";
import type { AttemptOutcome, PullTransport } from "./pull-transport.js";
import {
  backoffDelay,
  cancelled,
  isRetryable,
  type RetryPolicy,
  resolveRetryPolicy,
  sleep,
} from "./retry-policy.js";

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
  /** The artifact's size, as the server announced it. */
  total: number;
  /** 1-based attempt that is streaming. */
  attempt: number;
}

export interface PullOptions extends CallControl, RetryControl {
  /** Where the verified artifact is written; replaced atomically, never left half-written. */
  to: string;
  /** Refuse the artifact (FAILED_PRECONDITION, before any byte is fetched) unless it has this digest. */
  expectedDigest?: Digest;
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

export interface PullResult {
  path: string;
  digest: Digest;
  size: number;
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
  const policy = resolveRetryPolicy(options.retry);
  const deadline = options.timeoutMs ? Date.now() + options.timeoutMs : undefined;
  const cache = options.cacheDir
    ? await openPluginCache(options.cacheDir, { maxBytes: options.cacheMaxBytes })
    : undefined;
  const partial = join(dirname(options.to), `.${basename(options.to)}.${randomUUID()}.partial`);
  const what = formatBuildKey(key);

  let file: FileHandle | undefined;
  try {
    // A digest pinned by the caller and already cached needs no server at all.
    if (cache && options.expectedDigest) {
      const entry = await cache.lookupDigest(options.expectedDigest);
      if (entry && (await cache.copyOut(entry, partial))) {
        await options.accept?.(entry);
        await rename(partial, options.to);
        return { path: options.to, ...entry, fromCache: true, transferredBytes: 0, attempts: [] };
      }
    }

    let cached = cache ? await cache.lookup(key) : undefined;
    file = await openPartial(partial, options.to);
    let hash = createHash("sha256");
    let received = 0;
    let announced: CacheEntry | undefined;
    const attempts: PullAttempt[] = [];
    let failures = 0;

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
      announced = undefined;
      await (file as FileHandle).truncate(0);
      hash = createHash("sha256");
      received = 0;
    };

    /** Waits before the next attempt, or throws when the policy or the deadline says stop. */
    const backOff = async (failure: PluginError) => {
      failures += 1;
      if (failures >= policy.maxAttempts) {
        const inHand = received > 0 ? ` with ${received} of ${announced?.size} bytes in hand` : "";
        throw new PluginError(
          failure.code,
          `${what}: gave up after ${failures} attempts${inHand}: ${failure.message}`,
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
            if (options.expectedDigest && headers.digest !== options.expectedDigest) {
              throw new PluginError(
                Code.FailedPrecondition,
                `the server holds ${headers.digest} for ${what}, not the expected ${options.expectedDigest}`,
              );
            }
            announced = headers;
            return true;
          },
          async onData(chunks) {
            const size = announced?.size ?? 0;
            let bytes = 0;
            for (const chunk of chunks) {
              bytes += chunk.byteLength;
              hash.update(chunk);
            }
            if (received + bytes > size) {
              throw new PluginError(
                Code.DataLoss,
                `the server sent more than the ${size} bytes it announced for ${what}`,
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
        if (!isRetryable(failure.code, "pull")) throw failure;
        await backOff(failure);
        continue;
      }

      if (outcome === "changed") {
        attempt.error = "the artifact changed on the server; starting over";
        await startOver();
        continue;
      }
      if (!announced) {
        throw new PluginError(
          Code.DataLoss,
          `the server sent no ${PULL_METADATA.digest} metadata for ${what}`,
        );
      }
      if (outcome === "not-modified") {
        if (!cache || !cached || cached.digest !== announced.digest) {
          throw new PluginError(Code.DataLoss, `the server answered "not modified" for ${what} unasked`);
        }
        await file.close();
        file = undefined;
        await rm(partial, { force: true });
        if (await cache.copyOut(cached, partial)) {
          await options.accept?.(cached);
          await rename(partial, options.to);
          return { path: options.to, ...cached, fromCache: true, transferredBytes: 0, attempts };
        }
        // The cached copy was damaged (and is now evicted): fetch the bytes.
        attempt.error = "the cached copy no longer matches its digest; fetching it";
        cached = undefined;
        file = await openPartial(partial, options.to);
        continue;
      }
      if (received < announced.size) {
        // The stream ended cleanly but short: a proxy or the network cut it.
        attempt.error = `the stream ended after ${received} of ${announced.size} bytes`;
        await backOff(new PluginError(Code.Unavailable, attempt.error));
        continue;
      }

      const digest = `sha256:${hash.digest("hex")}` as Digest;
      if (digest !== announced.digest) {
        throw new PluginError(
          Code.DataLoss,
          `${what}: received ${received} bytes hashing to ${digest}, but the server announced ${announced.digest}; the server's stored copy is damaged, or the transfer was`,
        );
      }
      await file.sync();
      await file.close();
      file = undefined;
      await options.accept?.(announced);
      await cache?.add(key, partial, announced);
      await rename(partial, options.to);
      const transferredBytes = attempts.reduce((sum, a) => sum + a.bytes, 0);
      return { path: options.to, ...announced, fromCache: false, transferredBytes, attempts };
    }
  } catch (error) {
    await file?.close().catch(() => {});
    await rm(partial, { force: true });
    throw PluginError.from(error);
  }
}

/** Times a pull starts over because the artifact changed, before it gives up. */
const MAX_RESTARTS = 3;

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
