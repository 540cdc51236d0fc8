import { open } from "node:fs/promises";
import { dirname } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { GoCommand } from "./go-command.js";
import { firstLines } from "./go-mod.js";

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const ET_DYN = 3;

/**
 * Checks that a build produced what `plugin.Open` can load: an ELF shared
 * object whose main package exports `symbol`. FAILED_PRECONDITION otherwise,
 * saying what is missing, so that a driver author knows what to change.
 */
export async function checkGoPlugin(options: {
  file: string;
  /** The import path of the plugin's main package (its module path here). */
  mainPackage: string;
  symbol: string;
  go: GoCommand;
  what: string;
}): Promise<void> {
  const { file, mainPackage, symbol, go, what } = options;
  const header = Buffer.alloc(20);
  const handle = await open(file, "r");
  try {
    await handle.read(header, 0, header.length, 0);
  } finally {
    await handle.close();
  }
  if (!header.subarray(0, 4).equals(ELF_MAGIC)) {
    throw new PluginError(Code.FailedPrecondition, `${what}: the build output is not an ELF file`);
  }
  // e_type sits at byte 16, in the byte order EI_DATA (byte 5) announces.
  const type = header[5] === 2 ? header.readUInt16BE(16) : header.readUInt16LE(16);
  if (type !== ET_DYN) {
    throw new PluginError(Code.FailedPrecondition, `${what}: the build output is not a shared object`);
  }

  const nm = await go.run(["tool", "nm", file], dirname(file));
  if (nm.exitCode !== 0) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${what}: cannot read the symbols of the build output: ${firstLines(nm.stderr)}`,
    );
  }
  const wanted = new Set([`${mainPackage}.${symbol}`, `${pathToPrefix(mainPackage)}.${symbol}`]);
  const exported = nm.stdout.split("\n").some((line) => {
    const match = /^\s*[0-9a-f]*\s+([A-Z])\s+(\S+)/.exec(line);
    return match !== null && "BDRT".includes(match[1] ?? "") && wanted.has(match[2] ?? "");
  });
  if (!exported) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${what}: the plugin builds but does not export ${symbol}; the runtime looks up the package-level variable or function ${symbol} in the plugin's main package (${mainPackage})`,
    );
  }
}

/**
 * How the Go linker writes a package path into symbol names
 * (cmd/internal/objabi.PathToPrefix): control characters, space, '%', '"',
 * non-ASCII and dots after the last slash become %xx.
 */
export function pathToPrefix(path: string): string {
  const slash = path.lastIndexOf("/");
  let out = "";
  const bytes = Buffer.from(path, "utf8");
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i] as number;
    if (c <= 0x20 || (c === 0x2e && i > slash) || c === 0x25 || c === 0x22 || c >= 0x7f) {
      out += `%${c.toString(16).padStart(2, "0")}`;
    } else {
      out += String.fromCharCode(c);
    }
  }
  return out;
}
