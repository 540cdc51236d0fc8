import { createHash } from "node:crypto";
import { Code, PluginError } from "../../errors/plugin-error.js";
import { DIGEST_PATTERN } from "../../model/artifact.js";
import { PROVENANCE } from "../../model/provenance.js";
import { EMPTY_CONFIG, MEDIA_TYPES, type OciDescriptor } from "./oci-manifest.js";
import { discard, type RegistryClient } from "./registry-client.js";

const INDEX = "application/vnd.oci.image.index.v1+json";
/** A provenance bundle the store reads back: the server writes a few KiB. */
const MAX_BUNDLE_BYTES = 1024 * 1024;

interface OciIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: (OciDescriptor & { artifactType?: string })[];
}

/** What the referrers code needs of the store around it. */
export interface ReferrerDeps {
  client: RegistryClient;
  /** Uploads `bytes` as blob `digest` unless the registry holds it. */
  ensureBlob(digest: string, bytes: Buffer, signal: AbortSignal | undefined): Promise<void>;
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
export function createReferrers(deps: ReferrerDeps) {
  const { client } = deps;
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
    const response = await client.request("GET", `manifests/${fallbackTag(subject)}`, {
      headers: { accept: INDEX },
      expect: [200, 404],
      signal,
    });
    if (response.status === 404) {
      await discard(response);
      return undefined;
    }
    const bytes = Buffer.from(await response.arrayBuffer());
    try {
      const index = JSON.parse(bytes.toString("utf8")) as OciIndex;
      if (!Array.isArray(index.manifests)) return undefined;
      return { index, digest: sha256(bytes) };
    } catch {
      return undefined; // not an index: rewritten by the next push
    }
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
      if (found) await deleteManifest(found.digest);
      return;
    }
    const body = JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: entries });
    const response = await client.request("PUT", `manifests/${fallbackTag(subject)}`, {
      headers: { "content-type": INDEX },
      body,
      expect: [201],
      signal,
    });
    await discard(response);
  }

  async function deleteManifest(digest: string): Promise<void> {
    await client
      .request("DELETE", `manifests/${digest}`, { expect: [202, 404] })
      .then(discard)
      .catch(() => {}); // best effort: a leftover is only storage
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
      await deps.ensureBlob(layer.digest, bundle, signal);
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
      const response = await client.request("GET", `manifests/${newest.digest}`, {
        headers: { accept: MEDIA_TYPES.imageManifest },
        expect: [200, 404],
        signal,
      });
      if (response.status === 404) {
        await discard(response);
        return undefined;
      }
      const manifest = await client.json<{ layers?: OciDescriptor[] }>(response, "a provenance manifest");
      const layer = manifest.layers?.[0];
      if (!layer || !DIGEST_PATTERN.test(layer.digest) || !(layer.size <= MAX_BUNDLE_BYTES)) {
        throw new PluginError(Code.DataLoss, `the provenance manifest ${newest.digest} is malformed`);
      }
      const blob = await client.request("GET", `blobs/${layer.digest}`, { expect: [200], signal });
      const bytes = Buffer.from(await blob.arrayBuffer());
      if (bytes.byteLength > MAX_BUNDLE_BYTES || sha256(bytes) !== layer.digest) {
        throw new PluginError(Code.DataLoss, `the provenance blob ${layer.digest} does not match its digest`);
      }
      return bytes;
    },

    /** Deletes every provenance referrer of `subject`; returns their bundle blobs for garbage collection. */
    async detachAll(subject: string): Promise<OciDescriptor[]> {
      const referrers = await list(subject).catch(() => [] as OciDescriptor[]);
      const blobs: OciDescriptor[] = [];
      for (const referrer of referrers) {
        const response = await client
          .request("GET", `manifests/${referrer.digest}`, {
            headers: { accept: MEDIA_TYPES.imageManifest },
            expect: [200, 404],
          })
          .catch(() => undefined);
        if (response?.status === 200) {
          const manifest = await client
            .json<{ layers?: OciDescriptor[] }>(response, "a provenance manifest")
            .catch(() => ({ layers: [] }));
          blobs.push(...(manifest.layers ?? []));
        } else if (response) await discard(response);
        await deleteManifest(referrer.digest);
      }
      await updateFallback(subject, () => []).catch(() => {});
      return blobs;
    },
  };
}

function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}
