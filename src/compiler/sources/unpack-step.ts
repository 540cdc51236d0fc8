/**
 * A program of its own, run inside the build sandbox: it is the only code
 * that reads a plugin source as it arrived (a package tarball, a catalog
 * folder) and writes the copy the build works on. It imports nothing of the
 * server. Whatever the input, it writes only regular files and folders under
 * the destination, at most `maxFiles` entries and `maxBytes` bytes, streamed
 * to disk; links are kept only when they stay inside the package (as a copy
 * of the file they name). It prints one JSON line: `{ ok, files, bytes,
 * integrity }` or `{ problem }`, naming files as the package does.
 *
 * argv: one JSON object `{ kind: "tarball" | "folder", from, to, maxBytes, maxFiles }`.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdir, open, readdir, readlink, realpath } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { x as extract } from "tar";

interface UnpackRequest {
  kind: "tarball" | "folder";
  from: string;
  to: string;
  maxBytes: number;
  maxFiles: number;
}

class Refused extends Error {}

const request = JSON.parse(process.argv[2] ?? "{}") as UnpackRequest;

function report(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

try {
  const counted = request.kind === "tarball" ? await unpackTarball(request) : await copyFolder(request);
  report({ ok: true, ...counted, integrity: await sourceIntegrity(request) });
} catch (error) {
  report({
    problem: error instanceof Refused ? error.message : `cannot read it: ${(error as Error).message}`,
  });
}

async function unpackTarball(req: UnpackRequest): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  let inflated = 0;
  let refusal: Refused | undefined;
  const head = Buffer.alloc(2);
  const handle = await open(req.from, "r");
  await handle.read(head, 0, 2, 0);
  await handle.close();
  const gzipped = head[0] === 0x1f && head[1] === 0x8b;
  // Headers and padding come on top of the files' bytes: a margin, not a loophole.
  const maxInflated = req.maxBytes + (req.maxFiles + 16) * 1024;
  const source = createReadStream(req.from);
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      inflated += chunk.length;
      if (inflated > maxInflated) {
        done(new Refused(`it unpacks to more than ${req.maxBytes} bytes (--max-source-size)`));
        return;
      }
      done(null, chunk);
    },
  });
  await mkdir(req.to, { recursive: true });
  const refuse = (error: Refused) => {
    refusal ??= error;
    source.destroy(error);
  };
  const sink = extract({
    cwd: req.to,
    strip: 1,
    strict: true,
    preserveOwner: false,
    noChmod: true,
    filter: (_path, entry) => {
      files++;
      if (files > req.maxFiles) {
        refuse(new Refused(`it holds more than ${req.maxFiles} entries (--max-source-files)`));
        return false;
      }
      const type = "type" in entry ? entry.type : undefined;
      if (type !== "File" && type !== "Directory") return false;
      bytes += "size" in entry && typeof entry.size === "number" ? entry.size : 0;
      if (bytes > req.maxBytes) {
        refuse(new Refused(`it unpacks to more than ${req.maxBytes} bytes (--max-source-size)`));
        return false;
      }
      return true;
    },
  });
  try {
    if (gzipped) await pipeline(source, createGunzip(), meter, sink);
    else await pipeline(source, meter, sink);
  } catch (error) {
    if (refusal) throw refusal;
    if (error instanceof Refused) throw error;
    throw new Refused(`it is not a readable package tarball: ${(error as Error).message}`);
  }
  if (refusal) throw refusal;
  return { files, bytes };
}

async function copyFolder(req: UnpackRequest): Promise<{ files: number; bytes: number }> {
  const root = await realpath(req.from);
  let files = 0;
  let bytes = 0;
  const count = (path: string, size: number) => {
    files++;
    bytes += size;
    if (files > req.maxFiles)
      throw new Refused(`it holds more than ${req.maxFiles} entries (--max-source-files)`);
    if (bytes > req.maxBytes) {
      throw new Refused(`${path}: the package is larger than ${req.maxBytes} bytes (--max-source-size)`);
    }
  };
  const walk = async (rel: string): Promise<void> => {
    await mkdir(join(req.to, rel), { recursive: true });
    const entries = await readdir(join(root, rel));
    for (const name of entries.sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const info = await lstat(join(root, path));
      if (info.isDirectory()) {
        count(path, 0);
        await walk(path);
      } else if (info.isFile()) {
        count(path, info.size);
        await copyFile(join(root, path), join(req.to, path), info.size);
      } else if (info.isSymbolicLink()) {
        const target = resolve(dirname(join(root, path)), await readlink(join(root, path)));
        const real = await realpath(target).catch(() => undefined);
        if (!inside(root, target) || real === undefined || !inside(root, real)) {
          throw new Refused(`${path} is a link that leaves the package; links must stay inside it`);
        }
        const targetInfo = await lstat(real);
        if (!targetInfo.isFile())
          throw new Refused(`${path} is a link to a folder; only links to files are kept`);
        count(path, targetInfo.size);
        await copyFile(real, join(req.to, path), targetInfo.size);
      } else {
        throw new Refused(`${path} is not a regular file or folder (a FIFO, socket or device)`);
      }
    }
  };
  await walk("");
  return { files, bytes };
}

/** Copies exactly `size` bytes: a file that grows while it is copied is not a way around the limit. */
async function copyFile(from: string, to: string, size: number): Promise<void> {
  await pipeline(
    createReadStream(from, { start: 0, end: Math.max(size - 1, 0) }),
    createWriteStream(to, { mode: 0o644 }),
  );
}

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/**
 * The integrity the manifest records: of the tarball as fetched, or of a
 * folder's files (sha512 over sorted paths and contents of the copy).
 */
async function sourceIntegrity(req: UnpackRequest): Promise<string> {
  const hash = createHash("sha512");
  if (req.kind === "tarball") {
    for await (const chunk of createReadStream(req.from)) hash.update(chunk as Buffer);
    return `sha512-${hash.digest("base64")}`;
  }
  const files = (await readdir(req.to, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
  for (const file of files) {
    const info = await lstat(file);
    hash.update(`${relative(req.to, file)}\0${info.size}\0`);
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  }
  return `sha512-${hash.digest("base64")}`;
}
