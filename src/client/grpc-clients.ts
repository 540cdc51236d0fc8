import {
  type ChannelCredentials,
  type ClientOptions,
  credentials,
  InterceptingCall,
  type Interceptor,
  makeGenericClientConstructor,
} from "@grpc/grpc-js";
import { Code, PluginError } from "../errors/plugin-error.js";
import { PluginAdminClient } from "../gen/atomix/plugins/admin/v1/admin.js";
import {
  PluginCompilerClient,
  type PluginRegistryClient,
  PluginRegistryService,
} from "../gen/atomix/runtime/v1/plugin.js";
import { decodePullPluginResponse } from "../protocol/pull-codec.js";
import { type TlsOptions, tlsCredentials } from "./channel-credentials.js";
import type { TrustedKey } from "./provenance-check.js";

export interface ConnectionOptions {
  /** host:port of the server. */
  address: string;
  /** TLS from PEM files; plaintext when neither this nor `credentials` is given. */
  tls?: TlsOptions;
  /** Channel credentials built by the caller (instead of `tls`). */
  credentials?: ChannelCredentials;
  /**
   * Admin token sent as `authorization: Bearer <token>` on every call; the
   * server requires it for push, remove and gc when it has one configured.
   */
  token?: string;
  /** Extra grpc-js channel options; they win over the defaults. */
  channelOptions?: Partial<ClientOptions>;
  /**
   * What carries PullPlugin. "auto" (the default) speaks it with the
   * client's own HTTP/2 reader over a plain or TLS socket (neither grpc-js
   * nor `node:http2`: socket-pull-transport.ts), about twice as fast per
   * byte as grpc-js, whenever the address and credentials allow
   * (host:port, [v6]:port, dns:, unix:; `tls` or plaintext; no proxy in the
   * environment), and grpc-js otherwise. "grpc-js" always uses grpc-js,
   * e.g. to honour `channelOptions` on pulls. Either keeps one connection
   * to the server across attempts and pulls.
   */
  pullTransport?: "auto" | "grpc-js";
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

/**
 * A large HTTP/2 window is what lets a Node.js client pull at disk speed:
 * grpc-js defaults to 64 KiB, which stalls the stream every few chunks.
 */
const DEFAULT_CHANNEL_OPTIONS: Partial<ClientOptions> = {
  "grpc-node.flow_control_window": 16 * 1024 * 1024,
  "grpc.max_receive_message_length": 8 * 1024 * 1024,
  "grpc.max_send_message_length": 8 * 1024 * 1024,
};

/** PluginRegistry client whose chunk decoder does not copy. */
const FastPluginRegistryClient = makeGenericClientConstructor(
  {
    pullPlugin: { ...PluginRegistryService.pullPlugin, responseDeserialize: decodePullPluginResponse },
  },
  "atomix.runtime.v1.PluginRegistry",
) as unknown as new (
  address: string,
  credentials: ChannelCredentials,
  options?: Partial<ClientOptions>,
) => PluginRegistryClient;

export interface GrpcClients {
  registry: PluginRegistryClient;
  compiler: PluginCompilerClient;
  admin: PluginAdminClient;
  close(): void;
}

/** The three generated clients over one shared channel. */
export function createGrpcClients(options: ConnectionOptions): GrpcClients {
  if (options.tls && options.credentials) {
    throw new PluginError(Code.InvalidArgument, "give either tls or credentials, not both");
  }
  const tls = options.tls ? tlsCredentials(options.tls) : undefined;
  const creds = options.credentials ?? tls?.credentials ?? credentials.createInsecure();
  const channelOptions: Partial<ClientOptions> = {
    ...DEFAULT_CHANNEL_OPTIONS,
    ...tls?.channelOptions,
    ...options.channelOptions,
  };
  if (options.token) {
    channelOptions.interceptors = [...(channelOptions.interceptors ?? []), bearerToken(options.token)];
  }
  const registry = new FastPluginRegistryClient(options.address, creds, channelOptions);
  const channelOverride = registry.getChannel();
  const compiler = new PluginCompilerClient(options.address, creds, { ...channelOptions, channelOverride });
  const admin = new PluginAdminClient(options.address, creds, { ...channelOptions, channelOverride });
  return {
    registry,
    compiler,
    admin,
    close() {
      registry.close();
    },
  };
}

function bearerToken(token: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}
