import type { FileHandle } from "node:fs/promises";

/**
 * Reads `length` bytes at `position` into `into` at `at`, as many reads as
 * it takes; fewer only at the end of the file. What a BlobReader answers.
 */
export async function readFully(
  handle: FileHandle,
  into: Buffer,
  at: number,
  length: number,
  position: number,
): Promise<number> {
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(into, at + filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}
