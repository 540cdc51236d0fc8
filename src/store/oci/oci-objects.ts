import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { Digest } from "atomix-plugins-core/model/artifact";
import { MEDIA_TYPES, type OciImageManifest } from "./oci-manifest.js";
import { discard, type RegistryClient } from "./registry-client.js";
import { readTagList } from "./tag-list-reader.js";

/** Pauses of 50, 200 and 800 ms: the link race lasts one write of a few bytes. */
const BLOB_UNKNOWN_RETRIES = 3;
const BLOB_UNKNOWN_DELAY_MS = 50;

/**
 * Small documents of our own in the artifacts' repository (runtime releases,
 * build records): manifests by tag, blobs whole in memory, each checked
 * against its digest on the way in, since the registry is trusted with
 * bytes, not with what they say.
 */
export class OciObjects {
  readonly where: string;
  constructor(readonly client: RegistryClient) {
    this.where = `${client.origin}/${client.repository}`;
  }

  async getManifest<Document = OciImageManifest>(
    reference: string,
    signal?: AbortSignal,
    accept: string = MEDIA_TYPES.imageManifest,
  ): Promise<{ oci: Document; digest: Digest } | undefined> {
    const response = await this.client.request("GET", `manifests/${reference}`, {
      headers: { accept },
      expect: [200, 404],
      signal,
    });
    if (response.status === 404) {
      await discard(response);
      return undefined;
    }
    const bytes = Buffer.from(await response.arrayBuffer());
    if (bytes.byteLength > 4 * 1024 * 1024) {
      throw new PluginError(Code.DataLoss, `the manifest ${reference} in ${this.where} is larger than 4 MiB`);
    }
    try {
      return { oci: JSON.parse(bytes.toString("utf8")) as Document, digest: sha256(bytes) };
    } catch (error) {
      throw new PluginError(Code.DataLoss, `the manifest ${reference} in ${this.where} is not JSON`, {
        cause: error,
      });
    }
  }

  /**
   * Puts a manifest under `tag`; its digest. A registry that answers that a
   * blob the manifest names is unknown, just after that blob was pushed, is
   * asked again after a pause: Distribution's filesystem driver rewrites a
   * repository's blob link in place, so a manifest checked while another
   * replica links the same blob (two replicas registering one runtime
   * release at start, or storing one artifact) finds the link empty for a
   * moment. `reupload`, if given, runs before the first retry, for a blob
   * that a garbage collection unlinked after it was checked.
   */
  async putManifest(
    tag: string,
    manifest: object,
    signal?: AbortSignal,
    mediaType: string = MEDIA_TYPES.imageManifest,
    reupload?: () => Promise<void>,
  ): Promise<Digest> {
    const body = JSON.stringify(manifest);
    for (let attempt = 0; ; attempt++) {
      const response = await this.client.request("PUT", `manifests/${tag}`, {
        headers: { "content-type": mediaType },
        body,
        expect: [201, 400],
        signal,
      });
      if (response.status === 201) {
        await discard(response);
        return sha256(body);
      }
      const text = await response.text();
      const blobUnknown = text.includes("BLOB_UNKNOWN");
      if (blobUnknown && attempt < BLOB_UNKNOWN_RETRIES) {
        await delay(BLOB_UNKNOWN_DELAY_MS * 4 ** attempt, undefined, { signal });
        if (attempt === 0) await reupload?.();
        continue;
      }
      // A blob still unknown is the registry's state, which may pass; any
      // other refusal is of the manifest itself.
      throw new PluginError(
        blobUnknown ? Code.Unavailable : Code.Internal,
        `the OCI registry ${this.client.origin} refused the manifest ${tag}: ${text.slice(0, 300)}`,
      );
    }
  }

  async deleteManifest(digest: string): Promise<void> {
    await this.client
      .request("DELETE", `manifests/${digest}`, { expect: [202, 404] })
      .then(discard)
      .catch(() => {});
  }

  /** Uploads `bytes` as blob `digest` unless the registry holds it. */
  async pushBlob(digest: Digest, bytes: Buffer, signal?: AbortSignal): Promise<void> {
    const head = await this.client.request("HEAD", `blobs/${digest}`, { expect: [200, 404], signal });
    await discard(head);
    if (head.status === 200) return;
    const started = await this.client.request("POST", "blobs/uploads/", { expect: [202], signal });
    await discard(started);
    const location = started.headers.get("location");
    if (!location) {
      throw new PluginError(
        Code.Unavailable,
        `the OCI registry ${this.client.origin} started an upload without a Location`,
      );
    }
    const url = new URL(location, this.client.origin);
    url.searchParams.set("digest", digest);
    const done = await this.client.request("PUT", url.toString(), {
      headers: { "content-type": "application/octet-stream" },
      body: bytes,
      expect: [201],
      signal,
    });
    await discard(done);
  }

  /** Blob `digest`, whole, at most `maxBytes`, checked against its digest. */
  async getBlob(digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    const response = await this.client.request("GET", `blobs/${digest}`, { expect: [200, 404], signal });
    if (response.status === 404 || !response.body) {
      await discard(response);
      throw new PluginError(Code.NotFound, `the blob ${digest} is missing from ${this.where}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const reader = response.body.getReader();
    try {
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        size += next.value.byteLength;
        if (size > maxBytes) {
          throw new PluginError(
            Code.DataLoss,
            `the blob ${digest} in ${this.where} is larger than ${maxBytes} bytes`,
          );
        }
        chunks.push(Buffer.from(next.value));
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
    const bytes = Buffer.concat(chunks, size);
    if (sha256(bytes) !== digest) {
      throw new PluginError(Code.DataLoss, `the blob ${digest} in ${this.where} does not hash to its digest`);
    }
    return bytes;
  }

  /**
   * Up to `n` tags after `after` in the registry's (lexical) order, sorted.
   * Asks the registry for that page (`n`, `last`) and keeps only that page of
   * what it answers, reading the body as it arrives: a registry that ignores
   * the parameters and sends every tag still costs memory for `n` tags only.
   */
  async tagsAfter(after: string | undefined, n: number, signal?: AbortSignal): Promise<string[]> {
    const last: Record<string, string> = after !== undefined ? { last: after } : {};
    let response = await this.client.request(
      "GET",
      `tags/list?${new URLSearchParams({ n: String(n), ...last })}`,
      {
        expect: [200, 400, 404],
        signal,
      },
    );
    if (response.status === 400) {
      // A registry whose own maximum is below `n` (Distribution 3's tags.maxtags)
      // refuses it: asked again without `n`, it sends what it likes.
      await discard(response);
      response = await this.client.request("GET", `tags/list?${new URLSearchParams(last)}`, {
        expect: [200, 404],
        signal,
      });
    }
    if (response.status === 404) {
      await discard(response);
      return [];
    }
    const page: string[] = [];
    await readTagList(
      response.body,
      (tag) => {
        if (after !== undefined && tag <= after) return;
        if (page.length === n && tag >= (page[n - 1] as string)) return;
        // Insertion into the sorted page: a registry's answer is sorted already, so this is the end.
        let at = page.length;
        while (at > 0 && (page[at - 1] as string) > tag) at -= 1;
        if (page[at - 1] === tag) return;
        page.splice(at, 0, tag);
        if (page.length > n) page.pop();
      },
      `the OCI registry ${this.client.origin}`,
    );
    return page;
  }

  /**
   * Every tag of the repository that `keep` accepts (all by default; none
   * before its first push), read as the body arrives: a store of many
   * artifacts costs memory for the tags kept only.
   */
  async listTags(keep: (tag: string) => boolean = () => true): Promise<string[]> {
    const tags: string[] = [];
    let target: string | undefined = "tags/list?n=1000";
    while (target) {
      const response: Response = await this.client.request("GET", target, { expect: [200, 404] });
      if (response.status === 404) {
        await discard(response);
        return tags;
      }
      await readTagList(
        response.body,
        (tag) => {
          if (keep(tag)) tags.push(tag);
        },
        `the OCI registry ${this.client.origin}`,
      );
      target = nextLink(response.headers.get("link"), this.client.origin);
    }
    return tags;
  }
}

export function sha256(bytes: Uint8Array | string): Digest {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * The `rel="next"` target of a tag list's Link header, absolute. (Distribution
 * 2.8 sends every tag in one page; newer registries paginate.)
 */
export function nextLink(link: string | null, origin: string): string | undefined {
  const match = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
  if (!match?.[1]) return undefined;
  return new URL(match[1], origin).toString();
}
