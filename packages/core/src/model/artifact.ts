import type { BuildKey } from "./build-key.js";

/** Digest of an artifact's bytes: `sha256:<64 lowercase hex>`. */
export type Digest = `sha256:${string}`;

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

/** Media type of artifacts whose producer did not say otherwise. */
export const DEFAULT_MEDIA_TYPE = "application/octet-stream";

/**
 * What the store knows of one artifact. `annotations` carries whatever the
 * producer adds (the compiler records toolchain, source and build duration
 * there); keys are dotted names such as `dev.atomix.toolchain`, so that they
 * map one to one onto OCI manifest annotations.
 */
export interface ArtifactManifest {
  readonly key: BuildKey;
  readonly digest: Digest;
  readonly size: number;
  readonly mediaType: string;
  /** RFC 3339. */
  readonly createdAt: string;
  readonly annotations: Readonly<Record<string, string>>;
}

export interface GarbageReport {
  removedBlobs: number;
  freedBytes: number;
}
