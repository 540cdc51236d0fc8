import { open } from "node:fs/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { SourceLimits } from "../../sources/source-unpacker.js";

/** Largest central directory read: 10,000 entries with long names take a few MiB. */
const MAX_DIRECTORY_BYTES = 32 * 1024 * 1024;
const END_OF_DIRECTORY = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_END_OF_DIRECTORY = 0x06064b50;
const DIRECTORY_ENTRY = 0x02014b50;

/**
 * Refuses a module zip (FAILED_PRECONDITION) whose entries or unpacked
 * bytes exceed the source limits, from its central directory alone: before
 * Go unpacks it, since a zip of a few KiB can unpack to hundreds of MiB.
 * The sizes read are the ones the zip declares; Go refuses to unpack a file
 * larger than its declared size, so they bound what unpacking would write.
 */
export async function checkModuleZip(file: string, limits: SourceLimits, what: string): Promise<void> {
  const refuse = (problem: string) =>
    new PluginError(Code.FailedPrecondition, `the source of ${what} is refused: ${problem}`);
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    const tailLength = Math.min(size, 22 + 0xffff);
    const tail = Buffer.alloc(tailLength);
    await handle.read(tail, 0, tailLength, size - tailLength);
    let end = -1;
    for (let i = tailLength - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === END_OF_DIRECTORY) {
        end = i;
        break;
      }
    }
    if (end < 0) throw refuse("its zip has no central directory");
    let count = tail.readUInt16LE(end + 10);
    let directoryBytes = tail.readUInt32LE(end + 12);
    let directoryAt = tail.readUInt32LE(end + 16);
    if (count === 0xffff || directoryBytes === 0xffffffff || directoryAt === 0xffffffff) {
      const locator = end - 20;
      if (locator < 0 || tail.readUInt32LE(locator) !== ZIP64_LOCATOR) throw refuse("its zip is malformed");
      const record = Buffer.alloc(56);
      await handle.read(record, 0, 56, Number(tail.readBigUInt64LE(locator + 8)));
      if (record.readUInt32LE(0) !== ZIP64_END_OF_DIRECTORY) throw refuse("its zip is malformed");
      count = Number(record.readBigUInt64LE(32));
      directoryBytes = Number(record.readBigUInt64LE(40));
      directoryAt = Number(record.readBigUInt64LE(48));
    }
    if (count > limits.maxFiles) {
      throw refuse(`it holds more than ${limits.maxFiles} entries (--max-source-files)`);
    }
    if (directoryBytes > MAX_DIRECTORY_BYTES || directoryAt + directoryBytes > size) {
      throw refuse("its zip's central directory is malformed or too large");
    }
    const directory = Buffer.alloc(directoryBytes);
    await handle.read(directory, 0, directoryBytes, directoryAt);
    let entries = 0;
    let bytes = 0;
    for (let at = 0; at + 46 <= directory.length; ) {
      if (directory.readUInt32LE(at) !== DIRECTORY_ENTRY) break;
      const nameLength = directory.readUInt16LE(at + 28);
      const extraLength = directory.readUInt16LE(at + 30);
      const commentLength = directory.readUInt16LE(at + 32);
      let unpacked = directory.readUInt32LE(at + 24);
      if (unpacked === 0xffffffff) {
        unpacked = zip64Size(directory.subarray(at + 46 + nameLength, at + 46 + nameLength + extraLength));
      }
      entries++;
      bytes += unpacked;
      if (entries > limits.maxFiles) {
        throw refuse(`it holds more than ${limits.maxFiles} entries (--max-source-files)`);
      }
      if (bytes > limits.maxBytes) {
        throw refuse(`it unpacks to more than ${limits.maxBytes} bytes (--max-source-size)`);
      }
      at += 46 + nameLength + extraLength + commentLength;
    }
  } finally {
    await handle.close();
  }
}

/** The unpacked size in an entry's zip64 extra field (its first value when the 32-bit one is saturated). */
function zip64Size(extra: Buffer): number {
  for (let at = 0; at + 4 <= extra.length; ) {
    const id = extra.readUInt16LE(at);
    const length = extra.readUInt16LE(at + 2);
    if (id === 0x0001 && length >= 8 && at + 12 <= extra.length) return Number(extra.readBigUInt64LE(at + 4));
    at += 4 + length;
  }
  // Saturated and no zip64 size: as large as a 32-bit size says, at least.
  return 0xffffffff;
}

/** A module path or version as the module cache and proxies spell it: `!x` for each capital X. */
export function escapeModulePath(path: string): string {
  return path.replace(/[A-Z]/g, (letter) => `!${letter.toLowerCase()}`);
}
