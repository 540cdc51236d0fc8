import type { Manifest } from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";

/** A store manifest as the admin API sends it. */
export function toManifestMessage(manifest: ArtifactManifest, heldHere = true): Manifest {
  return {
    runtime: { version: manifest.key.runtime.version, buildVersion: manifest.key.runtime.buildVersion },
    plugin: { name: manifest.key.plugin.name, version: manifest.key.plugin.version },
    digest: manifest.digest,
    size: manifest.size,
    mediaType: manifest.mediaType,
    createdAt: manifest.createdAt,
    annotations: { ...manifest.annotations },
    heldHere,
  };
}
