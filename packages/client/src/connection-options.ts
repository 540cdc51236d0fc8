import type { TrustedKey } from "./provenance-check.js";
import type { TlsOptions } from "./server-target.js";

export interface ConnectionOptions {
  /**
   * The server: `host:port`, `[ipv6]:port`, `dns:host:port` or
   * `unix:/path`. Nothing is dialled until the first call.
   */
  address: string;
  /**
   * An HTTP proxy to reach the server through (HTTP CONNECT), as
   * `http://[user:password@]host[:port]`, used for any address but `unix:`
   * (loopback ones too); `false` connects directly whatever the
   * environment says. Absent: `grpc_proxy`, `https_proxy` or `http_proxy`
   * from the environment, unless `no_grpc_proxy`/`no_proxy` exempts the
   * address; never for `localhost` and loopback addresses.
   */
  proxy?: string | false;
  /** TLS from PEM files (`{}`: TLS with the system's roots); plaintext when absent. */
  tls?: TlsOptions;
  /**
   * Admin token sent as `authorization: Bearer <token>` on every call; the
   * server requires it for push, remove and gc when it has one configured.
   */
  token?: string;
  /**
   * Public keys (PEM) whose signed provenance this client requires: every
   * pull, and every loadPlugin, fetches the artifact's provenance bundle and
   * refuses (UntrustedArtifactError) an artifact that is unsigned, signed by
   * no key here, or whose statement names other bytes or another build key,
   * before anything is written in place or loaded. Several keys at once let
   * a deployment rotate its key. None: no provenance is checked.
   */
  trustedKeys?: readonly TrustedKey[];
}
