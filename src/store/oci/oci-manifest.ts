import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { type ArtifactManifest, DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";

export const MEDIA_TYPES = {
  imageManifest: "application/vnd.oci.image.manifest.v1+json",
  /** The `artifactType` of every manifest this store writes. */
  artifact: "application/vnd.atomix.plugin.v1",
  empty: "application/vnd.oci.empty.v1+json",
} as const;

/** The OCI empty descriptor (`{}`): the config of an artifact that needs none. */
export const EMPTY_CONFIG = {
  mediaType: MEDIA_TYPES.empty,
  digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" as Digest,
  size: 2,
  data: "e30=",
} as const;
export const EMPTY_CONFIG_BYTES = Buffer.from("{}");

/** Manifest annotations the store writes itself; the rest are the artifact's own. */
export const KEY_ANNOTATIONS = {
  runtimeVersion: "dev.atomix.key.runtime.version",
  buildVersion: "dev.atomix.key.runtime.build-version",
  pluginName: "dev.atomix.key.plugin.name",
  pluginVersion: "dev.atomix.key.plugin.version",
  created: "org.opencontainers.image.created",
} as const;
const RESERVED = new Set<string>(Object.values(KEY_ANNOTATIONS));

/** The build key as a manifest's annotations carry it (artifacts and build records alike). */
export function keyAnnotations(key: BuildKey): Record<string, string> {
  return {
    [KEY_ANNOTATIONS.runtimeVersion]: key.runtime.version,
    [KEY_ANNOTATIONS.buildVersion]: key.runtime.buildVersion,
    [KEY_ANNOTATIONS.pluginName]: key.plugin.name,
    [KEY_ANNOTATIONS.pluginVersion]: key.plugin.version,
  };
}

/** The build key a manifest's annotations name, unchecked (missing fields are empty). */
export function keyFromAnnotations(annotations: Record<string, string>): BuildKey {
  return {
    runtime: {
      version: annotations[KEY_ANNOTATIONS.runtimeVersion] ?? "",
      buildVersion: annotations[KEY_ANNOTATIONS.buildVersion] ?? "",
    },
    plugin: {
      name: annotations[KEY_ANNOTATIONS.pluginName] ?? "",
      version: annotations[KEY_ANNOTATIONS.pluginVersion] ?? "",
    },
  };
}
const TITLE = "org.opencontainers.image.title";

export interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  data?: string;
}

export interface OciImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: OciDescriptor;
  layers: OciDescriptor[];
  annotations?: Record<string, string>;
}

/**
 * One artifact as an OCI image manifest (image-spec 1.1 artifact guidance):
 * `artifactType` ours, the empty config, one layer holding the artifact's
 * bytes with its media type, and in the manifest's annotations the build key,
 * the creation time and the artifact's own annotations.
 */
export function toOciManifest(manifest: ArtifactManifest): OciImageManifest {
  const annotations: Record<string, string> = {
    ...manifest.annotations,
    ...keyAnnotations(manifest.key),
    [KEY_ANNOTATIONS.created]: manifest.createdAt,
  };
  const title = `${manifest.key.plugin.name.replace(/^@/, "").replace(/\//g, "-")}-${manifest.key.plugin.version}`;
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.imageManifest,
    artifactType: MEDIA_TYPES.artifact,
    config: { mediaType: EMPTY_CONFIG.mediaType, digest: EMPTY_CONFIG.digest, size: EMPTY_CONFIG.size },
    layers: [
      {
        mediaType: manifest.mediaType,
        digest: manifest.digest,
        size: manifest.size,
        annotations: { [TITLE]: title },
      },
    ],
    annotations,
  };
}

/**
 * Reads back what toOciManifest wrote. `expected` is the key the tag was
 * looked up by: a manifest for another key (a tag written by someone else)
 * is refused rather than served.
 */
export function fromOciManifest(
  oci: OciImageManifest,
  expected: BuildKey | undefined,
  where: string,
): ArtifactManifest {
  const annotations = oci.annotations ?? {};
  const layer = oci.layers?.[0];
  if (oci.artifactType !== MEDIA_TYPES.artifact || !layer || oci.layers.length !== 1) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${where} is not an atomix plugin artifact (artifactType ${oci.artifactType ?? "none"}, ${oci.layers?.length ?? 0} layers)`,
    );
  }
  const key = keyFromAnnotations(annotations);
  if (
    expected &&
    (key.runtime.version !== expected.runtime.version ||
      key.runtime.buildVersion !== expected.runtime.buildVersion ||
      key.plugin.name !== expected.plugin.name ||
      key.plugin.version !== expected.plugin.version)
  ) {
    throw new PluginError(
      Code.DataLoss,
      `${where} holds ${formatBuildKey(key)}, not ${formatBuildKey(expected)}; remove the tag from the registry`,
    );
  }
  if (!DIGEST_PATTERN.test(layer.digest) || !Number.isSafeInteger(layer.size) || layer.size < 0) {
    throw new PluginError(Code.DataLoss, `${where} has a malformed layer descriptor`);
  }
  const own: Record<string, string> = {};
  for (const [name, value] of Object.entries(annotations)) if (!RESERVED.has(name)) own[name] = value;
  return {
    key,
    digest: layer.digest as Digest,
    size: layer.size,
    mediaType: layer.mediaType,
    createdAt: annotations[KEY_ANNOTATIONS.created] ?? "",
    annotations: own,
  };
}
