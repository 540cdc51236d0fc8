import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { ContentCache } from "../src/store/content-cache.js";
import { createFsStore } from "../src/store/fs-store.js";
import { parseOciLocation } from "../src/store/oci/oci-location.js";
import { createOciStore } from "../src/store/oci/oci-store.js";
import { createReplicaStore } from "../src/store/replica-store.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { describeStore } from "./store-suite.js";

describeStore("fs", async () => {
  const dir = await mkdtemp(join(tmpdir(), "atomix-fs-store-"));
  return { store: await createFsStore({ dir }), dispose: () => rm(dir, { recursive: true, force: true }) };
});

let registry: RegistryProcess;
let repositories = 0;
before(async () => {
  registry = await startRegistry();
});
after(async () => {
  await registry.dispose();
});

describeStore("oci", async () => {
  repositories += 1;
  // A small upload chunk, so that the suite's artifacts go through both
  // monolithic and chunked uploads.
  const store = await createOciStore({
    ...parseOciLocation(registry.storeUrl(`contract/store-${repositories}`)),
    uploadChunkSize: 16 * 1024,
  });
  return { store, dispose: async () => {} };
});

describeStore("oci with a content cache", async () => {
  repositories += 1;
  const dir = await mkdtemp(join(tmpdir(), "atomix-replica-store-"));
  const registryStore = await createOciStore({
    ...parseOciLocation(registry.storeUrl(`contract/replica-${repositories}`)),
    uploadChunkSize: 16 * 1024,
  });
  await mkdir(join(dir, "keys"));
  const cache = await ContentCache.open({ dir, maxBytes: 64 * 1024 * 1024 });
  const store = createReplicaStore(registryStore, { cache, resolveTtlMs: 2_000, keysDir: join(dir, "keys") });
  return { store, dispose: () => rm(dir, { recursive: true, force: true }) };
});
