import { mkdir } from "node:fs/promises";
import { join } from "node:path";
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
      cache?: { dir: string; maxBytes: number; resolveTtlMs: number } | undefined;
    };

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
      const registry = await createOciStore({ ...location, credentials, tmpDir: config.spoolDir });
      if (!config.cache) return registry;
      const [{ ContentCache }, { createReplicaStore }] = await Promise.all([
        import("./content-cache.js"),
        import("./replica-store.js"),
      ]);
      const keysDir = join(config.cache.dir, "keys");
      await mkdir(keysDir, { recursive: true });
      const cache = await ContentCache.open({ dir: config.cache.dir, maxBytes: config.cache.maxBytes, log });
      return createReplicaStore(registry, { cache, resolveTtlMs: config.cache.resolveTtlMs, keysDir, log });
    }
  }
}
