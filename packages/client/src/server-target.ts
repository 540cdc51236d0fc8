import { readFileSync } from "node:fs";
import { connect as connectTcp, isIP, type OnReadOpts, type Socket } from "node:net";
import { type ConnectionOptions, connect as connectTls, type TLSSocket } from "node:tls";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import { type HttpProxy, selectProxy } from "./proxy-selection.js";
import { deliver, openTunnel } from "./proxy-tunnel.js";

/**
 * TLS to the server, from PEM files. With none of the fields set, TLS is used
 * with the system's root certificates.
 */
export interface TlsOptions {
  /** CA certificate(s) the server's certificate must chain to; the system roots by default. */
  caFile?: string;
  /** Client certificate for mutual TLS; needs `keyFile`. */
  certFile?: string;
  /** Private key of `certFile`. */
  keyFile?: string;
  /** Name the server's certificate must carry, when it is not the host of the address. */
  serverName?: string;
}

/**
 * Where the server is and how to open a connection to it, plain or TLS
 * (ALPN h2), directly or through an HTTP CONNECT proxy.
 */
export interface ServerTarget {
  /** `:authority`, and the name the server's certificate must carry with TLS. */
  authority: string;
  scheme: "http" | "https";
  /** The proxy connections go through (its URL without the password); undefined when direct. */
  proxy: string | undefined;
  /**
   * A new connection; `onread` lets the caller read into buffers of its own.
   * A direct one is returned at once (and connects meanwhile); one through a
   * proxy once the proxy opened the tunnel (UNAVAILABLE if it does not),
   * TLS then beginning over it. `signal` abandons a tunnel being opened.
   */
  connect(onread?: OnReadOpts, signal?: AbortSignal): Socket | Promise<Socket>;
}

/**
 * The target of a gRPC-style address: `host:port`, `[v6]:port`,
 * `dns:host:port`, `dns:///host:port` or `unix:/path` (the port defaults to
 * 443, as grpc-js's does, TLS or not). Files named by `tls` are read here,
 * so a missing one fails at once, naming it. `proxy` and `env` choose the
 * proxy (selectProxy): an unusable proxy URL fails here too.
 */
export function serverTarget(
  address: string,
  tls: TlsOptions | undefined,
  proxy?: string | false,
  env: Readonly<Record<string, string | undefined>> = process.env,
): ServerTarget {
  let where: { path: string } | { host: string; port: number };
  let authority: string;
  let servername = tls?.serverName;
  if (address.startsWith("unix:")) {
    const path = address.slice(address.startsWith("unix://") ? 7 : 5);
    if (!path) throw badAddress(address);
    where = { path };
    authority = servername ?? "localhost";
  } else {
    // No whitespace or control characters: the host goes into a proxy's CONNECT line as it is.
    const match = /^(\[[0-9a-fA-F:.]+\]|[^:/[\]\s\p{Cc}]+)(?::(\d{1,5}))?$/u.exec(
      address.replace(/^dns:(\/\/\/)?/, ""),
    );
    const port = Number(match?.[2] ?? 443);
    if (!match || port < 1 || port > 65_535) throw badAddress(address);
    const host = (match[1] as string).replace(/^\[|\]$/g, "");
    where = { host, port };
    authority = servername ?? `${match[1]}:${port}`;
    servername ??= isIP(host) ? undefined : host;
  }
  const secure = tls ? { ...tlsConnectOptions(tls), servername } : undefined;
  const through = selectProxy(where, proxy, env);
  if (through && "host" in where) {
    const tunnelled = { host: where.host, port: where.port };
    return {
      authority,
      scheme: secure ? "https" : "http",
      proxy: through.shown,
      connect: (onread, signal) => connectThrough(through, tunnelled, secure, onread, signal),
    };
  }
  return {
    authority,
    scheme: secure ? "https" : "http",
    proxy: undefined,
    connect: (onread) =>
      secure
        ? tlsSocket({ ...secure, ...where, onread })
        : connectTcp({ ...where, ...(onread && { onread }) }),
  };
}

async function connectThrough(
  proxy: HttpProxy,
  where: { host: string; port: number },
  secure: ConnectionOptions | undefined,
  onread: OnReadOpts | undefined,
  signal: AbortSignal | undefined,
): Promise<Socket> {
  const target = `${isIP(where.host) === 6 ? `[${where.host}]` : where.host}:${where.port}`;
  // A plaintext tunnel reads into the caller's buffers itself.
  const tunnel = await openTunnel({
    proxy,
    target,
    onread: secure ? undefined : onread,
    signal,
    tlsFollows: secure !== undefined,
  });
  if (!secure) return tunnel;
  // Node.js gives a TLS socket over a socket of ours no reader of its own:
  // its reads are copied into the caller's buffers, once each.
  const socket = connectTls({ ...secure, host: where.host, socket: tunnel });
  if (onread) {
    socket.on("data", (chunk: Buffer) => {
      if (!deliver(onread, chunk)) socket.pause();
    });
  }
  return socket;
}

function badAddress(address: string): PluginError {
  return new PluginError(
    Code.InvalidArgument,
    `the server address ${quoted(address)} is not host:port, [ipv6]:port, dns:host:port or unix:/path`,
  );
}

/** TLS sockets take `onread` as plain ones do (Node.js ≥ 12.17); @types/node does not say so. */
function tlsSocket(options: ConnectionOptions & { onread: OnReadOpts | undefined }): TLSSocket {
  return connectTls(options);
}

function tlsConnectOptions(tls: TlsOptions) {
  if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
    throw new PluginError(
      Code.InvalidArgument,
      "a TLS client certificate needs its key: give both or neither",
    );
  }
  return {
    ca: readPem(tls.caFile, "CA certificate"),
    cert: readPem(tls.certFile, "client certificate"),
    key: readPem(tls.keyFile, "client key"),
    ALPNProtocols: ["h2"],
  };
}

function readPem(path: string | undefined, what: string): Buffer | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (error) {
    throw PluginError.from(error, `reading the TLS ${what} ${path}`);
  }
}
