import type { Http2SecureServer, Http2Server, ServerHttp2Session } from "node:http2";
import { constants as http2Constants } from "node:http2";
import type { Socket } from "node:net";
import type { Server } from "@grpc/grpc-js";
import type { Logger } from "pino";

/** Pings closer together than this, on a connection the server sent nothing on meanwhile, are strikes. */
export const MIN_PING_INTERVAL_MS = 5_000;
/** Strikes a connection may collect before it is closed with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"). */
const MAX_PING_STRIKES = 2;
/** Bytes a PING ACK (and the server's own keepalive PING) may add to a connection's output. */
const PING_ACK_ALLOWANCE = 96;

export interface ConnectionGuard {
  /** Connections open now, handshake done or not. */
  open(): number;
  /** Closes every connection at once, without a frame: clients see a dropped connection (UNAVAILABLE). */
  dropAll(): void;
}

/**
 * Watches every connection of a grpc-js server, which bounds none of these
 * itself:
 *
 * - **Handshake**: a connection that has not completed TLS (if any) and sent
 *   the HTTP/2 client preface with its SETTINGS within `handshakeTimeoutMs`
 *   of being accepted is closed. A peer that connects and says nothing costs
 *   a socket until then, not for ever.
 * - **Ping flood**: grpc-js answers every PING; this counts pings that come
 *   closer than MIN_PING_INTERVAL_MS while the server sent nothing in
 *   between (as grpc-go's server does: pings during a transfer are fine)
 *   and closes the connection with GOAWAY(ENHANCE_YOUR_CALM,
 *   "too_many_pings") past MAX_PING_STRIKES, which gRPC clients read as
 *   "ping less often".
 *
 * Idle connections (preface sent, no calls) are closed by grpc-js itself
 * (`grpc.max_connection_idle_ms`). Must be called before `bindAsync`: it
 * wraps grpc-js's `createHttp2Server` to see each HTTP/2 server it makes.
 * If a grpc-js release no longer has that method, nothing is watched and a
 * warning is logged (test/server-connections.test.ts would fail).
 */
export function guardConnections(
  server: Server,
  options: { handshakeTimeoutMs: number; log: Logger },
): ConnectionGuard {
  const sockets = new Set<Socket>();
  const target = server as unknown as { createHttp2Server?: (credentials: unknown) => unknown };
  const original = target.createHttp2Server;
  if (typeof original !== "function") {
    options.log.warn("this grpc-js has no createHttp2Server: no handshake timeout or ping limit");
  } else {
    target.createHttp2Server = function (this: unknown, credentials: unknown) {
      const http2Server = original.call(this, credentials) as Http2Server | Http2SecureServer;
      watch(http2Server);
      return http2Server;
    };
  }

  /** Raw sockets still in their handshake, by remote address and port (TLS wraps the raw socket). */
  const handshaking = new Map<string, { socket: Socket; timer: NodeJS.Timeout }>();
  const peer = (socket: { remoteAddress?: string; remotePort?: number }) =>
    `${socket.remoteAddress}|${socket.remotePort}`;

  function watch(http2Server: Http2Server | Http2SecureServer): void {
    http2Server.on("connection", (socket: Socket) => {
      sockets.add(socket);
      const key = peer(socket);
      const timer = setTimeout(() => {
        handshaking.delete(key);
        options.log.debug({ peer: key }, "connection closed: no HTTP/2 handshake in time");
        socket.destroy();
      }, options.handshakeTimeoutMs);
      timer.unref();
      handshaking.set(key, { socket, timer });
      socket.once("close", () => {
        sockets.delete(socket);
        const pending = handshaking.get(key);
        if (pending?.socket === socket) {
          clearTimeout(pending.timer);
          handshaking.delete(key);
        }
      });
    });
    http2Server.on("session", (session: ServerHttp2Session) => {
      session.once("remoteSettings", () => {
        const key = peer(session.socket);
        const pending = handshaking.get(key);
        if (pending) {
          clearTimeout(pending.timer);
          handshaking.delete(key);
        }
      });
      limitPings(session);
    });
  }

  function limitPings(session: ServerHttp2Session): void {
    let lastPing = 0;
    let lastWritten = Number.NEGATIVE_INFINITY;
    let strikes = 0;
    session.on("ping", () => {
      const now = Date.now();
      const written = session.socket?.bytesWritten ?? 0;
      // More than a PING ACK (17 bytes, a little more under TLS) written since
      // the last ping: the server sent something, and the ping is welcome.
      if (written - lastWritten > PING_ACK_ALLOWANCE) strikes = 0;
      else if (now - lastPing < MIN_PING_INTERVAL_MS) strikes += 1;
      lastWritten = written;
      lastPing = now;
      if (strikes > MAX_PING_STRIKES) {
        options.log.debug({ peer: peer(session.socket) }, "connection closed: too many pings");
        session.goaway(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM, undefined, Buffer.from("too_many_pings"));
        session.close();
      }
    });
  }

  return {
    open: () => sockets.size,
    dropAll() {
      for (const socket of sockets) socket.destroy();
    },
  };
}
