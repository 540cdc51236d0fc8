/**
 * Annotation keys the server writes into manifests (the compiler, its
 * toolchains, the stores). The `dev.atomix.` prefix is reserved to the
 * server: a push that sets such a key is refused.
 */
export const RESERVED_ANNOTATION_PREFIX = "dev.atomix.";

/** The keys the compiler and its toolchains write. */
export const ANNOTATIONS = {
  toolchain: "dev.atomix.toolchain",
  toolchainVersion: "dev.atomix.toolchain.version",
  source: "dev.atomix.source",
  sourceIntegrity: "dev.atomix.source.integrity",
  buildDurationMs: "dev.atomix.build.duration-ms",
  builtAt: "dev.atomix.build.time",
  /**
   * The digest (`sha256:<hex>`) of the runtime release the artifact was
   * built for: its runtime.json and every file it supplies to builds.
   */
  runtimeDigest: "dev.atomix.runtime.digest",
} as const;
