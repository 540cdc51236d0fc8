import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";

/** Redirects followed before a registry answer is refused; npm's own client stops at 5 too. */
const MAX_REDIRECTS = 5;

type AddressKind = "loopback" | "link-local";

/**
 * Addresses that reach the server's own host or its cloud's metadata service
 * (169.254.169.254, fd00:ec2::254): a URL a registry hands out must not make
 * the server fetch from them, unless the registry itself lives there.
 */
const KINDS: readonly [AddressKind, BlockList][] = [
  [
    "loopback",
    blockList(
      ["127.0.0.0", 8, "ipv4"],
      ["0.0.0.0", 8, "ipv4"], // "this host": Linux connects it to a local listener
      ["::1", 128, "ipv6"],
      ["::", 128, "ipv6"],
      ["::ffff:127.0.0.0", 104, "ipv6"],
      ["::ffff:0.0.0.0", 104, "ipv6"],
    ),
  ],
  [
    "link-local",
    blockList(
      ["169.254.0.0", 16, "ipv4"],
      ["fe80::", 10, "ipv6"],
      ["::ffff:169.254.0.0", 112, "ipv6"],
      ["fd00:ec2::254", 128, "ipv6"],
    ),
  ],
];

function blockList(...subnets: [string, number, "ipv4" | "ipv6"][]): BlockList {
  const list = new BlockList();
  for (const [address, prefix, family] of subnets) list.addSubnet(address, prefix, family);
  return list;
}

function kindOf(address: string): AddressKind | undefined {
  const family = isIP(address);
  if (family === 0) return undefined;
  return KINDS.find(([, list]) => list.check(address, family === 4 ? "ipv4" : "ipv6"))?.[0];
}

/** A host name as URL.hostname gives it, brackets of an IPv6 literal removed. */
const bare = (hostname: string) => hostname.replace(/^\[|\]$/g, "");

const defaultPort = (url: URL) => url.port || (url.protocol === "https:" ? "443" : "80");

export interface RegistryHttpOptions {
  /** The registry's URL: its origin is always allowed. */
  readonly registry: string;
  /** More hosts tarballs may come from (`host` on the default port, or `host:port`). */
  readonly extraHosts?: readonly string[];
  readonly timeoutMs: number;
}

export interface RegistryAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The body; the caller reads or destroys it. */
  readonly body: IncomingMessage;
  /** Where the answer came from, after redirects. */
  readonly url: string;
}

/**
 * GET requests to an npm registry that stay where the operator pointed the
 * server: the registry's own origin and the hosts listed for tarballs, each
 * redirect checked again, and no connection to a loopback or link-local
 * address (the server's own ports, the cloud metadata service) unless the
 * registry itself is on one. Addresses are checked as the connection is
 * made (a DNS answer cannot change between check and use).
 */
export function createRegistryHttp(options: RegistryHttpOptions) {
  const registry = new URL(options.registry);
  const extraHosts = (options.extraHosts ?? []).map((entry) => {
    // Not through URL: it would drop ":80" as http's default port, and "cdn:80" would then let https in.
    const parts = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/]+)(?::(\d{1,5}))?$/.exec(entry);
    if (!parts?.[1]) {
      throw new PluginError(
        Code.InvalidArgument,
        `tarball host ${quoted(entry)}: expected host or host:port`,
      );
    }
    return {
      hostname: parts[1].toLowerCase(),
      port: parts[2] === undefined ? undefined : String(Number(parts[2])),
    };
  });
  let registryKinds: Promise<Set<AddressKind>> | undefined;

  /** The kinds of address the registry's own host has: those stay allowed. */
  function kindsOfRegistry(): Promise<Set<AddressKind>> {
    registryKinds ??= new Promise((resolve) => {
      const host = bare(registry.hostname);
      if (isIP(host)) {
        resolve(new Set([kindOf(host)].filter((kind) => kind !== undefined)));
        return;
      }
      dnsLookup(host, { all: true }, (error, addresses) => {
        // Asked again next time: a passing DNS failure must not decide for good.
        if (error) registryKinds = undefined;
        const kinds = error ? [] : addresses.map((entry) => kindOf(entry.address));
        resolve(new Set(kinds.filter((kind) => kind !== undefined)));
      });
    });
    return registryKinds;
  }

  function allowedPlace(url: URL): boolean {
    if (url.protocol !== "http:" && url.protocol !== "https:") return false;
    if (url.origin === registry.origin) return true;
    const hostname = url.hostname.toLowerCase();
    // URL leaves a default port out: `host` alone allows http on 80 and https on 443, nothing else.
    return extraHosts.some(
      (entry) =>
        entry.hostname === hostname &&
        (entry.port === undefined ? url.port === "" : entry.port === defaultPort(url)),
    );
  }

  /** For the log: where the server fetches from (a caller's message does not name the registry). */
  function placesText(): string {
    const hosts = (options.extraHosts ?? []).join(", ") || "none";
    return `registry origin ${registry.origin}; --npm-tarball-host: ${hosts}`;
  }

  async function refusedAddress(host: string, address: string): Promise<PluginError | undefined> {
    const kind = kindOf(address);
    if (kind === undefined || (await kindsOfRegistry()).has(kind)) return undefined;
    return new PluginError(
      Code.FailedPrecondition,
      `${host} is at the ${kind} address ${address}, where the npm registry is not; the server fetches nothing from there`,
    );
  }

  /**
   * net's lookup hook: a host with any address the rule refuses is refused
   * whole (not filtered: a DNS answer mixing a public and a loopback address
   * is an attack). The refusal reaches the request's "error" as it is.
   */
  const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
    dnsLookup(hostname, { ...lookupOptions, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) {
        callback(error, "", 0);
        return;
      }
      void (async () => {
        for (const entry of addresses) {
          const refusal = await refusedAddress(hostname, entry.address);
          if (refusal) {
            callback(refusal as unknown as NodeJS.ErrnoException, "", 0);
            return;
          }
        }
        const first = addresses[0];
        // Node's types give the callback one shape; with `all` (autoSelectFamily) it takes the list.
        if (lookupOptions.all)
          (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
        else callback(null, first?.address ?? "", first?.family ?? 4);
      })();
    });
  };

  function requestOnce(
    url: URL,
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<IncomingMessage> {
    const request = url.protocol === "https:" ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const outgoing = request(url, { headers, signal, lookup }, resolve);
      outgoing.on("error", reject);
      outgoing.end();
    });
  }

  return {
    /** Whether a URL is one the server may fetch from (before any connection). */
    allowedPlace,
    /**
     * GETs `url`, following redirects that stay in allowed places. `what`
     * names the thing fetched in messages. A refused place or address is
     * FAILED_PRECONDITION; anything the network does is UNAVAILABLE.
     */
    async get(
      url: string,
      getOptions: { what: string; headers: Record<string, string>; signal?: AbortSignal },
    ): Promise<RegistryAnswer> {
      const signals = [
        AbortSignal.timeout(options.timeoutMs),
        ...(getOptions.signal ? [getOptions.signal] : []),
      ];
      const signal = AbortSignal.any(signals);
      let current = parseUrl(url, `the npm registry lists ${getOptions.what} at`);
      for (let hop = 0; ; hop++) {
        if (!allowedPlace(current)) {
          throw new PluginError(
            Code.FailedPrecondition,
            `the npm registry ${hop === 0 ? "points" : "redirects"} ${getOptions.what} to ${quoted(current.href, 200)}, which is neither the registry's origin nor a --npm-tarball-host; refusing to fetch it`,
            { detail: placesText() },
          );
        }
        const host = bare(current.hostname);
        if (isIP(host)) {
          const refusal = await refusedAddress(host, host);
          if (refusal) throw refusal;
        }
        let answer: IncomingMessage;
        try {
          answer = await requestOnce(current, getOptions.headers, signal);
        } catch (error) {
          if (error instanceof PluginError || getOptions.signal?.aborted) throw error;
          const reason = signal.aborted
            ? `no answer within ${options.timeoutMs} ms`
            : (error as Error).message;
          throw new PluginError(
            Code.Unavailable,
            `npm registry ${registry.origin} is unreachable (${current.href}): ${reason}`,
            { cause: error },
          );
        }
        const status = answer.statusCode ?? 0;
        const location = answer.headers.location;
        if (status >= 300 && status < 400 && status !== 304 && location) {
          answer.destroy();
          if (hop >= MAX_REDIRECTS) {
            throw new PluginError(
              Code.FailedPrecondition,
              `the npm registry redirected ${getOptions.what} more than ${MAX_REDIRECTS} times (last to ${location})`,
            );
          }
          current = parseUrl(location, `the npm registry redirects ${getOptions.what} to`, current);
          continue;
        }
        return { status, headers: answer.headers, body: answer, url: current.href };
      }
    },
  };
}

function parseUrl(text: string, saying: string, base?: URL): URL {
  try {
    return new URL(text, base);
  } catch {
    throw new PluginError(Code.FailedPrecondition, `${saying} ${quoted(text, 200)}, which is not a URL`);
  }
}

export type RegistryHttp = ReturnType<typeof createRegistryHttp>;
