import type { StepLimits } from "./sandbox/sandbox-step.js";

/**
 * What a build may use when nobody says otherwise: the defaults of `serve`'s
 * build options (src/config.ts reads them from here) and of the compiler's
 * parts when they are made without a config. One place, so the two cannot
 * drift apart; no runtime imports, so every CLI start reads it for nothing.
 */

/** Builds that may wait for a slot (--build-queue). */
export const DEFAULT_BUILD_QUEUE = 64;

/** A build's time limit (--build-timeout-ms). */
export const DEFAULT_BUILD_TIMEOUT_MS = 120_000;

/**
 * Largest file a build may produce (--max-build-output): a plugin is small,
 * and a few bytes of source can fold into a huge output.
 */
export const DEFAULT_MAX_BUILD_OUTPUT = 128 * 1024 * 1024;

/** A plugin source's unpacked bytes and files (--max-source-bytes, --max-source-files). */
export const DEFAULT_MAX_SOURCE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_SOURCE_FILES = 10_000;

/** What the Go caches may hold (--go-cache-max-bytes). */
export const DEFAULT_GO_CACHE_MAX_BYTES = 10 * 1024 * 1024 * 1024;

/** What one sandboxed step may use up; memory is --build-memory-bytes. */
export const DEFAULT_STEP_LIMITS: StepLimits = {
  memoryBytes: 2 * 1024 * 1024 * 1024,
  processes: 512,
  cpuSeconds: 300,
  fileBytes: 1024 * 1024 * 1024,
  tmpBytes: 512 * 1024 * 1024,
  openFiles: 1024,
};
