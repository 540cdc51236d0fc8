import type {
  Http2SecureServer,
  Http2Server,
  Http2Session,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from "node:http2";
import { constants as http2Constants } from "node:http2";
import type { Socket } from "node:net";
import type { Server } from "@grpc/grpc-js";
import type { Logger } from "pino";

/** Pings closer together than this, on a connection the server sent nothing on meanwhile, are strikes. */
export const MIN_PING_INTERVAL_MS = 5_000;
/** Strikes a connection may collect before it is closed with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"). */
const MAX_PING_STRIKES = 2;
/** nghttp2's stream reset budget: a burst of this many resets... */
const RESET_BURST = 1000;
/** ...refilled at this many a second (nghttp2_option_set_stream_reset_rate_limit defaults). */
const RESET_RATE_PER_SECOND = 33;
/** Resets left in the budget when a connection is retired. */
const RESET_MARGIN = 500;
/** The last stream id of a GOAWAY that only announces the end: every stream the client has opened is still taken. */
const MAX_STREAM_ID = 2 ** 31 - 1;
/** How long a retired connection waits for its client to acknowledge "no new streams" before the GOAWAY notice. */
const RETIRE_ACK_TIMEOUT_MS = 5_000;
/** How long a retired connection's client has to read the GOAWAY notice before the final GOAWAY. */
const RETIRE_NOTICE_MS = 1_000;
/** Bytes a PING ACK (and the server's own keepalive PING) may add to a connection's output. */
const PING_ACK_ALLOWANCE = 96;

export interface ConnectionGuard {
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
 * - **Stream resets**: see spendReset.
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
    options.log.warn(
      "this grpc-js has no createHttp2Server: no handshake timeout, reset budget or ping limit",
    );
  } else {
    target.createHttp2Server = function (this: unknown, credentials: unknown) {
      const http2Server = original.call(this, credentials) as Http2Server | Http2SecureServer;
      watch(http2Server);
      return http2Server;
    };
  }

  const peerOf = new WeakMap<Http2Session, string>();
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
      // The session forgets its socket once destroyed: name the peer now.
      const key = peer(session.socket);
      peerOf.set(session, key);
      session.once("remoteSettings", () => {
        const pending = handshaking.get(key);
        if (pending) {
          clearTimeout(pending.timer);
          handshaking.delete(key);
        }
      });
      // A connection that fails (a protocol error, a flood nghttp2 refused, a
      // reset socket) takes every call on it down: say which and why.
      session.on("error", (error: NodeJS.ErrnoException) => {
        // A peer that went away (reset, broken pipe) is no news.
        const gone = error.code === "ECONNRESET" || error.code === "EPIPE";
        options.log[gone ? "debug" : "warn"](
          { peer: key, error: error.message, code: error.code },
          "connection failed",
        );
      });
      limitPings(session, key);
    });
    http2Server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      const session = stream.session;
      if (!session) return;
      if (!clientKinds.has(session)) {
        clientKinds.set(session, /^grpc-go\//.test(headers["user-agent"] ?? "") ? "grpc-go" : "other");
      }
      // A stream the client reset (a cancelled call) closes with its code;
      // one reset right after its HEADERS is closed before this event. The
      // session is taken now: a closed stream no longer has one. "close"
      // comes once, so on() does what once() would, without its wrapper.
      const counted = () => {
        if (stream.rstCode !== undefined && stream.rstCode !== http2Constants.NGHTTP2_NO_ERROR) {
          spendReset(session);
        }
      };
      if (stream.closed) counted();
      else stream.on("close", counted);
    });
  }

  /** Which client a session serves, named by its first call's user-agent: see spendReset. */
  const clientKinds = new WeakMap<Http2Session, "grpc-go" | "other">();
  /** Each session's model of nghttp2's stream reset budget. */
  const resetBudgets = new WeakMap<Http2Session, { tokens: number; at: number; closing: boolean }>();

  /**
   * nghttp2 (1.57 and later, its "rapid reset" defence) lets a client reset
   * at most 1000 streams at once, refilled at 33 a second, and past that
   * sends GOAWAY(INTERNAL_ERROR); Node.js 20 offers no way to change those
   * numbers. A client that cancels many pulls over one connection (runtimes
   * with deadlines, a load test) gets there without any ill intent. Worse,
   * after any GOAWAY a grpc-go client may reset a stream it had numbered but
   * not yet opened (cancelled while its transport drained): an RST_STREAM
   * on an idle stream, which nghttp2 takes for a protocol error and Node.js
   * answers by destroying the whole connection, resetting every stream on
   * it with INTERNAL_ERROR. grpc-go reports those as INTERNAL "unexpected
   * EOF" (cut inside a message) or "RST_STREAM ... INTERNAL_ERROR".
   *
   * So the same budget is kept here, and a connection that has spent most
   * of it is retired safely, in three steps:
   *
   * 1. For a grpc-go client only, SETTINGS_MAX_CONCURRENT_STREAMS 0, so it
   *    numbers no new stream on the connection (otherwise it may reset a
   *    stream it numbered but never sent, one nghttp2 sees as idle). Not
   *    for others: a C-core client writes HEADERS it had queued right after
   *    its acknowledgement of that setting, which nghttp2 takes for a
   *    connection PROTOCOL_ERROR (the GOAWAY(INTERNAL_ERROR) grpcio logged),
   *    and those that cross the setting are refused (REFUSED_STREAM), which
   *    C-core 1.51 does not retry (test/pull-streams-grpcio.test.ts).
   * 2. Once the client has acknowledged that, a GOAWAY(NO_ERROR) notice
   *    whose last stream id is the largest there is: the client moves its
   *    next calls to a new connection, and nghttp2, having sent a GOAWAY,
   *    counts no more resets. A stream whose HEADERS were already on the
   *    way is still recorded, so a reset of it is an ordinary reset.
   * 3. RETIRE_NOTICE_MS later, `close()`: the final GOAWAY(NO_ERROR) with
   *    the real last stream id; open calls finish.
   *
   * The way before this sent the final GOAWAY at step 2 and ended
   * connections in error (GOAWAY(INTERNAL_ERROR), seen by C-core clients
   * cancelling thousands of calls): HEADERS a client sent before reading
   * that GOAWAY are dropped by nghttp2 unrecorded, so the client's
   * RST_STREAM for such a call is one "in idle", a PROTOCOL_ERROR of the
   * connection, and Node.js then destroys the connection, which it always
   * reports as INTERNAL_ERROR.
   *
   * The margin covers resets this cannot see and those of the streams still
   * open.
   */
  function spendReset(session: Http2Session): void {
    const now = Math.floor(performance.now() / 1000);
    const budget = resetBudgets.get(session) ?? { tokens: RESET_BURST, at: now, closing: false };
    budget.tokens = Math.min(RESET_BURST, budget.tokens + (now - budget.at) * RESET_RATE_PER_SECOND) - 1;
    budget.at = now;
    resetBudgets.set(session, budget);
    if (budget.tokens > RESET_MARGIN || budget.closing || session.closed || session.destroyed) return;
    budget.closing = true;
    options.log.info(
      { peer: peerOf.get(session), resetsLeft: budget.tokens },
      "connection retired: its client reset streams close to nghttp2's limit",
    );
    const close = () => {
      if (!session.closed && !session.destroyed) session.close();
    };
    let noticed = false;
    const notice = () => {
      if (noticed || session.closed || session.destroyed) return;
      noticed = true;
      try {
        session.goaway(http2Constants.NGHTTP2_NO_ERROR, MAX_STREAM_ID);
      } catch {
        close();
        return;
      }
      // Once a GOAWAY is out and no stream is open, nghttp2 reads nothing more
      // (not even a PING's ACK), so no round trip can be awaited: the client
      // gets a fixed time to read the notice.
      setTimeout(close, RETIRE_NOTICE_MS).unref();
    };
    if (clientKinds.get(session) !== "grpc-go") {
      notice();
      return;
    }
    // A client that never acknowledges the settings gets the notice anyway.
    setTimeout(notice, RETIRE_ACK_TIMEOUT_MS).unref();
    try {
      session.settings({ maxConcurrentStreams: 0 }, notice);
    } catch {
      notice(); // too many settings unacknowledged already
    }
  }

  function limitPings(session: ServerHttp2Session, key: string): void {
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
        options.log.warn({ peer: key }, "connection closed: too many pings");
        session.goaway(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM, undefined, Buffer.from("too_many_pings"));
        session.close();
      }
    });
  }

  return {
    dropAll() {
      for (const socket of sockets) socket.destroy();
    },
  };
}
