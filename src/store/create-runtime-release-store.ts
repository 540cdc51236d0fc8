import type { BuildRecordStore } from "./build-record-store.js";
import type { StoreConfig } from "./create-store.js";
import { createFsBuildRecordStore } from "./fs-build-record-store.js";
import { createFsRuntimeReleaseStore } from "./fs-runtime-release-store.js";
import { createOciBuildRecordStore } from "./oci/oci-build-record-store.js";
import { parseOciLocation } from "./oci/oci-location.js";
import { createOciRuntimeReleaseStore } from "./oci/oci-runtime-release-store.js";
import { RegistryClient } from "./oci/registry-client.js";
import { loadRegistryCredentials } from "./oci/registry-credentials.js";
import type { RuntimeReleaseStore } from "./runtime-release-store.js";

/**
 * The runtime releases' part of the store `config` names: in the embedded
 * store's data directory, or in the OCI repository beside the artifacts.
 * `cacheDir` is where an OCI store stages uploads and keeps the releases it
 * downloaded; the embedded store keeps everything in its own directory.
 */
export async function createRuntimeReleaseStore(
  config: StoreConfig,
  options: { cacheDir: string },
): Promise<RuntimeReleaseStore> {
  switch (config.kind) {
    case "fs":
      return createFsRuntimeReleaseStore({ dir: config.dir });
    case "upstream":
      // A tier builds nothing: releases it is given stay in its own data directory.
      return createFsRuntimeReleaseStore({ dir: config.dataDir });
    case "oci":
      return await createOciRuntimeReleaseStore({
        client: await registryClientOf(config),
        cacheDir: options.cacheDir,
      });
  }
}

/** The build records' part of the store `config` names. */
export async function createBuildRecordStore(
  config: StoreConfig,
  options: { maxRecords?: number } = {},
): Promise<BuildRecordStore> {
  switch (config.kind) {
    case "fs":
      return createFsBuildRecordStore({ dir: config.dir, ...options });
    case "upstream":
      return createFsBuildRecordStore({ dir: config.dataDir, ...options });
    case "oci":
      return createOciBuildRecordStore({ client: await registryClientOf(config), ...options });
  }
}

async function registryClientOf(config: Extract<StoreConfig, { kind: "oci" }>): Promise<RegistryClient> {
  const location = parseOciLocation(config.url);
  const credentials = await loadRegistryCredentials({
    host: new URL(location.origin).host,
    given: config.credentials,
    file: config.credentialsFile,
  });
  return new RegistryClient({ ...location, credentials });
}
