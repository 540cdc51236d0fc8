import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { DIGEST_PATTERN } from "atomix-plugins-core/model/artifact";
import { PROVENANCE } from "atomix-plugins-core/model/provenance";
import { EMPTY_CONFIG, MEDIA_TYPES, type OciDescriptor } from "./oci-manifest.js";
import { type OciObjects, sha256 } from "./oci-objects.js";
import { discard } from "./registry-client.js";

const INDEX = "application/vnd.oci.image.index.v1+json";
/** A provenance bundle the store reads back: the server writes a few KiB. */
const MAX_BUNDLE_BYTES = 1024 * 1024;

interface OciIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: (OciDescriptor & { artifactType?: string })[];
}

/**
 * Provenance bundles as OCI referrers (image-spec 1.1, distribution-spec
 * 1.1): a manifest whose `subject` is the artifact's manifest, whose
 * `artifactType` is the Sigstore bundle media type, and whose one layer is
 * the bundle, so `oras discover` lists it and `oras copy -r` carries it to a
 * mirror. Registries with the referrers API index it themselves (they answer
 * the push with `OCI-Subject`); for the others (CNCF Distribution 2.x) the
 * store keeps the fallback tag `sha256-<hex of the subject>`, an index of the
 * subject's referrers, as the distribution spec prescribes for clients.
 */
export function createReferrers(objects: OciObjects) {
  const { client } = objects;
  const fallbackTag = (subject: string) => subject.replace(":", "-");

  /** The referrers of `subject` with the bundle artifact type, newest last. */
  async function list(subject: string, signal?: AbortSignal): Promise<OciDescriptor[]> {
    const api = await client.request(
      "GET",
      `referrers/${subject}?artifactType=${encodeURIComponent(PROVENANCE.bundleMediaType)}`,
      { headers: { accept: INDEX }, expect: [200, 404], signal },
    );
    let index: OciIndex | undefined;
    if (api.status === 200 && (api.headers.get("content-type") ?? "").startsWith(INDEX)) {
      index = await client.json<OciIndex>(api, "a referrers index");
    } else {
      await discard(api);
      index = await fetchFallback(subject, signal).then((found) => found?.index);
    }
    return (index?.manifests ?? []).filter(
      (d) => d.artifactType === PROVENANCE.bundleMediaType && DIGEST_PATTERN.test(d.digest),
    );
  }

  async function fetchFallback(
    subject: string,
    signal?: AbortSignal,
  ): Promise<{ index: OciIndex; digest: string } | undefined> {
    const found = await objects
      .getManifest<OciIndex>(fallbackTag(subject), signal, INDEX)
      .catch((error: unknown) => {
        // Not an index: rewritten by the next push.
        if (error instanceof PluginError && error.code === Code.DataLoss) return undefined;
        throw error;
      });
    if (!found || !Array.isArray(found.oci.manifests)) return undefined;
    return { index: found.oci, digest: found.digest };
  }

  /** Rewrites the fallback tag of `subject` with `change` applied to its entries. */
  async function updateFallback(
    subject: string,
    change: (entries: OciIndex["manifests"]) => OciIndex["manifests"],
    signal?: AbortSignal,
  ): Promise<void> {
    const found = await fetchFallback(subject, signal);
    const entries = change(found?.index.manifests ?? []);
    if (entries.length === 0) {
      if (found) await objects.deleteManifest(found.digest);
      return;
    }
    await objects.putManifest(
      fallbackTag(subject),
      { schemaVersion: 2, mediaType: INDEX, manifests: entries },
      signal,
      INDEX,
    );
  }

  return {
    /**
     * Stores `bundle` as a referrer of the manifest `subject` (which need not
     * exist yet: the artifact's manifest is pushed after its provenance).
     */
    async attach(subject: OciDescriptor, bundle: Buffer, created: string, signal?: AbortSignal) {
      const layer = {
        mediaType: PROVENANCE.bundleMediaType,
        digest: sha256(bundle),
        size: bundle.byteLength,
      };
      await objects.pushBlob(layer.digest, bundle, signal);
      const manifest = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.imageManifest,
        artifactType: PROVENANCE.bundleMediaType,
        config: { mediaType: EMPTY_CONFIG.mediaType, digest: EMPTY_CONFIG.digest, size: EMPTY_CONFIG.size },
        layers: [layer],
        subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
        annotations: { "org.opencontainers.image.created": created },
      };
      const body = Buffer.from(JSON.stringify(manifest));
      const digest = sha256(body);
      const response = await client.request("PUT", `manifests/${digest}`, {
        headers: { "content-type": MEDIA_TYPES.imageManifest },
        body,
        expect: [201],
        signal,
      });
      await discard(response);
      if (response.headers.get("oci-subject") === null) {
        const entry = {
          mediaType: MEDIA_TYPES.imageManifest,
          digest,
          size: body.byteLength,
          artifactType: PROVENANCE.bundleMediaType,
          annotations: manifest.annotations,
        };
        await updateFallback(
          subject.digest,
          (entries) => [...entries.filter((e) => e.digest !== digest), entry],
          signal,
        );
      }
    },

    /** The newest provenance bundle attached to `subject`, checked against its digest. */
    async read(subject: string, signal?: AbortSignal): Promise<Buffer | undefined> {
      const referrers = await list(subject, signal);
      const newest = referrers.at(-1);
      if (!newest) return undefined;
      const manifest = await objects.getManifest(newest.digest, signal);
      const layer = manifest?.oci.layers?.[0];
      if (!manifest) return undefined;
      if (!layer || !DIGEST_PATTERN.test(layer.digest)) {
        throw new PluginError(Code.DataLoss, `the provenance manifest ${newest.digest} is malformed`);
      }
      return objects.getBlob(layer.digest, MAX_BUNDLE_BYTES, signal);
    },

    /** Deletes every provenance referrer of `subject`; returns their bundle blobs for garbage collection. */
    async detachAll(subject: string): Promise<OciDescriptor[]> {
      const referrers = await list(subject).catch(() => [] as OciDescriptor[]);
      const blobs: OciDescriptor[] = [];
      for (const referrer of referrers) {
        const manifest = await objects.getManifest(referrer.digest).catch(() => undefined);
        blobs.push(...(manifest?.oci.layers ?? []));
        await objects.deleteManifest(referrer.digest);
      }
      await updateFallback(subject, () => []).catch(() => {});
      return blobs;
    },
  };
}
