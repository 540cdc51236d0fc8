import { readFileSync } from "node:fs";
import { type ChannelCredentials, type ClientOptions, credentials } from "@grpc/grpc-js";
import { Code, PluginError } from "../errors/plugin-error.js";

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

/** Channel credentials and the channel options they need, from TlsOptions. */
export function tlsCredentials(tls: TlsOptions): {
  credentials: ChannelCredentials;
  channelOptions: Partial<ClientOptions>;
} {
  if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
    throw new PluginError(
      Code.InvalidArgument,
      "a TLS client certificate needs its key: give both or neither",
    );
  }
  const ca = tls.caFile ? readPem(tls.caFile, "CA certificate") : null;
  const key = tls.keyFile ? readPem(tls.keyFile, "client key") : null;
  const cert = tls.certFile ? readPem(tls.certFile, "client certificate") : null;
  return {
    credentials: credentials.createSsl(ca, key, cert),
    channelOptions: tls.serverName
      ? { "grpc.ssl_target_name_override": tls.serverName, "grpc.default_authority": tls.serverName }
      : {},
  };
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw PluginError.from(error, `reading the TLS ${what} ${path}`);
  }
}
