import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import ssri from "ssri";
import { Code, PluginError } from "../../errors/plugin-error.js";
import type { PluginRef } from "../../model/build-key.js";
import type { PluginSource } from "./plugin-source.js";

/** Largest package tarball fetched; a plugin is a small thing. */
const MAX_TARBALL_BYTES = 64 * 1024 * 1024;

interface Packument {
  versions?: Record<string, { dist?: { tarball?: string; integrity?: string; shasum?: string } }>;
}

/**
 * The npm registry (or a mirror such as Verdaccio): the packument gives the
 * tarball URL and its `dist.integrity`; the tarball is refused unless it
 * matches. Nothing from the package is ever executed here: no install, no
 * lifecycle scripts; the toolchain only reads its files.
 */
export function createNpmRegistrySource(options: { url: string; fetchTimeoutMs?: number }): PluginSource {
  const registry = options.url.replace(/\/+$/, "");
  const timeoutMs = options.fetchTimeoutMs ?? 30_000;

  async function get(url: string, signal: AbortSignal | undefined, accept: string): Promise<Response> {
    const signals = [AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])];
    try {
      return await fetch(url, { headers: { accept }, signal: AbortSignal.any(signals), redirect: "follow" });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new PluginError(
        Code.Unavailable,
        `npm registry ${registry} is unreachable (${url}): ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  return {
    description: `npm registry ${registry}`,
    label: "the npm registry",
    async fetch(plugin: PluginRef, fetchOptions) {
      const { signal } = fetchOptions;
      // Scoped names keep their "@" and escape the "/": @acme%2fdriver.
      const packumentUrl = `${registry}/${plugin.name.replace("/", "%2f")}`;
      const response = await get(
        packumentUrl,
        signal,
        "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8",
      );
      if (response.status === 404) return undefined;
      if (!response.ok) {
        throw new PluginError(
          response.status >= 500 ? Code.Unavailable : Code.FailedPrecondition,
          `npm registry answered ${response.status} for ${packumentUrl}`,
        );
      }
      const packument = (await response.json()) as Packument;
      const dist = packument.versions?.[plugin.version]?.dist;
      if (!dist) return undefined;
      const integrity =
        dist.integrity ?? (dist.shasum ? ssri.fromHex(dist.shasum, "sha1").toString() : undefined);
      if (!dist.tarball || !integrity) {
        throw new PluginError(
          Code.FailedPrecondition,
          `npm registry lists ${plugin.name}@${plugin.version} without a tarball and its integrity; refusing to build unverified code`,
        );
      }
      const tarballResponse = await get(dist.tarball, signal, "application/octet-stream");
      if (!tarballResponse.ok || !tarballResponse.body) {
        throw new PluginError(
          tarballResponse.status >= 500 ? Code.Unavailable : Code.FailedPrecondition,
          `npm registry answered ${tarballResponse.status} for the tarball ${dist.tarball}`,
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
            done(
              new PluginError(
                Code.ResourceExhausted,
                `the tarball of ${plugin.name}@${plugin.version} is over ${MAX_TARBALL_BYTES} bytes`,
              ),
            );
            return;
          }
          done(null, chunk);
        },
      });
      try {
        await pipeline(
          Readable.fromWeb(tarballResponse.body as import("node:stream/web").ReadableStream<Uint8Array>),
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
            `the tarball of ${plugin.name}@${plugin.version} from ${dist.tarball} does not match the registry's integrity ${integrity}`,
          );
        }
        throw new PluginError(
          Code.Unavailable,
          `the tarball of ${plugin.name}@${plugin.version} could not be downloaded from ${dist.tarball}: ${(error as Error).message}`,
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
