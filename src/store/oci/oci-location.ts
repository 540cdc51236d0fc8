import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/** Where an OCI store lives: the registry's origin and one repository in it. */
export interface OciLocation {
  /** `http://host:port` or `https://host[:port]`, no trailing slash. */
  readonly origin: string;
  /** Repository name per the distribution spec, e.g. `atomix/plugins`. */
  readonly repository: string;
}

/** The repository-name grammar of the distribution spec. */
const REPOSITORY = /^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$/;

const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

/**
 * Parses a store URL as written by a person:
 *
 *   oci://host[:port]/repository        https, except plain http for a loopback
 *                                       host (localhost, 127.0.0.1, ::1), as the
 *                                       docker and oras tools do
 *   oci+https://host[:port]/repository  always https
 *   oci+http://host[:port]/repository   always plain http (a registry on a
 *                                       trusted network without TLS)
 *
 * Throws INVALID_ARGUMENT naming what is wrong.
 */
export function parseOciLocation(url: string): OciLocation {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid(url, "is not a URL; write oci://host:port/repository");
  }
  const scheme = parsed.protocol.replace(/:$/, "");
  let transport: "http" | "https";
  switch (scheme) {
    case "oci":
      transport = LOOPBACK.has(parsed.hostname) ? "http" : "https";
      break;
    case "oci+http":
      transport = "http";
      break;
    case "oci+https":
      transport = "https";
      break;
    default:
      throw invalid(url, "must start with oci://, oci+http:// or oci+https://");
  }
  if (!parsed.host) throw invalid(url, "names no registry host");
  if (parsed.username || parsed.password) {
    // The URL as written holds the password: the message shows it without.
    throw invalid(
      `${parsed.protocol}//${parsed.host}${parsed.pathname}`,
      "must not carry credentials; set ATOMIX_PLUGINS_OCI_USERNAME and ATOMIX_PLUGINS_OCI_PASSWORD or a credentials file",
    );
  }
  if (parsed.search || parsed.hash) throw invalid(url, "must not have a query or fragment");
  const repository = decodeURIComponent(parsed.pathname).replace(/^\/+|\/+$/g, "");
  if (!repository) throw invalid(url, "names no repository; write oci://host:port/repository");
  if (!REPOSITORY.test(repository) || repository.length > 255) {
    throw invalid(
      url,
      `repository "${repository}" must be lowercase letters and digits separated by '.', '_', '-' or '/'`,
    );
  }
  return { origin: `${transport}://${parsed.host}`, repository };
}

function invalid(url: string, rule: string): PluginError {
  return new PluginError(Code.InvalidArgument, `store "${url}" ${rule}`);
}
