import type { ConnectionOptions } from "atomix-plugins-client/connection-options";
import { createPluginClient, type PluginManifest } from "atomix-plugins-client/plugin-client";
import { serverTarget } from "atomix-plugins-client/server-target";
import { socketPullTransport } from "atomix-plugins-client/transport/socket-pull-transport";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { type ArtifactManifest, DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import {
  type BuildKey,
  buildKeyText,
  formatBuildKey,
  parseBuildKey,
} from "atomix-plugins-core/model/build-key";
import type { ArtifactStore, ReadOptions } from "./artifact-store.js";
import { outOfRange } from "./store-checks.js";

export interface UpstreamServerStoreOptions {
  /** The upstream server, as the client library takes it (address, TLS, token, trusted keys, proxy). */
  connection: ConnectionOptions;
  /** Largest artifact taken from upstream: a bigger announced size is refused before a byte is read. */
  maxArtifactBytes: number;
  /**
   * How long a key lookup (or a provenance check) may wait for the upstream's
   * answer before it fails with UNAVAILABLE, as from an upstream that is
   * down (a replica then serves what it holds as last seen). Default 30 s.
   */
  lookupTimeoutMs?: number | undefined;
}

/** What a store that is another server's mirror says to writes. */
function mirrorOnly(what: string, where: string): PluginError {
  return new PluginError(
    Code.FailedPrecondition,
    `this server mirrors ${where}: ${what} there (this server forwards builds and serves what it holds)`,
  );
}

/**
 * Another atomix-plugins server as the store: the index is its
 * InspectPlugin (public, like PullPlugin), the bytes its PullPlugin from an
 * offset. What it answers is checked as any store's answer is (the key it
 * names, the digest's form, the size against the limit); with trusted keys,
 * an artifact whose signed provenance does not name exactly its bytes and
 * key is refused before it is served or cached. The upstream's writes stay
 * with it: push, remove and gc through a mirror are FAILED_PRECONDITION.
 */
export function createUpstreamServerStore(options: UpstreamServerStoreOptions): ArtifactStore {
  const { connection } = options;
  const client = createPluginClient(connection);
  const pulls = socketPullTransport(serverTarget(connection.address, connection.tls, connection.proxy), {
    ...(connection.token ? { token: connection.token } : {}),
  });
  const where = `the atomix-plugins server at ${connection.address}`;
  // An upstream that takes a call and never answers would hold every pull of the key for good.
  const timeoutMs = options.lookupTimeoutMs ?? 30_000;
  const control = (signal: AbortSignal | undefined) => ({ timeoutMs, ...(signal ? { signal } : {}) });
  /** The upstream's silence is its being unreachable (UNAVAILABLE), not a deadline of the caller's. */
  const unanswered = (failure: PluginError, what: string) =>
    failure.code === Code.DeadlineExceeded
      ? new PluginError(Code.Unavailable, `${where} did not answer ${what} within ${timeoutMs} ms`, {
          cause: failure,
        })
      : failure;
  /** Keys whose provenance was verified for a digest, so that the check runs once per artifact. */
  const verified = new Map<string, Digest>();

  function checkManifest(key: BuildKey, message: PluginManifest): ArtifactManifest {
    const fail = (why: string) =>
      new PluginError(Code.DataLoss, `${where} answered for ${formatBuildKey(key)} with ${why}`);
    let named: BuildKey;
    try {
      named = parseBuildKey(message);
    } catch {
      throw fail("a manifest whose key is not valid");
    }
    if (buildKeyText(named) !== buildKeyText(key)) throw fail(`the manifest of ${formatBuildKey(named)}`);
    const size = Number(message.size);
    if (!DIGEST_PATTERN.test(message.digest)) throw fail("a digest that is not sha256:<64 hex>");
    if (!Number.isSafeInteger(size) || size < 0) throw fail("a size that is not a whole number of bytes");
    if (size > options.maxArtifactBytes) {
      throw new PluginError(
        Code.ResourceExhausted,
        `${formatBuildKey(key)} on ${where} has ${size} bytes, over this server's --max-artifact-size ${options.maxArtifactBytes}`,
      );
    }
    return {
      key,
      digest: message.digest as Digest,
      size,
      mediaType: String(message.mediaType).slice(0, 256),
      createdAt: String(message.createdAt).slice(0, 64),
      annotations: { ...message.annotations },
    };
  }

  async function checkProvenance(manifest: ArtifactManifest, signal: AbortSignal | undefined): Promise<void> {
    if (!connection.trustedKeys?.length) return;
    const text = buildKeyText(manifest.key);
    if (verified.get(text) === manifest.digest) return;
    // client.provenance verifies the bundle against the trusted keys for the digest it names.
    const answer = await client.provenance(manifest.key, control(signal)).catch((error: unknown) => {
      const failure = PluginError.from(error);
      if (failure.code !== Code.NotFound) throw unanswered(failure, "a provenance request");
      throw new PluginError(
        Code.FailedPrecondition,
        `${where} holds no signed provenance of ${formatBuildKey(manifest.key)}; not mirrored`,
        { cause: error },
      );
    });
    if (answer.digest !== manifest.digest) {
      throw new PluginError(
        Code.FailedPrecondition,
        `${where} holds provenance of ${formatBuildKey(manifest.key)} for ${answer.digest}, not for the ${manifest.digest} it serves; not mirrored`,
      );
    }
    if (verified.size >= 100_000) verified.clear();
    verified.set(text, manifest.digest);
  }

  async function* read(manifest: ArtifactManifest, readOptions: ReadOptions): AsyncGenerator<Buffer> {
    const offset = readOptions.offset ?? 0;
    if (offset > manifest.size) throw outOfRange(offset, manifest);
    if (offset === manifest.size) return;
    await checkProvenance(manifest, readOptions.signal);
    // The transport hands over views of buffers it reuses: each is copied
    // into the reader's chunk before the transport is let go on.
    const queue: Buffer[] = [];
    let wake: (() => void) | undefined;
    let taken: (() => void) | undefined;
    let ended = false;
    let failure: unknown;
    const headroom = readOptions.headroom ?? 0;
    const allocate = readOptions.allocate ?? ((size: number) => Buffer.allocUnsafe(size));
    let pending: Buffer | undefined;
    let filled = 0;
    // The reader may stop early (break, an error downstream): the call is ended then.
    const stop = new AbortController();
    const signal = readOptions.signal ? AbortSignal.any([readOptions.signal, stop.signal]) : stop.signal;
    let position = offset;
    const chunkFor = () => Math.min(readOptions.chunkSize, manifest.size - position);
    const call = pulls
      .pullOnce(manifest.key, {
        offset,
        ifNoneMatch: undefined,
        deadline: undefined,
        signal,
        onHeaders: (announced) => {
          // Only an atomix-plugins server announces the digest a mirror is checked against.
          if (announced.digest === undefined) {
            throw new PluginError(
              Code.FailedPrecondition,
              `${where} announced no digest for ${formatBuildKey(manifest.key)}: an upstream must be an atomix-plugins server`,
            );
          }
          return announced.digest === manifest.digest && announced.size === manifest.size;
        },
        onData: async (chunks) => {
          for (const data of chunks) {
            for (let at = 0; at < data.byteLength; ) {
              // Past the size it announced there is no chunk to fill (and no end to an empty one).
              if (!pending && position >= manifest.size) {
                throw new PluginError(
                  Code.DataLoss,
                  `${where} sent more than the ${manifest.size} bytes of ${formatBuildKey(manifest.key)}`,
                );
              }
              pending ??= allocate(headroom + chunkFor());
              const want = pending.byteLength - headroom - filled;
              const take = Math.min(want, data.byteLength - at);
              data.copy(pending, headroom + filled, at, at + take);
              filled += take;
              at += take;
              if (filled === pending.byteLength - headroom) {
                queue.push(pending.subarray(headroom));
                position += filled;
                pending = undefined;
                filled = 0;
              }
            }
          }
          wake?.();
          // The stream waits until the reader took what is queued.
          if (queue.length > 0) await new Promise<void>((resolve) => (taken = resolve));
          signal.throwIfAborted();
        },
      })
      .then(
        (outcome) => {
          if (outcome === "changed") {
            failure = new PluginError(
              Code.Unavailable,
              `${formatBuildKey(manifest.key)} changed on ${where} while it was read; ask again`,
            );
          }
        },
        (error: unknown) => {
          failure = error;
        },
      )
      .finally(() => {
        ended = true;
        wake?.();
      });
    try {
      for (;;) {
        const next = queue.shift();
        if (next) {
          if (queue.length === 0) taken?.();
          yield next;
          continue;
        }
        if (ended) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
      if (failure) throw PluginError.from(failure, `reading ${formatBuildKey(manifest.key)} from ${where}`);
      if (position < manifest.size) {
        throw new PluginError(
          Code.Unavailable,
          `${where} ended ${formatBuildKey(manifest.key)} at byte ${position} of ${manifest.size}`,
        );
      }
    } finally {
      if (!ended) stop.abort(new PluginError(Code.Cancelled, "the reader stopped"));
      taken?.();
      await call;
    }
  }

  return {
    description: `upstream ${where}`,
    readOnly: true,
    holdsLocally: () => false,

    async get(key, getOptions) {
      let message: PluginManifest;
      try {
        message = await client.inspect(key, control(getOptions?.signal));
      } catch (error) {
        const failure = PluginError.from(error);
        if (failure.code === Code.NotFound) return undefined;
        throw unanswered(failure, `the lookup of ${formatBuildKey(key)}`);
      }
      const manifest = checkManifest(key, message);
      // Checked for each key, not only when bytes are fetched: the content
      // cache serves a digest it holds to every key that names it, so a key
      // whose provenance is for other bytes (or missing) must not get that far.
      await checkProvenance(manifest, getOptions?.signal);
      return manifest;
    },

    async checkReachable(signal) {
      // Any answer is an answer: a key nobody stores is NOT_FOUND from a server that is there.
      await client
        .inspect(
          {
            runtime: { version: "0.0.0", buildVersion: "node0" },
            plugin: { name: "reachability-probe", version: "0.0.0" },
          },
          { signal },
        )
        .catch((error: unknown) => {
          const failure = PluginError.from(error);
          if (failure.code === Code.NotFound) return;
          throw failure;
        });
    },

    read,

    async put() {
      throw mirrorOnly("push", where);
    },

    async list(filter) {
      const messages = await client.list(filter ?? {});
      return messages.map((message) => {
        let key: BuildKey;
        try {
          key = parseBuildKey(message);
        } catch {
          // The upstream's answer, not the caller's request: not INVALID_ARGUMENT.
          throw new PluginError(Code.DataLoss, `${where} listed an artifact whose key is not valid`);
        }
        return checkManifest(key, message);
      });
    },

    async getProvenance(key, provenanceOptions) {
      const manifest = await this.get(key, provenanceOptions);
      if (!manifest) return undefined;
      try {
        const answer = await client.provenance(key, {
          ...(provenanceOptions?.signal ? { signal: provenanceOptions.signal } : {}),
        });
        return { manifest, bundle: answer.digest === manifest.digest ? answer.bundle : undefined };
      } catch (error) {
        if (PluginError.from(error).code === Code.NotFound) return { manifest, bundle: undefined };
        throw error;
      }
    },

    async remove() {
      throw mirrorOnly("remove", where);
    },

    async collectGarbage() {
      // What a mirror holds is its content cache, bounded and evicted on its own.
      return { removedBlobs: 0, freedBytes: 0 };
    },

    async close() {
      pulls.close();
      client.close();
    },
  };
}
