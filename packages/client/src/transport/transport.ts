import type { ServerTarget } from "../server-target.js";
import { type GrpcChannel, grpcChannel } from "./grpc-channel.js";
import type { PullTransport } from "./pull-transport.js";
import { socketPullTransport } from "./socket-pull-transport.js";

/**
 * Every call the client makes to a server goes through this one interface:
 * unary and client-streaming calls (`unary`, `clientStream`: compile, the
 * admin calls, provenance, push) and the server-streaming PullPlugin
 * (`pullOnce`). Behind it, the first two share one `node:http2` session
 * (grpc-channel.ts) and pulls go over the hand-written reader
 * (socket-pull-transport.ts), each connection following the one state
 * machine of connection-state.ts. `close()` ends both, and every call in
 * flight with CANCELLED.
 */
export interface Transport extends GrpcChannel, PullTransport {
  close(): void;
}

export interface TransportOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
}

/** The transport to `target`; nothing is dialled until the first call. */
export function transport(target: ServerTarget, options: TransportOptions = {}): Transport {
  const channel = grpcChannel(target, options);
  const pulls = socketPullTransport(target, options);
  return {
    unary: channel.unary,
    clientStream: channel.clientStream,
    pullOnce: pulls.pullOnce,
    close() {
      pulls.close();
      channel.close();
    },
  };
}
