import { createWriteStream } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Worker } from "node:worker_threads";
import { createGunzip } from "node:zlib";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { PluginRef } from "atomix-plugins-core/model/build-key";
import ssri from "ssri";
import { type CachedAnswer, createPackumentCache } from "./packument-cache.js";
import type { PackumentWorkerAnswer } from "./packument-worker.js";
import type { PluginSource } from "./plugin-source.js";
import { createRegistryHttp } from "./registry-http.js";

/** Largest package tarball fetched; a plugin is a small thing. */
const MAX_TARBALL_BYTES = 64 * 1024 * 1024;
export const DEFAULT_PACKUMENT_TTL_MS = 5 * 60_000;
export const DEFAULT_MAX_PACKUMENT_BYTES = 16 * 1024 * 1024;
/**
 * Package names whose answers are kept, and about how much memory they may
 * hold together: more than the largest packument the worker accepts
 * (10,000 versions of bounded fields, about 20 MB), so any answer can be kept.
 */
const CACHED_NAMES = 1_000;
const CACHED_BYTES = 32 * 1024 * 1024;
/** The parsing worker's heap: a packument made of millions of tiny objects fails there, not in the server. */
const PARSE_HEAP_MB = 256;
/** The abbreviated packument: versions and their dist, without readmes; npm's own client asks for it. */
const PACKUMENT_ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8";

interface VersionDist {
  readonly tarball: string;
  readonly integrity: string | undefined;
  readonly shasum: string | undefined;
}

/** What the registry said of a package name; a refusal is answered again until the next check. */
type Packument =
  | { kind: "found"; versions: Map<string, VersionDist> }
  | { kind: "missing" }
  | { kind: "refused"; message: string };

export interface NpmRegistrySourceOptions {
  readonly url: string;
  /** Time limit of one request, its body included. */
  readonly fetchTimeoutMs?: number;
  /** Hosts besides the registry's origin that tarballs may come from: `host` (default port) or `host:port`. */
  readonly tarballHosts?: readonly string[];
  /** How long a packument (or its absence) is used before the registry is asked again, conditionally. */
  readonly packumentTtlMs?: number;
  /** Largest packument read; a larger one is refused (FAILED_PRECONDITION). */
  readonly maxPackumentBytes?: number;
}

/**
 * The npm registry (or a mirror such as Verdaccio): the packument gives the
 * tarball URL and its `dist.integrity`; the tarball is refused unless it
 * matches. Nothing from the package is ever executed here: no install, no
 * lifecycle scripts; the toolchain only reads its files.
 *
 * Every answer of the registry is a stranger's: a packument is asked once
 * per name per `packumentTtlMs`, size-capped and parsed in a worker; a
 * tarball comes only from the registry's origin or a listed tarball host
 * (see registry-http.ts).
 */
export function createNpmRegistrySource(options: NpmRegistrySourceOptions): PluginSource {
  const registry = options.url.replace(/\/+$/, "");
  const maxPackumentBytes = options.maxPackumentBytes ?? DEFAULT_MAX_PACKUMENT_BYTES;
  const http = createRegistryHttp({
    registry,
    timeoutMs: options.fetchTimeoutMs ?? 30_000,
    ...(options.tarballHosts ? { extraHosts: options.tarballHosts } : {}),
  });

  async function loadPackument(
    name: string,
    previous: CachedAnswer<Packument> | undefined,
  ): Promise<CachedAnswer<Packument> | "unchanged"> {
    // Scoped names keep their "@" and escape the "/": @acme%2fdriver.
    const url = `${registry}/${name.replace("/", "%2f")}`;
    const answer = await http.get(url, {
      what: `the packument of ${name}`,
      headers: {
        accept: PACKUMENT_ACCEPT,
        "accept-encoding": "gzip",
        ...(previous?.etag ? { "if-none-match": previous.etag } : {}),
        ...(previous?.lastModified ? { "if-modified-since": previous.lastModified } : {}),
      },
    });
    const validators = {
      etag: answer.headers.etag,
      lastModified: answer.headers["last-modified"],
    };
    try {
      if (answer.status === 304 && previous) return "unchanged";
      if (answer.status === 404)
        return { value: { kind: "missing" }, bytes: 64 + name.length, ...validators };
      if (answer.status !== 200) {
        throw new PluginError(
          answer.status >= 500 ? Code.Unavailable : Code.FailedPrecondition,
          `npm registry answered ${answer.status} for ${url}`,
        );
      }
      const refused = (why: string): CachedAnswer<Packument> => ({
        value: { kind: "refused", message: `the npm registry's packument of ${name} ${why}` },
        bytes: 256 + name.length,
        ...validators,
      });
      const tooLarge = `is over ${maxPackumentBytes} bytes (--max-packument-size); refusing to read it`;
      const gzipped = /^\s*(x-)?gzip\s*$/i.test(answer.headers["content-encoding"] ?? "");
      if (!gzipped && Number(answer.headers["content-length"]) > maxPackumentBytes) return refused(tooLarge);
      const parsed = await parseAtMost(
        gzipped ? gunzipped(answer.body) : answer.body,
        maxPackumentBytes,
      ).catch((error: unknown) => {
        throw new PluginError(
          Code.Unavailable,
          `the packument of ${name} could not be read from npm registry ${registry}: ${(error as Error).message}`,
          { cause: error },
        );
      });
      if (parsed === "too large") return refused(tooLarge);
      if ("error" in parsed) return refused(`cannot be read: ${parsed.error}`);
      const versions = new Map<string, VersionDist>();
      let size = 64 + name.length;
      for (const [version, tarball, integrity, shasum] of parsed.versions) {
        versions.set(version, { tarball, integrity, shasum });
        // V8 keeps ASCII strings a byte a character; each entry has a few dozen bytes of its own.
        size += 96 + version.length + tarball.length + (integrity?.length ?? 0) + (shasum?.length ?? 0);
      }
      return { value: { kind: "found", versions }, bytes: size, ...validators };
    } finally {
      answer.body.destroy();
    }
  }

  const packuments = createPackumentCache<Packument>({
    ttlMs: options.packumentTtlMs ?? DEFAULT_PACKUMENT_TTL_MS,
    maxEntries: CACHED_NAMES,
    maxBytes: CACHED_BYTES,
    load: loadPackument,
    keepOnFailure: (error) => error instanceof PluginError && error.code === Code.Unavailable,
  });

  return {
    description: `npm registry ${registry}`,
    label: "the npm registry",
    async fetch(plugin: PluginRef, fetchOptions) {
      const { signal } = fetchOptions;
      const packument = await packuments.get(plugin.name, signal);
      if (packument.kind === "missing") return undefined;
      if (packument.kind === "refused") throw new PluginError(Code.FailedPrecondition, packument.message);
      const dist = packument.versions.get(plugin.version);
      if (!dist) return undefined;
      const integrity =
        dist.integrity ?? (dist.shasum ? ssri.fromHex(dist.shasum, "sha1").toString() : undefined);
      if (!integrity) {
        throw new PluginError(
          Code.FailedPrecondition,
          `npm registry lists ${plugin.name}@${plugin.version} without a tarball and its integrity; refusing to build unverified code`,
        );
      }
      const what = `the tarball of ${plugin.name}@${plugin.version}`;
      const answer = await http.get(dist.tarball, {
        what,
        headers: { accept: "application/octet-stream" },
        ...(signal ? { signal } : {}),
      });
      if (answer.status !== 200) {
        answer.body.destroy();
        throw new PluginError(
          answer.status >= 500 ? Code.Unavailable : Code.FailedPrecondition,
          `npm registry answered ${answer.status} for ${what} ${answer.url}`,
        );
      }
      // Streamed to the build's scratch folder through the integrity check:
      // a tarball never sits in the server's memory, and nothing is unpacked
      // before all of it matched the registry's integrity.
      const file = join(fetchOptions.scratchDir, "package.tgz");
      let size = 0;
      const limit = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          size += chunk.length;
          if (size > MAX_TARBALL_BYTES) {
            done(new PluginError(Code.ResourceExhausted, `${what} is over ${MAX_TARBALL_BYTES} bytes`));
            return;
          }
          done(null, chunk);
        },
      });
      try {
        await pipeline(
          answer.body,
          limit,
          ssri.integrityStream({ integrity }),
          createWriteStream(file),
          ...(signal ? [{ signal }] : []),
        );
      } catch (error) {
        if (error instanceof PluginError || signal?.aborted) throw error;
        if ((error as NodeJS.ErrnoException).code === "EINTEGRITY") {
          throw new PluginError(
            Code.DataLoss,
            `${what} from ${dist.tarball} does not match the registry's integrity ${integrity}`,
          );
        }
        throw new PluginError(
          Code.Unavailable,
          `${what} could not be downloaded from ${dist.tarball}: ${(error as Error).message}`,
          { cause: error },
        );
      }
      await fetchOptions.unpacker.unpack({
        kind: "tarball",
        from: file,
        to: fetchOptions.destDir,
        what: `${plugin.name}@${plugin.version}`,
        ...(signal ? { signal } : {}),
      });
      return { dir: fetchOptions.destDir, origin: `npm:${dist.tarball}`, integrity };
    },
  };
}

/** `body` inflated; an error or abort of `body` ends the result with it (pipe() would leave it waiting). */
function gunzipped(body: Readable): Readable {
  const inflated = createGunzip();
  pipeline(body, inflated).catch(() => {});
  return inflated;
}

/**
 * `body` parsed by a worker of its own, which gets each chunk as it arrives
 * and is terminated afterwards (its heap goes with it); "too large" (the
 * body and the worker stopped) once it passes `max` bytes. Only a failure
 * to read the body throws.
 */
async function parseAtMost(body: Readable, max: number): Promise<PackumentWorkerAnswer | "too large"> {
  const worker = new Worker(new URL("./packument-worker.js", import.meta.url), {
    resourceLimits: { maxOldGenerationSizeMb: PARSE_HEAP_MB },
  });
  const answered = new Promise<PackumentWorkerAnswer>((resolve) => {
    worker.once("message", resolve);
    worker.once("error", (error) =>
      resolve({
        error:
          (error as NodeJS.ErrnoException).code === "ERR_WORKER_OUT_OF_MEMORY"
            ? `it needs more than ${PARSE_HEAP_MB} MiB to parse`
            : error.message,
      }),
    );
    worker.once("exit", (code) => resolve({ error: `its parser stopped (exit code ${code})` }));
  });
  try {
    let size = 0;
    for await (const chunk of body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > max) {
        body.destroy();
        return "too large";
      }
      // A chunk may be a view of a larger (pooled) buffer, which posting would copy whole: moved as a copy of its own.
      const own = new Uint8Array(chunk);
      worker.postMessage(own, [own.buffer]);
    }
    worker.postMessage(null);
    return await answered;
  } finally {
    void worker.terminate();
  }
}
