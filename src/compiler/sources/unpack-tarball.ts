import { mkdir } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { x as extract } from "tar";
import { Code, PluginError } from "../../errors/plugin-error.js";

/**
 * Unpacks an npm package tarball (`package/...` inside) into `destDir`.
 * Only files and directories are written: links could point outside the
 * work directory, and owners and modes from the archive are not kept.
 */
export async function unpackTarball(
  data: Uint8Array,
  destDir: string,
  options: { what: string; signal?: AbortSignal },
): Promise<void> {
  await mkdir(destDir, { recursive: true });
  try {
    await pipeline(
      Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]),
      extract({
        cwd: destDir,
        strip: 1,
        strict: true,
        preserveOwner: false,
        filter: (_path, entry) => "type" in entry && (entry.type === "File" || entry.type === "Directory"),
      }),
      options.signal ? { signal: options.signal } : {},
    );
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    throw new PluginError(
      Code.FailedPrecondition,
      `${options.what} is not a readable package tarball: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}
