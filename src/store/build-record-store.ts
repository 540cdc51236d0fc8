import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { BuildRecord } from "atomix-plugins-core/model/build-record";
import type { DiskCache } from "../compiler/disk-cache.js";

/**
 * Where build records live, beside the artifacts, so that every replica
 * over a shared store sees what any of them built or failed to build. One
 * record per build key: the last build's.
 *
 * Implementations: `fs-build-record-store.ts` (files of the data directory)
 * and `oci/oci-build-record-store.ts` (an OCI artifact of its own
 * artifactType in the artifacts' repository, tagged per key).
 */
export interface BuildRecordStore {
  putBuildRecord(record: BuildRecord): Promise<void>;
  /** The last record of `key`, or undefined. */
  getBuildRecord(key: BuildKey, options?: { signal?: AbortSignal }): Promise<BuildRecord | undefined>;
  /** The most recent records, newest first, without their output. */
  listBuildRecords(limit: number): Promise<BuildRecord[]>;
  /** The records as a bounded cache: at most so many, the oldest removed first. */
  readonly cache: DiskCache;
}

/** Build records kept by default (--build-records-max). */
export const DEFAULT_MAX_BUILD_RECORDS = 10_000;
