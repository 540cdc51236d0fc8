import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import {
  checkRuntimeVersion,
  parseReleaseIndex,
  RUNTIME_RELEASE_LIMITS,
  type RuntimeReleaseSummary,
  releaseIndexBytes,
} from "atomix-plugins-core/model/runtime-release";
import { settle } from "../fs-runtime-release-store.js";
import { isRunning } from "../process-alive.js";
import type { RuntimeReleaseStore, StagedRuntimeRelease } from "../runtime-release-store.js";
import { type OciImageManifest, MEDIA_TYPES as PLUGIN_MEDIA_TYPES } from "./oci-manifest.js";
import { OciObjects, sha256 } from "./oci-objects.js";
import type { RegistryClient } from "./registry-client.js";

export const RUNTIME_MEDIA_TYPES = {
  /** The `artifactType` of a runtime release's manifest. */
  artifact: "application/vnd.atomix.runtime.v1",
  /** Its config: the release index, whose digest is the release's. */
  index: "application/vnd.atomix.runtime.index.v1+json",
  file: "application/octet-stream",
} as const;

const ANNOTATION = {
  version: "dev.atomix.runtime.version",
  toolchain: "dev.atomix.runtime.toolchain",
  description: "dev.atomix.runtime.description",
  buildVersions: "dev.atomix.runtime.build-versions",
  fileCount: "dev.atomix.runtime.file-count",
  size: "dev.atomix.runtime.size",
  created: "org.opencontainers.image.created",
  title: "org.opencontainers.image.title",
} as const;

const TAG_PREFIX = "atomix-runtime_";

/**
 * The tag of runtime `version`: `atomix-runtime_<version>_<16 hex>`, the
 * version with characters outside the tag grammar replaced and the hash of
 * the exact version after it. It never has the shape of a build key's tag
 * (those end in `-<32 hex>`), so artifact listings skip it without a fetch.
 */
export function runtimeReleaseTag(version: string): string {
  const readable = version.replace(/[^a-zA-Z0-9._-]/g, "-").slice(0, 80);
  return `${TAG_PREFIX}${readable}_${sha256(version).slice("sha256:".length, "sha256:".length + 16)}`;
}

/**
 * Runtime releases in the artifacts' OCI repository: one image manifest per
 * release (artifactType `application/vnd.atomix.runtime.v1`), its config the
 * release index (so the config's digest is the release's), one layer per
 * distinct file, annotated with its path; tagged by version. `oras`,
 * `skopeo` or `crane` list and mirror it with the artifacts. Opened
 * releases are downloaded into `cacheDir`, each file checked against the
 * index, and kept: a release never changes.
 */
export async function createOciRuntimeReleaseStore(options: {
  client: RegistryClient;
  cacheDir: string;
}): Promise<RuntimeReleaseStore> {
  const objects = new OciObjects(options.client);
  // Replicas may share a data directory (as they share the spool): each
  // stages in a folder named by its process, and removes at start only the
  // folders of processes that are gone (a crash mid-upload or mid-download).
  const stagingRoot = join(options.cacheDir, "staging");
  const stagingDir = join(stagingRoot, String(process.pid));
  const releasesDir = join(options.cacheDir, "releases");
  await mkdir(releasesDir, { recursive: true });
  await mkdir(stagingRoot, { recursive: true });
  for (const leftover of await readdir(stagingRoot)) {
    const pid = Number(leftover);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isRunning(pid)) continue;
    await rm(join(stagingRoot, leftover), { recursive: true, force: true });
  }
  await mkdir(stagingDir, { recursive: true });
  const opening = new Map<string, Promise<string>>();
  /** Releases read by tag: a version's tag never moves, so each is fetched once per process. */
  const listed = new Map<string, RuntimeReleaseSummary>();

  async function get(version: string, signal?: AbortSignal): Promise<RuntimeReleaseSummary | undefined> {
    const tag = runtimeReleaseTag(checkRuntimeVersion(version));
    const fetched = await objects.getManifest(tag, signal);
    if (!fetched) return undefined;
    const release = fromManifest(fetched.oci, `tag ${tag} of ${objects.where}`);
    if (release.version !== version) {
      throw new PluginError(
        Code.DataLoss,
        `tag ${tag} of ${objects.where} holds runtime ${release.version}, not ${version}`,
      );
    }
    return release;
  }

  async function download(release: RuntimeReleaseSummary, signal?: AbortSignal): Promise<string> {
    const target = join(releasesDir, release.digest.slice("sha256:".length));
    if (
      await stat(target).then(
        () => true,
        () => false,
      )
    )
      return target;
    const indexBytes = await objects.getBlob(release.digest, 4 * 1024 * 1024, signal);
    const index = parseReleaseIndex(indexBytes, `runtime ${release.version} in ${objects.where}`);
    if (index.version !== release.version) {
      throw new PluginError(
        Code.DataLoss,
        `the index of runtime ${release.version} in ${objects.where} names ${index.version}`,
      );
    }
    const tmp = join(stagingDir, randomUUID());
    try {
      for (const file of index.files) {
        const bytes = await objects.getBlob(file.digest, RUNTIME_RELEASE_LIMITS.maxFileBytes, signal);
        if (bytes.byteLength !== file.size) {
          throw new PluginError(
            Code.DataLoss,
            `${file.path} of runtime ${release.version} has the wrong size`,
          );
        }
        const path = join(tmp, ...file.path.split("/"));
        await mkdir(dirname(path), { recursive: true });
        await writeFile(path, bytes, { mode: file.executable ? 0o755 : 0o644, flag: "wx" });
      }
      await rename(tmp, target).catch(async (error: NodeJS.ErrnoException) => {
        if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") throw error;
      });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return target;
  }

  return {
    stagingDir,

    async putRuntimeRelease(staged: StagedRuntimeRelease, putOptions) {
      const signal = putOptions?.signal;
      const { version } = staged.index;
      const existing = await get(version, signal);
      if (existing) return settle(existing, staged);
      const layers = new Map<string, { path: string; size: number }>();
      for (const file of staged.index.files) {
        if (layers.has(file.digest)) continue;
        layers.set(file.digest, { path: file.path, size: file.size });
        const bytes = await readFile(join(staged.dir, ...file.path.split("/")));
        await objects.pushBlob(file.digest, bytes, signal);
      }
      const indexBytes = releaseIndexBytes(staged.index);
      await objects.pushBlob(staged.digest, indexBytes, signal);
      const release: RuntimeReleaseSummary = {
        version,
        toolchain: staged.index.toolchain,
        digest: staged.digest,
        registeredAt: new Date().toISOString(),
        fileCount: staged.index.files.length,
        size: staged.index.files.reduce((sum, file) => sum + file.size, 0),
        description: staged.description,
        buildVersions: staged.buildVersions,
      };
      const manifest: OciImageManifest = {
        schemaVersion: 2,
        mediaType: PLUGIN_MEDIA_TYPES.imageManifest,
        artifactType: RUNTIME_MEDIA_TYPES.artifact,
        config: { mediaType: RUNTIME_MEDIA_TYPES.index, digest: staged.digest, size: indexBytes.byteLength },
        layers: [...layers].map(([digest, file]) => ({
          mediaType: RUNTIME_MEDIA_TYPES.file,
          digest,
          size: file.size,
          annotations: { [ANNOTATION.title]: file.path },
        })),
        annotations: {
          [ANNOTATION.version]: version,
          [ANNOTATION.toolchain]: release.toolchain,
          [ANNOTATION.description]: release.description,
          [ANNOTATION.buildVersions]: release.buildVersions.join(","),
          [ANNOTATION.fileCount]: String(release.fileCount),
          [ANNOTATION.size]: String(release.size),
          [ANNOTATION.created]: release.registeredAt,
        },
      };
      // Registering twice at once through two replicas: the later check sees the first.
      const raced = await get(version, signal);
      if (raced) return settle(raced, staged);
      await objects.putManifest(runtimeReleaseTag(version), manifest, signal);
      return { release, created: true };
    },

    getRuntimeRelease: (version, getOptions) => get(version, getOptions?.signal),

    async listRuntimeReleases() {
      const tags = await objects.listTags((tag) => tag.startsWith(TAG_PREFIX));
      // A tag removed (through any replica) is forgotten, so that the version registered again is read afresh.
      for (const tag of listed.keys()) if (!tags.includes(tag)) listed.delete(tag);
      const found: RuntimeReleaseSummary[] = [];
      for (const tag of tags) {
        const known = listed.get(tag);
        if (known) {
          found.push(known);
          continue;
        }
        const fetched = await objects.getManifest(tag);
        if (!fetched) continue;
        try {
          const release = fromManifest(fetched.oci, `tag ${tag} of ${objects.where}`);
          if (runtimeReleaseTag(release.version) !== tag) continue; // a tag ours would not be
          listed.set(tag, release);
          found.push(release);
        } catch {
          // not a release of ours: not listed
        }
      }
      return found;
    },

    async removeRuntimeRelease(version) {
      const tag = runtimeReleaseTag(checkRuntimeVersion(version));
      const fetched = await objects.getManifest(tag);
      if (!fetched) return undefined;
      const release = fromManifest(fetched.oci, `tag ${tag} of ${objects.where}`);
      // Deleting the manifest by digest removes its tag; the registry's own
      // collector frees the files' blobs. A registry without deletes answers 405.
      const response = await options.client.request("DELETE", `manifests/${fetched.digest}`, {
        expect: [202, 404],
      });
      await response.arrayBuffer();
      listed.delete(tag);
      return release;
    },

    openRuntimeRelease(release, openOptions) {
      let pending = opening.get(release.digest);
      if (!pending) {
        pending = download(release, openOptions?.signal).finally(() => opening.delete(release.digest));
        opening.set(release.digest, pending);
      }
      return pending;
    },
  };
}

function fromManifest(oci: OciImageManifest, where: string): RuntimeReleaseSummary {
  const annotations = oci.annotations ?? {};
  const digest = oci.config?.digest;
  if (
    oci.artifactType !== RUNTIME_MEDIA_TYPES.artifact ||
    typeof digest !== "string" ||
    !DIGEST_PATTERN.test(digest)
  ) {
    throw new PluginError(Code.DataLoss, `${where} is not an atomix runtime release`);
  }
  const version = annotations[ANNOTATION.version] ?? "";
  checkRuntimeVersion(version);
  return {
    version,
    toolchain: annotations[ANNOTATION.toolchain] ?? "",
    digest: digest as Digest,
    registeredAt: annotations[ANNOTATION.created] ?? "",
    fileCount: Number(annotations[ANNOTATION.fileCount] ?? 0) || 0,
    size: Number(annotations[ANNOTATION.size] ?? 0) || 0,
    description: annotations[ANNOTATION.description] ?? "",
    buildVersions: (annotations[ANNOTATION.buildVersions] ?? "").split(",").filter((v) => v !== ""),
  };
}
