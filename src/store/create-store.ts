import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { ConnectionOptions } from "atomix-plugins-client/connection-options";
import type { Logger } from "pino";
import type { ArtifactStore } from "./artifact-store.js";
import { createFsStore } from "./fs-store.js";
import type { RegistryCredentials } from "./oci/registry-credentials.js";

/**
 * Which store to use: `fs` (the embedded default) or `oci`, a repository in
 * an OCI distribution registry shared by any number of server replicas.
 */
export type StoreConfig =
  | { kind: "fs"; dir: string }
  | {
      kind: "oci";
      /** `oci://host:port/repository`; see parseOciLocation. */
      url: string;
      /** The registry's user name and password; they win over credentialsFile. */
      credentials?: RegistryCredentials | undefined;
      /** docker-style config.json. */
      credentialsFile?: string | undefined;
      /** Local directory where artifacts are spooled and hashed before upload. */
      spoolDir?: string | undefined;
      /** The replica's content cache; every pull reads the registry without one. */
      cache?: CacheConfig | undefined;
      /** Whether the registry takes writes; `detect` asks it at start. Default read-write. */
      writes?: "detect" | "read-write" | "read-only" | undefined;
    }
  | {
      /** Another atomix-plugins server: this one mirrors it and forwards builds to it. */
      kind: "upstream";
      connection: ConnectionOptions;
      /** Where runtime releases and build records of this server stay. */
      dataDir: string;
      maxArtifactBytes: number;
      cache?: CacheConfig | undefined;
    };

/** A replica's content cache in front of a shared store (content-cache.ts, replica-store.ts). */
export interface CacheConfig {
  dir: string;
  maxBytes: number;
  resolveTtlMs: number;
}

/** `store` with a content cache in front, when `cache` is given. */
async function withCache(
  store: ArtifactStore,
  cache: CacheConfig | undefined,
  log?: Logger,
): Promise<ArtifactStore> {
  if (!cache) return store;
  const [{ ContentCache }, { createReplicaStore }] = await Promise.all([
    import("./content-cache.js"),
    import("./replica-store.js"),
  ]);
  const keysDir = join(cache.dir, "keys");
  await mkdir(keysDir, { recursive: true });
  const content = await ContentCache.open({ dir: cache.dir, maxBytes: cache.maxBytes, log });
  return createReplicaStore(store, { cache: content, resolveTtlMs: cache.resolveTtlMs, keysDir, log });
}

export async function createStore(config: StoreConfig, log?: Logger): Promise<ArtifactStore> {
  switch (config.kind) {
    case "fs":
      return createFsStore({ dir: config.dir });
    case "oci": {
      // The OCI client is loaded only by a server that uses it.
      const [{ parseOciLocation }, { createOciStore }, { loadRegistryCredentials }] = await Promise.all([
        import("./oci/oci-location.js"),
        import("./oci/oci-store.js"),
        import("./oci/registry-credentials.js"),
      ]);
      const location = parseOciLocation(config.url);
      const credentials = await loadRegistryCredentials({
        host: new URL(location.origin).host,
        given: config.credentials,
        file: config.credentialsFile,
      });
      const registry = await createOciStore({
        ...location,
        credentials,
        tmpDir: config.spoolDir,
        writes: config.writes ?? "read-write",
        log,
      });
      return withCache(registry, config.cache, log);
    }
    case "upstream": {
      const { createUpstreamServerStore } = await import("./upstream-server-store.js");
      const upstream = createUpstreamServerStore({
        connection: config.connection,
        maxArtifactBytes: config.maxArtifactBytes,
      });
      return withCache(upstream, config.cache, log);
    }
  }
}
