import { parentPort, workerData } from "node:worker_threads";

/**
 * Parses a packument off the server's event loop (a large one takes JSON.parse
 * hundreds of milliseconds) and keeps only what a build needs of each
 * version: where its tarball is and its integrity. Anything else in the
 * document, however large, is dropped here.
 */
export type PackumentVersions = [
  version: string,
  tarball: string,
  integrity: string | undefined,
  shasum: string | undefined,
][];

export type PackumentWorkerAnswer = { versions: PackumentVersions } | { error: string };

function reduce(bytes: Uint8Array): PackumentWorkerAnswer {
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    return { error: `it is not JSON (${(error as Error).message})` };
  }
  const versions = (document as { versions?: unknown } | null)?.versions;
  if (typeof versions !== "object" || versions === null || Array.isArray(versions)) {
    return { error: "it has no versions object" };
  }
  const text = (value: unknown) => (typeof value === "string" ? value : undefined);
  const kept: PackumentVersions = [];
  for (const [version, entry] of Object.entries(versions)) {
    const dist = (entry as { dist?: unknown } | null)?.dist as Record<string, unknown> | undefined;
    const tarball = text(dist?.tarball);
    if (tarball === undefined) continue;
    kept.push([version, tarball, text(dist?.integrity), text(dist?.shasum)]);
  }
  return { versions: kept };
}

parentPort?.postMessage(reduce(workerData as Uint8Array));
