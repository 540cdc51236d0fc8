import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest, GarbageReport } from "atomix-plugins-core/model/artifact";
import { DEFAULT_MEDIA_TYPE } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import type { Logger } from "pino";
import type { ArtifactStore, ListFilter, ReadOptions, ScanEntry } from "../artifact-store.js";
import { writeHashedFile } from "../hashed-file.js";
import { badToken, collectManifests, compareManifests, mapOrdered } from "../manifest-pages.js";
import { isRunning } from "../process-alive.js";
import { checkPut, outOfRange } from "../store-checks.js";
import { buildKeyTag, isBuildKeyTag, readableTagPrefix } from "./build-key-tag.js";
import type { OciLocation } from "./oci-location.js";
import {
  EMPTY_CONFIG,
  EMPTY_CONFIG_BYTES,
  fromOciManifest,
  MEDIA_TYPES,
  toOciManifest,
} from "./oci-manifest.js";
import { OciObjects, sha256 } from "./oci-objects.js";
import { createReferrers } from "./oci-referrers.js";
import { discard, RegistryClient } from "./registry-client.js";
import type { RegistryCredentials } from "./registry-credentials.js";

export interface OciStoreOptions extends OciLocation {
  /** Anonymous access when absent. */
  credentials?: RegistryCredentials | undefined;
  /**
   * Artifacts up to this size are uploaded in one request (POST, then PUT
   * with the bytes); larger ones in PATCH requests of this size, so memory
   * per upload stays at this bound. Default 8 MiB.
   */
  uploadChunkSize?: number | undefined;
  /**
   * Where incoming artifacts are spooled while being hashed; created if
   * missing. Spool files of processes no longer running (a replica killed
   * mid-push) are removed at start. Default: the OS temporary directory.
   */
  tmpDir?: string | undefined;
  /** See RegistryClientOptions.requestTimeoutMs. Default 30 s. */
  requestTimeoutMs?: number | undefined;
  /**
   * Whether the registry takes writes. A registry mirror (Distribution in
   * proxy mode, Harbor's proxy cache) refuses them: the store then refuses
   * put and remove itself, with a message that says where builds go.
   * `detect` starts an upload at start and cancels it. Default read-write.
   */
  writes?: "detect" | "read-write" | "read-only" | undefined;
  log?: Logger | undefined;
}

/** Manifest GETs in flight while listing. */
const LIST_CONCURRENCY = 8;
/** Tags asked for per tag list request. */
const TAG_PAGE = 1000;

/**
 * An ArtifactStore in one repository of an OCI distribution registry (CNCF
 * Distribution, Harbor, Zot, cloud registries), so any number of stateless
 * server replicas share it and standard OCI tools can copy it.
 *
 * - An artifact is a blob pushed by digest (HEAD first: bytes the registry
 *   holds are not sent again) and an OCI image manifest tagged by
 *   `buildKeyTag(key)`: artifactType `application/vnd.atomix.plugin.v1`, the
 *   empty config, one layer, the key and annotations as manifest annotations.
 * - `put` spools and hashes the bytes into a temporary file first, so a
 *   refused artifact (digest, size, limit) never reaches the registry; then
 *   it uploads the blob, then the manifest. The registry refuses a manifest
 *   whose blob it does not hold whole, so a writer that dies midway leaves no
 *   tag: readers see the old manifest or the new one, never a partial blob.
 * - Two replicas writing one key upload the same blob and each put its
 *   manifest; the tag ends on one of them, and both name the same bytes when
 *   builds are deterministic. No lock is needed.
 * - `remove` deletes the tag's manifest, and `put` the manifest it replaces
 *   (the registry must run with `storage.delete.enabled: true`). `collectGarbage` can only unlink blobs
 *   whose digest it knows, because the distribution API cannot list a
 *   repository's blobs: those of the manifests this process removed or
 *   replaced, when no manifest refers to them any more. The registry frees
 *   their bytes, and those of anything else unreferenced, when its own
 *   `garbage-collect` command runs.
 * - A registry that does not answer gives UNAVAILABLE naming it; nothing is
 *   cached across calls, so the store works again as soon as it is back.
 */
export async function createOciStore(options: OciStoreOptions): Promise<ArtifactStore> {
  const client = new RegistryClient(options);
  const chunkLimit = options.uploadChunkSize ?? 8 * 1024 * 1024;
  const tmpDir = options.tmpDir ?? tmpdir();
  await mkdir(tmpDir, { recursive: true });
  await removeStaleSpoolFiles(tmpDir);
  const where = `${client.origin}/${client.repository}`;
  /** Digests being written by this process: collectGarbage leaves them alone. */
  const writing = new Map<string, number>();
  /** Blobs this process saw lose their manifest: what collectGarbage may unlink. */
  const orphans = new Map<string, number>();
  let emptyConfigKnown = false;

  const readOnly =
    options.writes === "read-only" || (options.writes === "detect" && !(await takesWrites(client)));
  if (readOnly) {
    options.log?.info(
      { store: where },
      "the OCI registry takes no writes (a mirror): artifacts found there are served; builds, pushes and removals are not done here",
    );
  }
  const refuseWrite = (what: string) =>
    new PluginError(
      Code.FailedPrecondition,
      `the OCI registry ${where} is a read-only mirror: ${what} through the server whose registry it mirrors (give this server --upstream to forward builds there)`,
    );
  const objects = new OciObjects(client);
  const fetchManifest = (tag: string, signal?: AbortSignal) => objects.getManifest(tag, signal);

  async function blobSize(digest: string, signal?: AbortSignal): Promise<number | undefined> {
    const response = await client.request("HEAD", `blobs/${digest}`, { expect: [200, 404], signal });
    await discard(response);
    if (response.status === 404) return undefined;
    return Number(response.headers.get("content-length") ?? "0");
  }

  /** Makes sure the registry holds the blob `digest`, uploading `path` if not. */
  async function ensureBlob(
    digest: string,
    size: number,
    source: { path: string } | { bytes: Buffer },
    signal: AbortSignal | undefined,
    skipCheck = false,
  ): Promise<void> {
    if (!skipCheck && (await blobSize(digest, signal)) !== undefined) return;
    const started = await client.request("POST", "blobs/uploads/", { expect: [202], signal });
    await discard(started);
    let location = uploadLocation(started, client.origin);
    try {
      if ("bytes" in source || size <= chunkLimit) {
        const bytes = "bytes" in source ? source.bytes : await readRange(source.path, 0, size);
        const done = await client.request("PUT", withDigest(location, digest), {
          headers: { "content-type": "application/octet-stream" },
          body: bytes,
          expect: [201],
          signal,
        });
        await discard(done);
        return;
      }
      for (let start = 0; start < size; start += chunkLimit) {
        const bytes = await readRange(source.path, start, Math.min(chunkLimit, size - start));
        const patched = await client.request("PATCH", location, {
          headers: {
            "content-type": "application/octet-stream",
            "content-range": `${start}-${start + bytes.byteLength - 1}`,
          },
          body: bytes,
          expect: [202],
          signal,
        });
        await discard(patched);
        location = uploadLocation(patched, client.origin);
      }
      const done = await client.request("PUT", withDigest(location, digest), { expect: [201], signal });
      await discard(done);
    } catch (error) {
      // Tell the registry to drop the upload session; it would purge it later anyway.
      await client
        .request("DELETE", location, { expect: [204, 404] })
        .then(discard)
        .catch(() => {});
      throw error;
    }
  }

  const referrers = createReferrers(objects);

  /** Deletes the provenance of a manifest no longer tagged; its bundle blobs become garbage. */
  async function detachProvenance(manifestDigest: string): Promise<void> {
    for (const blob of await referrers.detachAll(manifestDigest)) orphans.set(blob.digest, blob.size);
  }

  function hold(digest: string): () => void {
    writing.set(digest, (writing.get(digest) ?? 0) + 1);
    return () => {
      const left = (writing.get(digest) ?? 1) - 1;
      if (left === 0) writing.delete(digest);
      else writing.set(digest, left);
    };
  }

  /**
   * The build-key tags after `after`, in the registry's lexical order (so by
   * plugin name first), each with its manifest: a tag list page at a time,
   * LIST_CONCURRENCY manifest GETs in flight. A plugin name filter starts at
   * its tag prefix and stops past it.
   */
  async function* scanTags(
    filter: ListFilter | undefined,
    after: string | undefined,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<ScanEntry> {
    if (after !== undefined && !isBuildKeyTag(after)) throw badToken();
    const prefix = filter?.pluginName ? readableTagPrefix(filter.pluginName) : undefined;
    // Tags of the plugin sort right after its prefix, which is never a tag itself.
    let from = prefix && (after === undefined || after < prefix) ? prefix : after;
    for (;;) {
      const tags = await objects.tagsAfter(from, TAG_PAGE, signal);
      if (tags.length === 0) return;
      const past = prefix ? tags.findIndex((tag) => !tag.startsWith(prefix)) : -1;
      const ours = (past === -1 ? tags : tags.slice(0, past)).filter(isBuildKeyTag);
      const read = mapOrdered(ours, LIST_CONCURRENCY, async (tag): Promise<ScanEntry> => {
        const fetched = await fetchManifest(tag, signal);
        if (!fetched) return { position: tag, manifest: undefined }; // removed since the tag list was read
        try {
          return {
            position: tag,
            manifest: fromOciManifest(fetched.oci, undefined, `tag ${tag} of ${where}`),
          };
        } catch {
          // a manifest someone else put in the repository: not ours to list
          return { position: tag, manifest: undefined };
        }
      });
      for await (const entry of read) yield entry;
      if (past !== -1) return;
      from = tags[tags.length - 1];
    }
  }

  return {
    description: `OCI registry store at ${where}${readOnly ? " (read-only mirror)" : ""}`,
    readOnly,
    // Every read goes to the registry (no content cache in front).
    holdsLocally: () => false,

    async checkReachable(signal) {
      // The API's base answers 200, or 401 with the challenge; either way the registry is there.
      await discard(await client.request("GET", `${client.origin}/v2/`, { expect: [200, 401], signal }));
    },

    async get(key, getOptions) {
      const tag = buildKeyTag(key);
      const fetched = await fetchManifest(tag, getOptions?.signal);
      return fetched && fromOciManifest(fetched.oci, key, `tag ${tag} of ${where}`);
    },

    read(manifest, readOptions) {
      return readBlob(client, manifest, readOptions);
    },

    async put(key, data, putOptions = {}) {
      if (readOnly) throw refuseWrite(`store ${formatBuildKey(key)}`);
      const tmp = join(tmpDir, `${SPOOL_PREFIX}${process.pid}-${randomUUID()}`);
      let release: (() => void) | undefined;
      try {
        const written = await writeHashedFile(tmp, data, { ...putOptions, durable: false, mode: 0o600 });
        checkPut(key, written, putOptions);
        release = hold(written.digest);
        const { signal } = putOptions;
        await ensureBlob(written.digest, written.size, { path: tmp }, signal);
        if (!emptyConfigKnown) {
          await ensureBlob(EMPTY_CONFIG.digest, EMPTY_CONFIG.size, { bytes: EMPTY_CONFIG_BYTES }, signal);
          emptyConfigKnown = true;
        }
        const manifest: ArtifactManifest = {
          key,
          digest: written.digest,
          size: written.size,
          mediaType: putOptions.mediaType || DEFAULT_MEDIA_TYPE,
          createdAt: new Date().toISOString(),
          annotations: { ...putOptions.annotations },
        };
        const tag = buildKeyTag(key);
        const previous = await fetchManifest(tag, signal).catch((error: unknown) => {
          if (error instanceof PluginError && error.code === Code.DataLoss) return undefined; // overwritten below
          throw error;
        });
        if (putOptions.attest) {
          // Provenance is attached to the manifest before the manifest is
          // tagged, so the tag never names an artifact without it. The
          // manifest's digest is known before it is pushed: its bytes are ours.
          // A put cancelled by now is not signed at all.
          signal?.throwIfAborted();
          const bundle = Buffer.from(await putOptions.attest(manifest));
          const body = JSON.stringify(toOciManifest(manifest));
          const subject = {
            mediaType: MEDIA_TYPES.imageManifest,
            digest: sha256(body),
            size: Buffer.byteLength(body),
          };
          await referrers.attach(subject, bundle, manifest.createdAt, signal);
        }
        // The manifest is the commit: a put cancelled until now leaves the tag as it was.
        signal?.throwIfAborted();
        const digest = await objects.putManifest(
          tag,
          toOciManifest(manifest),
          signal,
          MEDIA_TYPES.imageManifest,
          // A garbage collection unlinked a blob between our check and the
          // manifest: both are uploaded again, unconditionally.
          async () => {
            await ensureBlob(written.digest, written.size, { path: tmp }, signal, true);
            await ensureBlob(
              EMPTY_CONFIG.digest,
              EMPTY_CONFIG.size,
              { bytes: EMPTY_CONFIG_BYTES },
              signal,
              true,
            );
          },
        );
        if (previous && previous.digest !== digest) {
          // The replaced manifest is untagged now: delete it, so that the
          // registry's own garbage-collect frees its blob without needing
          // --delete-untagged. Best effort: a leftover is only storage.
          await client
            .request("DELETE", `manifests/${previous.digest}`, { expect: [202, 404] })
            .then(discard)
            .catch(() => {});
          const replaced = previous.oci.layers?.[0];
          if (replaced && replaced.digest !== written.digest) orphans.set(replaced.digest, replaced.size);
          await detachProvenance(previous.digest);
        }
        orphans.delete(written.digest);
        return manifest;
      } catch (error) {
        throw PluginError.from(error, `storing ${formatBuildKey(key)} in ${where}`);
      } finally {
        release?.();
        await rm(tmp, { force: true });
      }
    },

    scan(scanOptions = {}) {
      return scanTags(scanOptions.filter, scanOptions.after, scanOptions.signal);
    },

    async list(filter) {
      return (await collectManifests(() => scanTags(filter, undefined, undefined), filter)).sort(
        compareManifests,
      );
    },

    async getProvenance(key, options) {
      const tag = buildKeyTag(key);
      const fetched = await fetchManifest(tag, options?.signal);
      if (!fetched) return undefined;
      const manifest = fromOciManifest(fetched.oci, key, `tag ${tag} of ${where}`);
      return { manifest, bundle: await referrers.read(fetched.digest, options?.signal) };
    },

    async remove(key: BuildKey) {
      if (readOnly) throw refuseWrite(`remove ${formatBuildKey(key)}`);
      const tag = buildKeyTag(key);
      const fetched = await fetchManifest(tag);
      if (!fetched) return false;
      // Deleting by digest also drops every tag on that manifest; manifests of
      // two keys never share a digest because the key is in the annotations.
      const response = await client.request("DELETE", `manifests/${fetched.digest}`, { expect: [202, 404] });
      await discard(response);
      const layer = fetched.oci.layers?.[0];
      if (layer) orphans.set(layer.digest, layer.size);
      await detachProvenance(fetched.digest);
      return response.status === 202;
    },

    async collectGarbage(): Promise<GarbageReport> {
      const report: GarbageReport = { removedBlobs: 0, freedBytes: 0 };
      if (orphans.size === 0) return report;
      // Mark only what may be swept: the orphans some manifest still names.
      const candidates = new Set(orphans.keys());
      const referenced = new Set<string>();
      for await (const { manifest } of scanTags(undefined, undefined, undefined)) {
        if (manifest && candidates.has(manifest.digest)) referenced.add(manifest.digest);
      }
      for (const digest of candidates) {
        if (!orphans.has(digest)) continue; // stored again meanwhile
        if (referenced.has(digest) || writing.has(digest)) {
          if (referenced.has(digest)) orphans.delete(digest);
          continue;
        }
        const size = await blobSize(digest);
        orphans.delete(digest);
        if (size === undefined) continue;
        const response = await client.request("DELETE", `blobs/${digest}`, { expect: [202, 404] });
        await discard(response);
        if (response.status !== 202) continue;
        report.removedBlobs += 1;
        report.freedBytes += size;
      }
      return report;
    },

    async close() {
      orphans.clear();
    },
  };
}

async function readRange(path: string, start: number, length: number): Promise<Buffer> {
  const handle = await open(path, "r");
  try {
    const buffer = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await handle.read(buffer, filled, length - filled, start + filled);
      if (bytesRead === 0) throw new PluginError(Code.Internal, `spooled artifact ${path} ended early`);
      filled += bytesRead;
    }
    return buffer;
  } finally {
    await handle.close();
  }
}

/**
 * Streams the blob from `offset` with an HTTP Range request, re-cut into
 * chunks of `chunkSize`. Reads from the socket only as the consumer pulls, so
 * memory per reader is about one chunk plus the HTTP stream's small buffer;
 * breaking out of the loop cancels the response body and frees the connection.
 */
async function* readBlob(
  client: RegistryClient,
  manifest: ArtifactManifest,
  options: ReadOptions,
): AsyncGenerator<Buffer> {
  const offset = options.offset ?? 0;
  if (offset > manifest.size) throw outOfRange(offset, manifest);
  if (offset === manifest.size) return;
  const response = await client.request("GET", `blobs/${manifest.digest}`, {
    headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
    expect: [200, 206, 404],
    signal: options.signal,
  });
  if (response.status === 404 || !response.body) {
    await discard(response);
    throw new PluginError(
      Code.NotFound,
      `the blob ${manifest.digest} of ${formatBuildKey(manifest.key)} is missing from the OCI registry ${client.origin}; remove the key and store it again`,
    );
  }
  // A registry that ignores Range sends everything: skip what the caller has.
  let skip = response.status === 206 ? 0 : offset;
  if (response.status === 206) {
    const range = /^bytes (\d+)-/.exec(response.headers.get("content-range") ?? "");
    if (!range || Number(range[1]) !== offset) {
      await discard(response);
      throw new PluginError(
        Code.Unavailable,
        `the OCI registry ${client.origin} answered a range request for ${manifest.digest} from ${offset} with ${response.headers.get("content-range")}`,
      );
    }
  }
  const reader = response.body.getReader();
  let remaining = manifest.size - offset;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let finished = false;
  try {
    while (remaining > 0) {
      const next = await reader.read().catch((error: unknown) => {
        throw options.signal?.aborted
          ? PluginError.from(options.signal.reason ?? error)
          : new PluginError(
              Code.Unavailable,
              `reading ${manifest.digest} from the OCI registry ${client.origin} failed: ${(error as Error).message}`,
              { cause: error },
            );
      });
      if (next.done) break;
      let data = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      if (skip > 0) {
        const dropped = Math.min(skip, data.byteLength);
        skip -= dropped;
        data = data.subarray(dropped);
      }
      if (data.byteLength > remaining) data = data.subarray(0, remaining);
      while (data.byteLength > 0) {
        const take = Math.min(options.chunkSize - pendingBytes, data.byteLength);
        pending.push(data.subarray(0, take));
        pendingBytes += take;
        remaining -= take;
        data = data.subarray(take);
        if (pendingBytes === options.chunkSize) {
          const chunk = Buffer.concat(pending, pendingBytes);
          pending = [];
          pendingBytes = 0;
          yield chunk;
        }
      }
    }
    if (pendingBytes > 0) {
      const chunk = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      yield chunk;
    }
    if (remaining > 0) {
      throw new PluginError(
        Code.DataLoss,
        `the OCI registry ${client.origin} ended the blob ${manifest.digest} of ${formatBuildKey(manifest.key)} ${remaining} bytes early`,
      );
    }
    finished = true;
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
}

/**
 * Whether the registry takes writes: an upload started and cancelled at
 * once. Distribution in proxy mode and Harbor's proxy cache answer 405
 * (UNSUPPORTED); a registry that cannot be reached now is taken as
 * writable (its writes fail, as any call does, until it answers).
 */
async function takesWrites(client: RegistryClient): Promise<boolean> {
  let started: Response;
  try {
    started = await client.request("POST", "blobs/uploads/", { expect: [202, 405, 403] });
  } catch {
    return true;
  }
  await discard(started);
  if (started.status !== 202) return false;
  const location = started.headers.get("location");
  if (location) {
    await client
      .request("DELETE", new URL(location, client.origin).toString(), { expect: [204, 404] })
      .then(discard)
      .catch(() => {});
  }
  return true;
}

/** The absolute URL of an upload session from a 202's Location header. */
function uploadLocation(response: Response, origin: string): string {
  const location = response.headers.get("location");
  if (!location) {
    throw new PluginError(
      Code.Unavailable,
      `the OCI registry ${origin} started an upload without a Location`,
    );
  }
  return new URL(location, origin).toString();
}

function withDigest(location: string, digest: string): string {
  const url = new URL(location);
  url.searchParams.set("digest", digest);
  return url.toString();
}

const SPOOL_PREFIX = "atomix-oci-";

/**
 * Spool files are named after the process writing them, so replicas sharing
 * a spool directory only ever remove the leftovers of processes that are gone.
 */
async function removeStaleSpoolFiles(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const pid = Number(/^atomix-oci-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid || isRunning(pid)) continue;
    await rm(join(dir, name), { force: true });
  }
}
