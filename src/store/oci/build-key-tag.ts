import { type BuildKey, buildKeyId } from "atomix-plugins-core/model/build-key";

/** Characters of the readable part of a tag; the hash makes up the rest. */
const READABLE_MAX = 95;
/** Hex characters of the key's hash in a tag: 128 bits. */
const HASH_HEX = 32;

/**
 * The OCI tag of a build key. Tags must match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
 * while keys hold `@`, `/`, `+` and up to 4 × 256 bytes, so a tag is
 *
 *   <readable>-<first 32 hex of buildKeyId(key)>
 *
 * where `<readable>` is `<plugin name>_<plugin version>_<runtime version>_<build
 * version>`, without a scoped name's leading `@`, with every other character
 * outside `[a-zA-Z0-9._-]` replaced by `-`, cut to 95 characters. The hash alone identifies the key (buildKeyId is the
 * sha256 of the four fields, the same id the filesystem store names its
 * index files by); the readable part is only there so that people browsing
 * the registry see what a tag holds. Example: `@acme/driver@1.2.0` for runtime
 * `1.0.0`/`node20` → `acme-driver_1.2.0_1.0.0_node20-<32 hex>`. The full key is
 * also in the manifest's annotations, and the store checks it on every read.
 */
export function buildKeyTag(key: BuildKey): string {
  const readable = readableKey(key, READABLE_MAX);
  // A tag's first character may not be '.' or '-'; '_' is allowed.
  const head = /^[a-zA-Z0-9_]/.test(readable) ? readable : `_${readable.slice(0, READABLE_MAX - 1)}`;
  return `${head}-${buildKeyId(key).slice(0, HASH_HEX)}`;
}

/** Whether a tag has the shape buildKeyTag gives; other tags in the repository are ignored. */
export function isBuildKeyTag(tag: string): boolean {
  return /^[a-zA-Z0-9_][a-zA-Z0-9._-]*-[0-9a-f]{32}$/.test(tag) && tag.length <= 128;
}

/**
 * What every tag of plugin `name` starts with, for narrowing a tag list
 * before fetching manifests; undefined when the name alone fills the
 * readable part, which then says nothing certain.
 */
export function readableTagPrefix(name: string): string | undefined {
  const prefix = `${name.replace(/^@/, "").replace(/[^a-zA-Z0-9._-]/g, "-")}_`;
  if (prefix.length >= READABLE_MAX || !/^[a-zA-Z0-9_]/.test(prefix)) return undefined;
  return prefix;
}

/**
 * The part of a tag people read: `<plugin name>_<plugin version>_<runtime
 * version>_<build version>`, without a scoped name's leading `@`, every
 * character a tag may not hold replaced by `-`, cut to `max` characters.
 */
export function readableKey(key: BuildKey, max: number): string {
  return [
    key.plugin.name.replace(/^@/, ""),
    key.plugin.version,
    key.runtime.version,
    key.runtime.buildVersion,
  ]
    .join("_")
    .replace(/[^a-zA-Z0-9._-]/g, "-")
    .slice(0, max);
}
