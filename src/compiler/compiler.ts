import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";

/**
 * Builds artifacts for build keys and stores them. The server's services only
 * see this interface; the toolchains behind it are the compiler's business.
 */
export interface Compiler {
  /**
   * Answers with the stored manifest of `key`, building and storing the
   * artifact first if the store has none. Errors are PluginErrors with the
   * status the caller should see (FAILED_PRECONDITION for a plugin that does
   * not build, RESOURCE_EXHAUSTED for a full queue, ...). `signal` abandons
   * this caller's wait, not a build that other callers share. `background`
   * marks work no caller waits for (pre-warm): it yields its turn to every
   * caller, within its own share of the build slots, until a caller asks
   * for the same key and joins it. `caller` names who asks (a peer address
   * or a client certificate's identity): the builds a caller starts are
   * held to its share of the slots and the queue. `missed` says the caller
   * has just looked `key` up in this compiler's store and found nothing: the
   * compiler goes on to the build without asking the store again (with an
   * OCI store each lookup is a registry request).
   */
  compile(
    key: BuildKey,
    options?: { signal?: AbortSignal; background?: boolean; caller?: string; missed?: boolean },
  ): Promise<ArtifactManifest>;
  /**
   * The key `key`'s artifact is built and stored under: its build version
   * as its runtime declares it (`node20.20.2` → `node20`). `key` itself when
   * its runtime, toolchain or build version is not one this server builds.
   * Absent in a compiler that builds nothing itself (it forwards builds):
   * every key is its own there.
   */
  storedKey?(key: BuildKey): Promise<BuildKey>;
  /**
   * Whether this server has a build for runtime release `version` under
   * way (queued or running, until its artifact is stored): removing the
   * release meanwhile would pull its files from under the build, or leave
   * its artifact recording a release nobody can inspect or build again.
   * Absent in a compiler that builds nothing itself.
   */
  building?(version: string): boolean;
  close(): Promise<void>;
}
