import type { Digest } from "atomix-plugins-core/model/artifact";
import type { RuntimeReleaseIndex, RuntimeReleaseSummary } from "atomix-plugins-core/model/runtime-release";

/** A release written to a local staging folder and checked, ready to store. */
export interface StagedRuntimeRelease {
  /** Its files, laid out by path; on the same filesystem as the store's `stagingDir`. */
  readonly dir: string;
  readonly index: RuntimeReleaseIndex;
  readonly digest: Digest;
  readonly description: string;
  readonly buildVersions: readonly string[];
}

/**
 * Where runtime releases live, beside the artifacts in the same store, so
 * that every replica over a shared store knows the same runtimes. Releases
 * are immutable and content-addressed (model/runtime-release.ts); a version
 * names one release for good.
 *
 * Implementations: `fs-runtime-release-store.ts` (a folder of the data
 * directory) and `oci/oci-runtime-release-store.ts` (an OCI artifact of its
 * own artifactType in the artifacts' repository).
 */
export interface RuntimeReleaseStore {
  /** Where releases are staged before `put` (a folder of the same filesystem, for renames). */
  readonly stagingDir: string;

  /**
   * Stores `staged` under its version. The same release again answers the
   * stored one (`created` false); another release under a stored version is
   * ALREADY_EXISTS naming both digests. Leaves `staged.dir` to the caller.
   */
  putRuntimeRelease(
    staged: StagedRuntimeRelease,
    options?: { signal?: AbortSignal },
  ): Promise<{ release: RuntimeReleaseSummary; created: boolean }>;

  /** The release registered as `version`, or undefined. */
  getRuntimeRelease(
    version: string,
    options?: { signal?: AbortSignal },
  ): Promise<RuntimeReleaseSummary | undefined>;

  listRuntimeReleases(): Promise<RuntimeReleaseSummary[]>;

  /**
   * Forgets the release registered as `version`, so that the version may be
   * registered again; the removed release, or undefined if none was. Whether
   * artifacts still record it is the caller's to check first.
   */
  removeRuntimeRelease(version: string): Promise<RuntimeReleaseSummary | undefined>;

  /**
   * A local folder holding the release's files, every one checked against
   * the release's digest; read-only by convention, kept for later calls.
   */
  openRuntimeRelease(release: RuntimeReleaseSummary, options?: { signal?: AbortSignal }): Promise<string>;
}
