import type { ConnectionOptions } from "atomix-plugins-client/connection-options";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import { abandonable, Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, buildKeyText, formatBuildKey } from "atomix-plugins-core/model/build-key";
import { SingleFlight } from "atomix-plugins-core/model/single-flight";
import type { ArtifactStore } from "../store/artifact-store.js";
import type { Compiler } from "./compiler.js";

/**
 * A compiler that builds nothing itself: a key its store lacks is compiled
 * by the upstream server (CompilePlugin), once per key however many callers
 * ask at once, then read from the store, which sees the new artifact (the
 * upstream server's store, or a registry mirror of it). What a tier in front
 * of a central service does, so that builds run where the toolchains and the
 * writable store are.
 */
export function createUpstreamCompiler(options: {
  connection: ConnectionOptions;
  store: ArtifactStore;
  /** How long a store that mirrors the upstream's may take to show a key built there. */
  visibleWithinMs?: number;
  /**
   * How long a forwarded build may wait for the upstream's answer (its queue
   * and build included) before it is UNAVAILABLE. Default 15 minutes.
   */
  compileTimeoutMs?: number;
}): Compiler {
  const client = createPluginClient(options.connection);
  const inflight = new SingleFlight<ArtifactManifest>();
  const where = `the upstream atomix-plugins server at ${options.connection.address}`;

  async function forward(key: BuildKey, missed: boolean): Promise<ArtifactManifest> {
    const found = missed ? undefined : await options.store.get(key);
    if (found) return found;
    // Bounded: callers of a key share this forward, so an upstream that took the call and went
    // silent (a connection lost without a reset) would keep the key from building here for good.
    const timeoutMs = options.compileTimeoutMs ?? 15 * 60_000;
    const compiled = await client.compile(key, { timeoutMs }).catch((error: unknown) => {
      const failure = PluginError.from(error);
      if (failure.code === Code.DeadlineExceeded) {
        throw new PluginError(
          Code.Unavailable,
          `${where} did not answer the build of ${formatBuildKey(key)} within ${timeoutMs} ms; try again`,
          { cause: error },
        );
      }
      // Said once, by the tier next to the caller, however long the chain.
      const told = failure.message.includes("(built by the upstream");
      throw new PluginError(failure.code, told ? failure.message : `${failure.message} (built by ${where})`, {
        cause: error,
      });
    });
    const reference = compiled.reference;
    if (!reference) {
      // Only an atomix-plugins server's answer names the digest this store must come to show.
      throw new PluginError(
        Code.FailedPrecondition,
        `${where} answered ${quoted(compiled.plugin)} for ${formatBuildKey(key)}, not an atomix-plugin:// reference: an upstream must be an atomix-plugins server`,
      );
    }
    // A registry mirror fetches from its upstream on demand; a cache may still hold a miss for a moment.
    const until = Date.now() + (options.visibleWithinMs ?? 5_000);
    for (let wait = 50; ; wait = Math.min(wait * 2, 1000)) {
      const stored = await options.store.get(key);
      if (stored?.digest === reference.digest) return stored;
      if (Date.now() > until) {
        throw new PluginError(
          Code.Unavailable,
          `${where} built ${formatBuildKey(key)} as ${reference.digest}, but this server's store ${stored ? `names ${stored.digest}` : "does not show it yet"}; try again`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  return {
    compile(key, compileOptions) {
      const text = buildKeyText(key);
      const pending = inflight.run(text, () => forward(key, compileOptions?.missed === true));
      return abandonable(pending, compileOptions?.signal, `compiling ${formatBuildKey(key)} was cancelled`);
    },
    async close() {
      client.close();
    },
  };
}
