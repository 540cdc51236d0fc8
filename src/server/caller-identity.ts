import { BlockList, isIP, isIPv4, isIPv6 } from "node:net";
import type { PeerCertificate } from "node:tls";

/** What a grpc-js server call tells of its peer. */
export interface CallPeer {
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined } | null;
  readonly metadata: { get(key: string): unknown[] };
}

/**
 * Who a call counts as, for the share of build slots one caller may hold
 * (--builds-per-caller):
 *
 * - with mutual TLS, the identity the client certificate carries: its SPIFFE
 *   ID (a `URI:spiffe://` subject alternative name) if it has one, else its
 *   subject (`cert:CN=...,O=...`). Every connection made with one identity
 *   shares one budget, whatever address it comes from;
 * - else the peer's address: an IPv4 address as it is, an IPv6 address by
 *   its /64 network (one host is usually given a whole /64, so counting by
 *   address would let it take a new address per call); an IPv4-mapped IPv6
 *   address as its IPv4 address.
 *
 * A peer among `trustedProxies` (--trusted-proxy: a load balancer that ends
 * the client's connection) is not the caller: the client it names last in
 * `x-forwarded-for` is, the addresses a client wrote there itself (to the
 * left of the proxy's own entry) never taken. Without them, the header is
 * ignored: any client can write it.
 *
 * A peer grpc-js cannot name counts as `unknown`, all such calls together.
 */
export function callerOf(call: CallPeer, trustedProxies?: BlockList): string {
  const peer = peerAddress(call.getPeer());
  if (trustedProxies && isIP(peer) && trustedProxies.check(peer, isIPv4(peer) ? "ipv4" : "ipv6")) {
    const forwarded = forwardedClient(call.metadata.get("x-forwarded-for"), trustedProxies);
    if (forwarded) return addressGroup(forwarded);
  }
  const certificate = call.getAuthContext()?.sslPeerCertificate;
  if (certificate) {
    const identity = certificateIdentity(certificate);
    if (identity) return identity;
  }
  return addressGroup(peer);
}

/**
 * The right-most address of `x-forwarded-for` that is not a trusted proxy:
 * each proxy appends the address it was called from, so everything left of
 * that is what the client sent. An entry that is no address ends the walk.
 */
function forwardedClient(values: unknown[], trustedProxies: BlockList): string | undefined {
  const entries = values
    .map(String)
    .join(",")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  for (const entry of entries.reverse()) {
    // A port may follow an IPv4 address, and an IPv6 address in brackets.
    const address = /^\[([^\]]+)\](?::\d+)?$/.exec(entry)?.[1] ?? /^([\d.]+):\d+$/.exec(entry)?.[1] ?? entry;
    const family = isIP(address);
    if (family === 0) return undefined;
    if (!trustedProxies.check(address, family === 4 ? "ipv4" : "ipv6")) return address;
  }
  return undefined;
}

/**
 * The proxies of --trusted-proxy (addresses or CIDR blocks, IPv4 or IPv6) as
 * one list; throws a message naming a bad entry.
 */
export function trustedProxyList(blocks: readonly string[]): BlockList {
  const list = new BlockList();
  for (const block of blocks) {
    const [address = "", bits, extra] = block.split("/");
    const family = isIP(address);
    const prefix = bits === undefined ? (family === 4 ? 32 : 128) : Number(bits);
    if (
      family === 0 ||
      extra !== undefined ||
      (bits !== undefined && !/^\d{1,3}$/.test(bits)) ||
      prefix > (family === 4 ? 32 : 128)
    ) {
      throw new Error(
        `${JSON.stringify(block)} is not an IP address or CIDR block such as 10.0.0.0/8 or fd00::/8`,
      );
    }
    list.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
  }
  return list;
}

/** `spiffe:<id>`, `cert:<subject>`, or undefined for a certificate that names nobody. */
function certificateIdentity(certificate: PeerCertificate): string | undefined {
  const spiffe = (certificate.subjectaltname ?? "")
    .split(", ")
    .find((name) => name.startsWith("URI:spiffe://"));
  if (spiffe) return `spiffe:${spiffe.slice("URI:".length)}`;
  const subject = Object.entries(certificate.subject ?? {})
    .map(([field, value]) => `${field}=${Array.isArray(value) ? value.join("+") : String(value)}`)
    .join(",");
  if (subject) return `cert:${subject}`;
  // A certificate with neither is still one identity: its public key's.
  return certificate.fingerprint256 ? `cert:${certificate.fingerprint256}` : undefined;
}

/** The address of grpc-js's `address:port` peer string (an IPv6 address has colons of its own). */
export function peerAddress(peer: string): string {
  const colon = peer.lastIndexOf(":");
  if (colon < 0) return peer;
  const address = peer.slice(0, colon);
  return isIPv4(address) || isIPv6(address) ? address : peer;
}

/** `ip:<IPv4 address>` or `ip:<first four groups>::/64`. */
export function addressGroup(address: string): string {
  if (isIPv4(address)) return `ip:${address}`;
  if (!isIPv6(address)) return address === "unknown" ? "unknown" : `ip:${address}`;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return `ip:${mapped[1]}`;
  const groups = ipv6Groups(address);
  return `ip:${groups.slice(0, 4).join(":")}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address, lowercase, without leading zeros. */
function ipv6Groups(address: string): string[] {
  const bare = address.split("%")[0] ?? address; // a zone index names an interface, not a host
  const [head = "", tail] = bare.split("::");
  const parse = (part: string) =>
    part === ""
      ? []
      : part.split(":").flatMap((group) => {
          if (!group.includes(".")) return [group];
          // An embedded IPv4 address is the last two groups.
          const [a = 0, b = 0, c = 0, d = 0] = group.split(".").map(Number);
          return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
        });
  const front = parse(head);
  const back = tail === undefined ? [] : parse(tail);
  const zeros = Array.from({ length: 8 - front.length - back.length }, () => "0");
  return [...front, ...zeros, ...back].map((group) => Number.parseInt(group, 16).toString(16));
}
