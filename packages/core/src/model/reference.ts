import { Code, PluginError } from "../errors/plugin-error.js";
import { DIGEST_PATTERN, type Digest } from "./artifact.js";
import { type BuildKey, parsePluginSpec } from "./build-key.js";

/**
 * The string CompilePlugin answers with. It names the artifact and pins its
 * bytes:
 *
 *   atomix-plugin://<runtime.version>/<runtime.build_version>/<plugin.name>@<plugin.version>@sha256:<64 hex>
 *
 * e.g. `atomix-plugin://1.4.0/node20/@acme/driver@1.2.0@sha256:3b1f...`.
 * Runtime versions and build versions never contain `/`; the digest is what
 * follows the last `@`; the plugin is what lies between.
 */
export interface PluginReference {
  key: BuildKey;
  digest: Digest;
}

const SCHEME = "atomix-plugin://";

export function formatReference(reference: PluginReference): string {
  const { runtime, plugin } = reference.key;
  return `${SCHEME}${runtime.version}/${runtime.buildVersion}/${plugin.name}@${plugin.version}@${reference.digest}`;
}

export function parseReference(text: string): PluginReference {
  const bad = () =>
    new PluginError(
      Code.InvalidArgument,
      `"${text}" is not a plugin reference (${SCHEME}V/B/name@version@sha256:...)`,
    );
  if (!text.startsWith(SCHEME)) throw bad();
  const rest = text.slice(SCHEME.length);
  const at = rest.lastIndexOf("@");
  const digest = rest.slice(at + 1);
  const [version, buildVersion, ...pluginParts] = rest.slice(0, at).split("/");
  if (at < 0 || !DIGEST_PATTERN.test(digest) || !version || !buildVersion || pluginParts.length === 0) {
    throw bad();
  }
  const plugin = parsePluginSpec(pluginParts.join("/"));
  return { key: { runtime: { version, buildVersion }, plugin }, digest: digest as Digest };
}
