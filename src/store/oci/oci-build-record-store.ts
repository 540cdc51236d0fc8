import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  type BuildKey,
  buildKeyId,
  formatBuildKey,
  parseBuildKey,
} from "atomix-plugins-core/model/build-key";
import type { BuildRecord } from "atomix-plugins-core/model/build-record";
import type { CacheCollection, DiskCache } from "../../compiler/disk-cache.js";
import { type BuildRecordStore, DEFAULT_MAX_BUILD_RECORDS } from "../build-record-store.js";
import { readableKey } from "./build-key-tag.js";
import {
  EMPTY_CONFIG,
  EMPTY_CONFIG_BYTES,
  keyAnnotations,
  keyFromAnnotations,
  MEDIA_TYPES,
  type OciImageManifest,
} from "./oci-manifest.js";
import { OciObjects, sha256 } from "./oci-objects.js";
import type { RegistryClient } from "./registry-client.js";

export const BUILD_RECORD_MEDIA_TYPES = {
  /** The `artifactType` of a build record's manifest. */
  artifact: "application/vnd.atomix.build-record.v1",
  record: "application/vnd.atomix.build-record.v1+json",
} as const;

const ANNOTATION = {
  outcome: "dev.atomix.build.outcome",
  code: "dev.atomix.build.code",
  finished: "org.opencontainers.image.created",
} as const;

const TAG_PREFIX = "atomix-build_";
/** A record's blob: 64 KiB of output and the fields around it. */
const MAX_RECORD_BYTES = 512 * 1024;
const LIST_CONCURRENCY = 8;

/**
 * The tag of `key`'s build record: `atomix-build_<readable key>_<32 hex>`,
 * which never has a build key tag's shape (those end in `-<32 hex>`).
 */
export function buildRecordTag(key: BuildKey): string {
  return `${TAG_PREFIX}${readableKey(key, 80)}_${buildKeyId(key).slice(0, 32)}`;
}

/**
 * Build records in the artifacts' OCI repository: per key one manifest
 * (artifactType `application/vnd.atomix.build-record.v1`, the empty config,
 * one layer holding the record as JSON, the key and outcome in the
 * annotations so that listings need no blob), tagged by `buildRecordTag`.
 * A new record replaces the tag and deletes the manifest it replaced; at
 * most `maxRecords` are kept, the oldest deleted first.
 */
export function createOciBuildRecordStore(options: {
  client: RegistryClient;
  maxRecords?: number;
}): BuildRecordStore {
  const maxRecords = options.maxRecords ?? DEFAULT_MAX_BUILD_RECORDS;
  const objects = new OciObjects(options.client);
  let emptyConfigKnown = false;

  async function read(tag: string, expected: BuildKey | undefined, signal?: AbortSignal) {
    const fetched = await objects.getManifest(tag, signal);
    if (!fetched) return undefined;
    const layer = fetched.oci.layers?.[0];
    if (fetched.oci.artifactType !== BUILD_RECORD_MEDIA_TYPES.artifact || !layer) return undefined;
    const bytes = await objects.getBlob(layer.digest, MAX_RECORD_BYTES, signal);
    let record: BuildRecord;
    try {
      record = JSON.parse(bytes.toString("utf8")) as BuildRecord;
      record = { ...record, key: parseBuildKey(record.key) };
    } catch (error) {
      throw new PluginError(Code.DataLoss, `the build record ${tag} in ${objects.where} is malformed`, {
        cause: error,
      });
    }
    if (expected && buildKeyId(record.key) !== buildKeyId(expected)) {
      throw new PluginError(
        Code.DataLoss,
        `the build record ${tag} in ${objects.where} is of ${formatBuildKey(record.key)}, not ${formatBuildKey(expected)}`,
      );
    }
    return { record, digest: fetched.digest };
  }

  /** Every record's key, outcome and time, from its manifest's annotations (no blob read), newest first. */
  async function scan(): Promise<{ record: BuildRecord; digest: string; bytes: number }[]> {
    const tags = (await objects.listTags()).filter((tag) => tag.startsWith(TAG_PREFIX));
    const found: { record: BuildRecord; digest: string; bytes: number }[] = [];
    let next = 0;
    const worker = async () => {
      while (next < tags.length) {
        const tag = tags[next++] as string;
        const fetched = await objects.getManifest(tag).catch(() => undefined);
        const annotations = fetched?.oci.annotations;
        if (!fetched || fetched.oci.artifactType !== BUILD_RECORD_MEDIA_TYPES.artifact || !annotations)
          continue;
        try {
          const key = parseBuildKey(keyFromAnnotations(annotations));
          found.push({
            digest: fetched.digest,
            bytes: fetched.oci.layers?.[0]?.size ?? 0,
            record: {
              key,
              outcome: annotations[ANNOTATION.outcome] === "success" ? "success" : "failure",
              code: annotations[ANNOTATION.code] ?? "",
              message: "",
              durationMs: 0,
              finishedAt: annotations[ANNOTATION.finished] ?? "",
              toolchain: {},
              runtimeDigest: "",
              sourceStamp: "",
              artifactDigest: "",
              output: "",
              outputTruncated: false,
            },
          });
        } catch {
          // a tag someone else wrote: not listed
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, tags.length) }, worker));
    return found.sort((a, b) => b.record.finishedAt.localeCompare(a.record.finishedAt));
  }

  /**
   * Deletes the oldest records beyond the bound. Every replica may do it: a
   * record another one deleted first is simply gone.
   */
  let trimming: Promise<CacheCollection> | undefined;
  function trim(): Promise<CacheCollection> {
    trimming ??= (async () => {
      const found = await scan();
      usage = {
        entries: Math.min(found.length, maxRecords),
        bytes: found.slice(0, maxRecords).reduce((sum, entry) => sum + entry.bytes, 0),
      };
      let removedEntries = 0;
      let freedBytes = 0;
      for (const entry of found.slice(maxRecords)) {
        await objects.deleteManifest(entry.digest).catch(() => {});
        removedEntries++;
        freedBytes += entry.bytes;
      }
      putsSinceTrim = 0;
      return { removedEntries, freedBytes };
    })().finally(() => {
      trimming = undefined;
    });
    return trimming;
  }
  let usage = { entries: 0, bytes: 0 };
  let putsSinceTrim = 0;
  const cache: DiskCache = {
    name: "build-records",
    usage: () => ({ ...usage, maxBytes: 0, maxEntries: maxRecords }),
    collect: trim,
  };

  return {
    async putBuildRecord(record) {
      const bytes = Buffer.from(JSON.stringify(record));
      const digest = sha256(bytes);
      await objects.pushBlob(digest, bytes);
      if (!emptyConfigKnown) {
        await objects.pushBlob(EMPTY_CONFIG.digest, EMPTY_CONFIG_BYTES);
        emptyConfigKnown = true;
      }
      const tag = buildRecordTag(record.key);
      const previous = await objects.getManifest(tag).catch(() => undefined);
      const manifest: OciImageManifest = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.imageManifest,
        artifactType: BUILD_RECORD_MEDIA_TYPES.artifact,
        config: { mediaType: EMPTY_CONFIG.mediaType, digest: EMPTY_CONFIG.digest, size: EMPTY_CONFIG.size },
        layers: [{ mediaType: BUILD_RECORD_MEDIA_TYPES.record, digest, size: bytes.byteLength }],
        annotations: {
          ...keyAnnotations(record.key),
          [ANNOTATION.outcome]: record.outcome,
          [ANNOTATION.code]: record.code,
          [ANNOTATION.finished]: record.finishedAt,
        },
      };
      const written = await objects.putManifest(tag, manifest);
      if (previous && previous.digest !== written) await objects.deleteManifest(previous.digest);
      if (!previous) usage = { entries: usage.entries + 1, bytes: usage.bytes + bytes.byteLength };
      // Listing every record is costly: the bound is enforced once a tenth of it was added.
      if (++putsSinceTrim >= Math.max(1, Math.ceil(maxRecords / 10))) void trim().catch(() => {});
    },

    async getBuildRecord(key, getOptions) {
      return (await read(buildRecordTag(key), key, getOptions?.signal))?.record;
    },

    async listBuildRecords(limit) {
      const found = await scan();
      return found.map((entry) => entry.record).slice(0, limit);
    },

    cache,
  };
}
