import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { Digest } from "atomix-plugins-core/model/artifact";
import type { PutOptions } from "./artifact-store.js";

/**
 * Writes `data` to a new file at `path` while hashing it, so that every store
 * knows an artifact's digest and size before anything becomes visible.
 * Enforces `maxSize` (RESOURCE_EXHAUSTED), `expectedSize` as soon as more
 * bytes arrive than announced (INVALID_ARGUMENT), and `signal`, also once the
 * data has ended; `durable` fsyncs the file before it is closed (the fs store
 * renames it into place afterwards).
 */
export async function writeHashedFile(
  path: string,
  data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: Pick<PutOptions, "maxSize" | "expectedSize" | "signal"> & { durable: boolean; mode: number },
): Promise<{ digest: Digest; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  const handle = await open(path, "wx", options.mode);
  try {
    for await (const chunk of data) {
      options.signal?.throwIfAborted();
      size += chunk.byteLength;
      if (options.maxSize !== undefined && size > options.maxSize) {
        throw new PluginError(
          Code.ResourceExhausted,
          `artifact is larger than the limit of ${options.maxSize} bytes`,
        );
      }
      if (options.expectedSize !== undefined && size > options.expectedSize) {
        throw new PluginError(
          Code.InvalidArgument,
          `received more than the announced ${options.expectedSize} bytes; nothing was stored`,
        );
      }
      hash.update(chunk);
      let offset = 0;
      while (offset < chunk.byteLength) {
        const { bytesWritten } = await handle.write(chunk, offset);
        offset += bytesWritten;
      }
    }
    options.signal?.throwIfAborted();
    if (options.durable) await handle.sync();
  } finally {
    await handle.close();
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}
