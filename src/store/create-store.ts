import type { ArtifactStore } from "./artifact-store.js";
import { createFsStore } from "./fs-store.js";

/** Which store to use; `fs` is the embedded default. */
export type StoreConfig = { kind: "fs"; dir: string };

export function createStore(config: StoreConfig): Promise<ArtifactStore> {
  switch (config.kind) {
    case "fs":
      return createFsStore({ dir: config.dir });
  }
}
