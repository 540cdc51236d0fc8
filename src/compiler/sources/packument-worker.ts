import { parentPort } from "node:worker_threads";

/**
 * Parses a packument off the server's event loop (a large one takes JSON.parse
 * hundreds of milliseconds) and keeps only what a build needs of each
 * version: where its tarball is and its integrity. Anything else in the
 * document, however large, is dropped here. The body arrives chunk by chunk
 * as the server reads it (a `null` ends it), so that the server never holds
 * or copies it whole.
 */
export type PackumentVersions = [
  version: string,
  tarball: string,
  integrity: string | undefined,
  shasum: string | undefined,
][];

export type PackumentWorkerAnswer = { versions: PackumentVersions } | { error: string };

/**
 * What a real package stays within (npm itself caps a version at 256
 * characters). Past these a packument is refused, so that what the server
 * keeps of one stays small enough to be cached: an answer too large to keep
 * would be asked for again on every build.
 */
const MAX_VERSIONS = 10_000;
const MAX_LENGTHS = { version: 256, tarball: 1024, integrity: 512, shasum: 64 } as const;

function reduce(text: string): PackumentWorkerAnswer {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    return { error: `it is not JSON (${(error as Error).message})` };
  }
  const versions = (document as { versions?: unknown } | null)?.versions;
  if (typeof versions !== "object" || versions === null || Array.isArray(versions)) {
    return { error: "it has no versions object" };
  }
  const string = (value: unknown) => (typeof value === "string" ? value : undefined);
  const kept: PackumentVersions = [];
  for (const [version, entry] of Object.entries(versions)) {
    const dist = (entry as { dist?: unknown } | null)?.dist as Record<string, unknown> | undefined;
    const fields = {
      version,
      tarball: string(dist?.tarball),
      integrity: string(dist?.integrity),
      shasum: string(dist?.shasum),
    };
    if (fields.tarball === undefined) continue;
    if (kept.length === MAX_VERSIONS) return { error: `it lists more than ${MAX_VERSIONS} versions` };
    for (const [field, max] of Object.entries(MAX_LENGTHS)) {
      const value = fields[field as keyof typeof MAX_LENGTHS];
      if (value !== undefined && value.length > max) {
        return { error: `a version's ${field} has ${value.length} characters (at most ${max})` };
      }
    }
    kept.push([version, fields.tarball, fields.integrity, fields.shasum]);
  }
  return { versions: kept };
}

const chunks: Uint8Array[] = [];
parentPort?.on("message", (chunk: Uint8Array | null) => {
  if (chunk) {
    chunks.push(chunk);
    return;
  }
  const decoder = new TextDecoder();
  const text = chunks.map((part) => decoder.decode(part, { stream: true })).join("") + decoder.decode();
  chunks.length = 0;
  parentPort?.postMessage(reduce(text));
});
