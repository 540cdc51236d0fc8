import type { BuildKey } from "./build-key.js";

/** The toolchain output a record keeps: its last 64 KiB. */
export const MAX_RECORDED_OUTPUT = 64 * 1024;

/**
 * What one build left behind, success or failure: read by `atomix-plugins
 * logs`, the catalog page, and the compiler, which answers a remembered
 * FAILED_PRECONDITION again without building (`--failure-ttl`).
 */
export interface BuildRecord {
  readonly key: BuildKey;
  readonly outcome: "success" | "failure";
  /** gRPC code name: OK, FAILED_PRECONDITION, DEADLINE_EXCEEDED, ... */
  readonly code: string;
  /** What the caller was told (empty for a success). */
  readonly message: string;
  readonly durationMs: number;
  /** RFC 3339. */
  readonly finishedAt: string;
  /** Toolchain name and versions (the manifest's dev.atomix.toolchain* annotations, for a success). */
  readonly toolchain: Readonly<Record<string, string>>;
  /** The runtime release it was built for. */
  readonly runtimeDigest: string;
  /** What the plugin's source looked like (see sources/source-stamp.ts); a change forgets a failure. */
  readonly sourceStamp: string;
  readonly artifactDigest: string;
  /** The last MAX_RECORDED_OUTPUT bytes of what the build's steps printed, host paths left out. */
  readonly output: string;
  readonly outputTruncated: boolean;
}

/** Keeps the last `max` bytes of `text` (cut at a character boundary). */
export function tailOf(text: string, max = MAX_RECORDED_OUTPUT): { text: string; truncated: boolean } {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.byteLength <= max) return { text, truncated: false };
  let start = bytes.byteLength - max;
  // Skip UTF-8 continuation bytes: start on a character.
  while (start < bytes.byteLength && ((bytes[start] ?? 0) & 0xc0) === 0x80) start++;
  return { text: bytes.subarray(start).toString("utf8"), truncated: true };
}
