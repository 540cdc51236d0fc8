import { BlockList, isIP } from "node:net";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/** An HTTP proxy that tunnels connections with CONNECT. */
export interface HttpProxy {
  host: string;
  port: number;
  /** Percent-decoded, for `Proxy-Authorization: Basic`. */
  credentials?: { user: string; password: string };
  /** The proxy as messages name it: its URL without the password. */
  shown: string;
}

/** Where a connection goes: a host and port, or a unix socket (never proxied). */
export type Destination = { host: string; port: number } | { path: string };

/** Proxy variables in the order they are looked at, as grpc-js does; each lower-case first. */
const PROXY_VARIABLES = [
  "grpc_proxy",
  "GRPC_PROXY",
  "https_proxy",
  "HTTPS_PROXY",
  "http_proxy",
  "HTTP_PROXY",
];
const EXEMPTION_VARIABLES = ["no_grpc_proxy", "NO_GRPC_PROXY", "no_proxy", "NO_PROXY"];

/**
 * The proxy a connection to `destination` goes through, or undefined for a
 * direct one. `explicit` (the client's `proxy` option) wins: a URL is used
 * for every destination, loopback included; `false` connects directly.
 * Otherwise the environment decides (see proxyFromEnvironment).
 */
export function selectProxy(
  destination: Destination,
  explicit: string | false | undefined,
  env: Readonly<Record<string, string | undefined>>,
): HttpProxy | undefined {
  if (explicit === false) return undefined;
  if (explicit !== undefined) {
    if ("path" in destination) {
      throw new PluginError(Code.InvalidArgument, "a unix: address cannot be reached through a proxy");
    }
    return parseProxyUrl(explicit, "the proxy option");
  }
  return proxyFromEnvironment(destination, env);
}

/**
 * The proxy the environment names for `destination`: `grpc_proxy`, else
 * `https_proxy`, else `http_proxy` (upper-case forms too), unless the
 * destination is exempt. Never for `unix:` paths, `localhost` and loopback
 * addresses (as Go's net/http: a machine's proxy is for leaving it).
 * Exemptions come from `no_grpc_proxy`, else `no_proxy`: comma-separated;
 * `*` exempts everything; a name exempts itself and its subdomains (a
 * leading `.` or `*.` is the same); an IP address or CIDR block exempts the
 * IP destinations in it (names are not resolved); `:port` limits an entry to
 * that port.
 */
export function proxyFromEnvironment(
  destination: Destination,
  env: Readonly<Record<string, string | undefined>>,
): HttpProxy | undefined {
  if ("path" in destination) return undefined;
  const variable = PROXY_VARIABLES.find((name) => env[name]?.trim());
  if (variable === undefined) return undefined;
  const host = normalHost(destination.host);
  if (isLoopback(host)) return undefined;
  const exemptions = EXEMPTION_VARIABLES.map((name) => env[name]?.trim()).find(Boolean) ?? "";
  const exempt = exemptions
    .split(",")
    .map((entry) => entry.trim().toLowerCase())
    .some((entry) => entry !== "" && exempts(entry, host, destination.port));
  return exempt ? undefined : parseProxyUrl(env[variable] as string, `$${variable}`);
}

/**
 * `http://[user:password@]host[:port]` (port 80 by default), or a bare
 * `host:port` taken as http. Anything else is INVALID_ARGUMENT naming
 * `source`; no message carries the password.
 */
export function parseProxyUrl(text: string, source: string): HttpProxy {
  const trimmed = text.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new PluginError(
      Code.InvalidArgument,
      `${source} is not a proxy URL: expected http://[user:password@]host[:port]`,
    );
  }
  if (url.protocol !== "http:") {
    throw new PluginError(
      Code.InvalidArgument,
      `${source} names a ${url.protocol.slice(0, -1)}:// proxy; only http:// proxies (HTTP CONNECT) are supported`,
    );
  }
  if (!url.hostname) {
    throw new PluginError(Code.InvalidArgument, `${source} names no proxy host`);
  }
  // A `/`, `?`, `#` or `\` in an unencoded password ends the authority
  // early, leaving the real `@` behind it: `http://user:1234/x@proxy` would
  // otherwise be host `user`, port 1234, and messages naming that "proxy"
  // would show part of the password.
  if (`${url.pathname}${url.search}${url.hash}`.includes("@")) {
    throw new PluginError(
      Code.InvalidArgument,
      `${source} is not a proxy URL: an @ after its host (percent-encode / ? # \\ in a user or password)`,
    );
  }
  const port = url.port === "" ? 80 : Number(url.port);
  let user: string;
  let password: string;
  try {
    user = decodeURIComponent(url.username);
    password = decodeURIComponent(url.password);
  } catch {
    throw new PluginError(
      Code.InvalidArgument,
      `${source} is not a proxy URL: its user or password has a % not followed by two hex digits of UTF-8`,
    );
  }
  return {
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port,
    ...(user || password ? { credentials: { user, password } } : {}),
    shown: `http://${url.username ? `${url.username}@` : ""}${url.host}`,
  };
}

function normalHost(host: string): string {
  return host.toLowerCase().replace(/\.$/, "");
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");
LOOPBACK.addSubnet("::ffff:127.0.0.0", 104, "ipv6");

/** `localhost`, `*.localhost` or a loopback address (127.0.0.0/8, ::1, IPv4-mapped 127/8). */
export function isLoopback(host: string): boolean {
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? "ipv4" : "ipv6");
}

/** Whether one no_proxy entry (lower-case, trimmed) exempts `host` (normalised) on `port`. */
function exempts(entry: string, host: string, port: number): boolean {
  if (entry === "*") return true;
  let pattern = entry;
  let entryPort: number | undefined;
  // `[v6]`, `[v6]/bits`, `v4/bits` and `v6/bits` entries, each with an optional `:port`.
  const bracketed = /^\[([^\]]+)\](\/\d+)?(?::(\d+))?$/.exec(pattern);
  const block = /^([^/[\]]+\/\d+)(?::(\d+))?$/.exec(pattern);
  if (bracketed) {
    pattern = `${bracketed[1]}${bracketed[2] ?? ""}`;
    entryPort = bracketed[3] === undefined ? undefined : Number(bracketed[3]);
  } else if (block) {
    pattern = block[1] as string;
    entryPort = block[2] === undefined ? undefined : Number(block[2]);
  } else if (isIP(pattern) === 0) {
    const withPort = /^([^:]+):(\d+)$/.exec(pattern);
    if (withPort) {
      pattern = withPort[1] as string;
      entryPort = Number(withPort[2]);
    }
  }
  if (entryPort !== undefined && entryPort !== port) return false;
  const family = isIP(host);
  const slash = pattern.indexOf("/");
  if (slash >= 0) {
    const network = pattern.slice(0, slash);
    const bits = Number(pattern.slice(slash + 1));
    const networkFamily = isIP(network);
    if (family === 0 || networkFamily === 0 || !Number.isInteger(bits)) return false;
    const list = new BlockList();
    try {
      list.addSubnet(network, bits, networkFamily === 4 ? "ipv4" : "ipv6");
      return list.check(host, family === 4 ? "ipv4" : "ipv6");
    } catch {
      return false; // a prefix out of range: an entry that matches nothing
    }
  }
  if (isIP(pattern) !== 0) {
    if (family === 0) return false;
    const list = new BlockList();
    list.addAddress(pattern, isIP(pattern) === 4 ? "ipv4" : "ipv6");
    return list.check(host, family === 4 ? "ipv4" : "ipv6");
  }
  const domain = normalHost(pattern.replace(/^\*?\./, ""));
  return domain !== "" && (host === domain || host.endsWith(`.${domain}`));
}
