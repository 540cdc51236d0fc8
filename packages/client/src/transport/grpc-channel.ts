import { setMaxListeners } from "node:events";
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
} from "node:http2";
import type { Socket } from "node:net";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  type MethodDefinition,
  methodPath,
  type RequestOf,
  type ResponseOf,
  type ServiceDefinition,
} from "atomix-plugins-core/protocol/service-definition";
import { diagnose, socketFailure, unansweredFailure } from "../connection-failure.js";
import { cancelled } from "../retry-policy.js";
import type { ServerTarget } from "../server-target.js";
import { type ConnectionEvent, type ConnectionState, next } from "./connection-state.js";
import {
  atDeadline,
  checkToken,
  frameMessage,
  grpcMessage,
  httpFailure,
  requestHeaders,
  resetFailure,
  statusFailure,
} from "./grpc-wire.js";

/**
 * gRPC calls other than PullPlugin (compile, admin, provenance; unary and
 * client-streaming) over one `node:http2` session per server, kept across
 * calls and dialled again when the server closes it. Written here rather
 * than taken from grpc-js so that the client package carries no gRPC
 * library: these calls are small, and what gRPC adds to HTTP/2 for them is
 * the framing and the status (grpc-wire.ts).
 */
export interface GrpcChannel {
  unary<Method extends MethodDefinition>(
    service: ServiceDefinition,
    method: Method,
    request: RequestOf<Method>,
    settings?: CallSettings,
  ): Promise<ResponseOf<Method>>;
  /**
   * Sends `requests` one after another, as fast as HTTP/2's flow control
   * lets them go, and resolves with the answer. An answer that comes before
   * the requests end (a refusal) stops reading `requests` at once.
   */
  clientStream<Method extends MethodDefinition>(
    service: ServiceDefinition,
    method: Method,
    requests: AsyncIterable<RequestOf<Method>> | Iterable<RequestOf<Method>>,
    settings?: CallSettings,
  ): Promise<ResponseOf<Method>>;
  close(): void;
}

export interface CallSettings {
  signal?: AbortSignal | undefined;
  /** Epoch milliseconds the call must end by: DEADLINE_EXCEEDED past it. */
  deadline?: number | undefined;
  /**
   * The call changes nothing (a read): when its connection is lost before
   * the answer (the server or something between closed it), it is sent once
   * more, at once, on a new connection. Unary calls only.
   */
  idempotent?: boolean | undefined;
}

/** A caller's `signal` and `timeoutMs` (CallControl) as one call's settings, its deadline counted from now. */
export function callSettings(
  control: { signal?: AbortSignal; timeoutMs?: number } | undefined,
): CallSettings {
  return {
    signal: control?.signal,
    deadline: control?.timeoutMs ? Date.now() + control.timeoutMs : undefined,
  };
}

export interface ChannelOptions {
  /** Sent as `authorization: Bearer <token>`. */
  token?: string | undefined;
  userAgent?: string | undefined;
  /** Largest response message taken (RESOURCE_EXHAUSTED beyond). Default 64 MiB. */
  maxResponseBytes?: number;
}

const DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024;

export function grpcChannel(target: ServerTarget, options: ChannelOptions = {}): GrpcChannel {
  checkToken(options.token);
  /**
   * The kept session (ready), or the one waiting for its proxy tunnel
   * (connecting: the calls that need a session meanwhile wait for it too),
   * or none (idle: the next call dials), or closed. A session the server
   * sends GOAWAY on is lost to it at once (idle): its calls finish on it
   * while the next ones dial a new session.
   */
  let state: ConnectionState<PendingSession, ClientHttp2Session> = { phase: "idle" };
  const move = (event: ConnectionEvent<PendingSession, ClientHttp2Session>) => {
    state = next(state, event);
  };
  const pendingSession = () => (state.phase === "connecting" ? state.dial : undefined);
  /** Calls running on each session: a session holds the process open only while it has some. */
  const running = new Map<ClientHttp2Session, number>();
  /** Aborted by close(): the calls in flight end at once, so that nothing is left running or holding the process. */
  const closing = new AbortController();
  // Every call in flight listens to it: as many as the server's concurrent streams.
  setMaxListeners(0, closing.signal);
  /** Each session's socket, its error, and whether the server said anything in HTTP/2 on it (its SETTINGS). */
  const links = new WeakMap<ClientHttp2Session, { socket: Socket; error?: Error; heard: boolean }>();

  /**
   * The kept session, or a new one if the server closed it or is going
   * away: at once when direct, once the tunnel is up through a proxy.
   */
  function open(): ClientHttp2Session | Promise<ClientHttp2Session> {
    if (state.phase === "ready") {
      const session = state.link;
      if (!session.closed && !session.destroyed) return session;
      move({ type: "lost", of: session });
    }
    if (state.phase === "connecting") return state.dial.session;
    const abandon = new AbortController();
    const socket = target.connect(undefined, abandon.signal);
    if (!(socket instanceof Promise)) return startSession(socket);
    const dial: PendingSession = {
      session: socket.then(
        (tunnel) => {
          move({ type: "lost", of: dial });
          return startSession(tunnel);
        },
        (error) => {
          move({ type: "lost", of: dial });
          throw error;
        },
      ),
      abandon,
      waiting: 0,
    };
    dial.session.catch(() => {});
    move({ type: "dial", dial });
    return dial.session;
  }

  /**
   * The session `opening` becomes, or CANCELLED/DEADLINE_EXCEEDED first. A
   * call whose deadline passes first abandons the tunnel: a proxy that does
   * not answer is then dialled again by the next call, not waited on. So
   * does the last call waiting for it when its signal aborts: a tunnel no
   * call waits for would hold the process open.
   */
  function untilOpen(
    opening: Promise<ClientHttp2Session>,
    { signal, deadline }: CallSettings,
  ): Promise<ClientHttp2Session> {
    const waitedOn = pendingSession()?.session === opening ? pendingSession() : undefined;
    if (waitedOn) waitedOn.waiting++;
    return new Promise<ClientHttp2Session>((resolve, reject) => {
      // Whichever comes first (the tunnel, the signal, the deadline, close()), this call waits no more.
      let waiting = true;
      let stopTimer: (() => void) | undefined;
      const leave = () => {
        if (!waiting) return false;
        waiting = false;
        stopTimer?.();
        signal?.removeEventListener("abort", onAbort);
        closing.signal.removeEventListener("abort", onClose);
        return waitedOn !== undefined && --waitedOn.waiting === 0 && pendingSession() === waitedOn;
      };
      const onAbort = () => {
        if (leave()) {
          (waitedOn as PendingSession).abandon.abort();
          move({ type: "lost", of: waitedOn as PendingSession });
        }
        reject(cancelled(signal));
      };
      const onClose = () => {
        leave();
        reject(new PluginError(Code.Cancelled, "the client was closed during the call"));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      closing.signal.addEventListener("abort", onClose, { once: true });
      stopTimer =
        deadline === undefined
          ? undefined
          : atDeadline(deadline, () => {
              leave();
              const abandoned = pendingSession();
              if (abandoned?.session === opening) {
                abandoned.abandon.abort();
                move({ type: "lost", of: abandoned });
              }
              reject(new PluginError(Code.DeadlineExceeded, "the call passed its deadline"));
            });
      opening.then(
        (session) => {
          leave();
          resolve(session);
        },
        (error) => {
          leave();
          reject(error);
        },
      );
    });
  }

  function startSession(socket: Socket): ClientHttp2Session {
    const opened = connect(`${target.scheme}://${target.authority}`, {
      createConnection: () => socket,
      settings: { enablePush: false },
    });
    if (state.phase === "closed") opened.destroy();
    const link: { socket: Socket; error?: Error; heard: boolean } = { socket, heard: false };
    links.set(opened, link);
    opened.once("remoteSettings", () => {
      link.heard = true;
    });
    // Failures reach the calls as their streams' errors; this keeps an
    // idle session's error from being thrown as an uncaught one, and keeps
    // it to tell why a call was never answered (unreachable).
    opened.on("error", (error: Error) => {
      link.error ??= error;
    });
    const forget = () => {
      move({ type: "lost", of: opened });
    };
    opened.once("goaway", forget);
    opened.once("close", forget);
    move({ type: "connected", link: opened });
    return opened;
  }

  function begin(current: ClientHttp2Session): ClientHttp2Session {
    if (state.phase === "closed") throw state.reason;
    running.set(current, (running.get(current) ?? 0) + 1);
    current.ref();
    return current;
  }
  function end(current: ClientHttp2Session): void {
    const left = (running.get(current) ?? 1) - 1;
    if (left > 0) {
      running.set(current, left);
      return;
    }
    running.delete(current);
    if (state.phase === "ready" && state.link === current) current.unref();
    else current.destroy(); // retired (gone away, or not answering): nothing else will end it
  }
  /**
   * No more calls on `current`. A session can stop answering without closing
   * (nghttp2 stops reading one it found broken, and Node.js never says so):
   * a call whose deadline passed without any answer retires it, so that the
   * next call dials again instead of waiting on it too.
   */
  function retire(current: ClientHttp2Session): void {
    move({ type: "lost", of: current });
    if (!running.has(current)) current.destroy();
  }

  /**
   * Why a call on `current` got no answer when the server never spoke HTTP/2
   * on it, in words (connection-failure.ts): refused, unresolved, TLS or
   * HTTP/1.1 where gRPC was expected, silent until the deadline.
   */
  async function unreachable(
    current: ClientHttp2Session,
    failure: PluginError,
  ): Promise<PluginError | undefined> {
    const link = links.get(current);
    if (!link || link.heard || target.proxy !== undefined) return undefined;
    if (failure.code === Code.DeadlineExceeded)
      return unansweredFailure(target.authority, link.socket.connecting);
    if (!(failure instanceof LostConnection)) return undefined;
    const cause = link.error ?? ((failure.cause as Error | undefined)?.cause as Error | undefined);
    return (cause && socketFailure(target.authority, cause)) ?? (await diagnose(target));
  }

  async function call<Response>(
    service: ServiceDefinition,
    method: MethodDefinition,
    settings: CallSettings,
    send: (stream: ClientHttp2Stream, answered: Promise<unknown>) => Promise<void>,
  ): Promise<Response> {
    const { signal, deadline } = settings;
    if (signal?.aborted) throw cancelled(signal);
    if (state.phase === "closed") throw state.reason;
    const opening = open();
    const current = begin(opening instanceof Promise ? await untilOpen(opening, settings) : opening);
    let stream: ClientHttp2Stream | undefined;
    let responded = false;
    try {
      stream = current.request(
        {
          ":path": methodPath(service, method),
          ":method": "POST",
          ":authority": target.authority,
          ...Object.fromEntries(requestHeaders({ ...options, deadline })),
        },
        { endStream: false },
      );
      stream.once("response", () => {
        responded = true;
      });
      const response = readResponse<Response>(
        current,
        stream,
        method.responseType as MethodDefinition<unknown, Response>["responseType"],
        options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE,
        target.proxy ? `${target.authority} through the proxy ${target.proxy}` : target.authority,
      );
      const answered = bounded(response, stream, settings, closing.signal);
      answered.catch(() => {});
      await Promise.race([send(stream, answered), answered]);
      return await answered;
    } catch (error) {
      const failure = PluginError.from(error);
      if (failure.code === Code.DeadlineExceeded && !responded) retire(current);
      throw (responded ? undefined : await unreachable(current, failure)) ?? failure;
    } finally {
      // Answered while our side was still sending, or failed: the stream
      // goes. Not one that ended both ways and only waits for Node.js to say
      // so (most answered calls): nghttp2 counts every RST_STREAM a server
      // receives, even for a closed stream, against its budget of 1000 (33
      // a second back), and past it tears the connection down with
      // GOAWAY(INTERNAL_ERROR), failing every call on it.
      if (stream && !stream.closed && !(stream.readableEnded && stream.writableEnded)) {
        stream.close(constants.NGHTTP2_CANCEL);
      }
      end(current);
    }
  }

  return {
    async unary(service, method, request, settings = {}) {
      const message = frameMessage(method.requestType.encode(request).finish());
      const send = async (stream: ClientHttp2Stream) => {
        stream.end(message);
      };
      try {
        return await call(service, method, settings, send);
      } catch (error) {
        // Refused before the server took it (a kept connection the server
        // was closing): sent once more at once, as grpc-js does, on a new
        // one. A read whose connection was lost under it, the same.
        const again =
          error instanceof UntakenCall || (settings.idempotent === true && error instanceof LostConnection);
        if (!again) throw error;
        return call(service, method, settings, send);
      }
    },

    clientStream(service, method, requests, settings = {}) {
      return call(service, method, settings, async (stream, answered) => {
        const iterator =
          Symbol.asyncIterator in requests
            ? requests[Symbol.asyncIterator]()
            : (requests as Iterable<RequestOf<typeof method>>)[Symbol.iterator]();
        let finished = false;
        // Settles once the answer is in, whatever it is: that answer is the call's.
        let over = false;
        const early = answered.then(
          () => {
            over = true;
          },
          () => {
            over = true;
          },
        );
        try {
          for (;;) {
            const next = await Promise.race([iterator.next(), early]);
            // A plain iterable's next value wins every race, even against an
            // answer already in: without `over` it would be read (and the
            // event loop starved) forever.
            if (!next || over) return;
            if (next.done) break;
            const frame = frameMessage(method.requestType.encode(next.value).finish());
            if (!stream.write(frame)) await Promise.race([drained(stream), answered]);
          }
          finished = true;
          stream.end();
        } finally {
          // A producer still suspended finishes when it next resumes; not awaited.
          if (!finished) Promise.resolve(iterator.return?.()).catch(() => {});
        }
      });
    },

    close() {
      const before = state;
      move({
        type: "close",
        reason: new PluginError(Code.Cancelled, "the client was closed"),
      });
      closing.abort();
      if (before.phase === "connecting") before.dial.abandon.abort();
      // Destroyed, not closed: a graceful close waits for the server to take
      // our frames, and one that reads nothing (while flooding us) would keep
      // the session, and the process, alive.
      if (before.phase === "ready") before.link.destroy();
    },
  };
}

/** A session waiting for its proxy tunnel, and how many calls wait for it. */
interface PendingSession {
  session: Promise<ClientHttp2Session>;
  abandon: AbortController;
  waiting: number;
}

/** A call the server refused before taking it: nothing of it was done. */
class UntakenCall extends PluginError {}

/** A call whose connection dropped before its answer came: the server may or may not have done it. */
class LostConnection extends PluginError {}

/**
 * The answer, or CANCELLED when `signal` aborts or the client is closed, or
 * DEADLINE_EXCEEDED past the deadline; the stream is reset then.
 */
function bounded<Response>(
  response: Promise<Response>,
  stream: ClientHttp2Stream,
  { signal, deadline }: CallSettings,
  closing: AbortSignal,
): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    const stop = (failure: PluginError) => {
      if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
      reject(failure);
    };
    const onAbort = () => stop(cancelled(signal));
    const onClose = () => stop(new PluginError(Code.Cancelled, "the client was closed during the call"));
    signal?.addEventListener("abort", onAbort, { once: true });
    closing.addEventListener("abort", onClose, { once: true });
    const stopTimer =
      deadline === undefined
        ? undefined
        : atDeadline(deadline, () =>
            stop(new PluginError(Code.DeadlineExceeded, "the call passed its deadline")),
          );
    response.then(resolve, reject).finally(() => {
      stopTimer?.();
      signal?.removeEventListener("abort", onAbort);
      closing.removeEventListener("abort", onClose);
    });
  });
}

function drained(stream: ClientHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

/**
 * Reads one response message and the call's status. A status other than OK,
 * an HTTP answer that is not gRPC, a reset stream or a broken connection
 * rejects with the code grpc-js would give.
 */
function readResponse<Response>(
  session: ClientHttp2Session,
  stream: ClientHttp2Stream,
  type: MethodDefinition<unknown, Response>["responseType"],
  maxBytes: number,
  authority: string,
): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    let headers: (IncomingHttpHeaders & IncomingHttpStatusHeader) | undefined;
    let trailers: IncomingHttpHeaders | undefined;
    /** The leading headers ended the stream: a trailers-only answer. */
    let headersOnly = false;
    let failure: PluginError | undefined;
    let streamError: Error | undefined;
    let settled = false;
    const chunks: Buffer[] = [];
    let received = 0;

    stream.on("response", (fields, flags) => {
      headers = fields;
      headersOnly = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0;
      failure ??= httpFailure(asMap(fields));
      // Not gRPC: the headers say all there is, and the body (a proxy's
      // page, maybe endless) is neither kept nor waited for.
      if (failure) {
        settle();
        stream.close(constants.NGHTTP2_CANCEL);
      }
    });
    stream.on("trailers", (fields) => {
      trailers = fields;
    });
    stream.on("data", (chunk: Buffer) => {
      if (failure) return;
      received += chunk.byteLength;
      if (received > maxBytes + 5 && !failure) {
        failure = new PluginError(
          Code.ResourceExhausted,
          `the server's answer is larger than ${maxBytes} bytes, the most this client takes`,
        );
        stream.close(constants.NGHTTP2_CANCEL);
        return;
      }
      chunks.push(chunk);
    });
    stream.on("error", (error) => {
      streamError = error;
    });
    // The call is over when the server ends its side: its status is in,
    // whether or not our side is done sending (the caller then resets it).
    stream.on("end", settle);
    stream.on("close", settle);

    function settle(): void {
      if (settled) return;
      settled = true;
      try {
        resolve(outcome());
      } catch (error) {
        reject(error);
      }
    }

    function outcome(): Response {
      if (failure) throw failure;
      // A status in the leading headers counts only when they ended the
      // stream (trailers-only), as grpc-js reads it: a stream reset, or cut
      // with its connection, before its trailers has no OK, whatever came before.
      const status = trailers?.["grpc-status"] !== undefined ? trailers : headersOnly ? headers : undefined;
      if (status?.["grpc-status"] === undefined) throw brokenStream();
      const code = Number(status["grpc-status"]);
      if (code !== Code.Ok) throw statusFailure(code, grpcMessage(single(status["grpc-message"])));
      const message = onlyMessage(Buffer.concat(chunks));
      try {
        return type.decode(message);
      } catch (error) {
        throw new PluginError(
          Code.Internal,
          `the server's answer cannot be decoded: ${(error as Error).message}`,
        );
      }
    }

    /** A stream that ended without a status: reset by the server, cut with its connection, or just ended. */
    function brokenStream(): PluginError {
      // A connection that drops ends its streams as if reset with CANCEL;
      // a reset by the server ends the stream before its error is emitted.
      const dropped =
        session.destroyed && (streamError as NodeJS.ErrnoException)?.code !== "ERR_HTTP2_STREAM_ERROR";
      if (!dropped && stream.rstCode === constants.NGHTTP2_REFUSED_STREAM && !headers) {
        const refused = resetFailure(stream.rstCode);
        return new UntakenCall(refused.code, refused.message);
      }
      if (!dropped && stream.rstCode) return resetFailure(stream.rstCode);
      if (!dropped) return new PluginError(Code.Internal, "the stream ended without a gRPC status");
      const why = streamError?.message ?? "the connection closed";
      return new LostConnection(
        Code.Unavailable,
        headers ? `the connection dropped: ${why}` : `cannot reach ${authority}: ${why}`,
        { cause: streamError },
      );
    }
  });
}

/** The one message of a unary answer, from its length-prefixed frame. */
function onlyMessage(body: Buffer): Buffer {
  if (body.byteLength < 5) throw new PluginError(Code.Unimplemented, "the server answered no message");
  if (body[0] !== 0)
    throw new PluginError(Code.Internal, "the server compressed a message that was not asked to be");
  const length = body.readUInt32BE(1);
  if (body.byteLength !== 5 + length) {
    throw new PluginError(
      body.byteLength < 5 + length ? Code.Internal : Code.Unimplemented,
      body.byteLength < 5 + length
        ? "the server's answer was cut short"
        : "the server answered more than one message",
    );
  }
  return body.subarray(5);
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function asMap(fields: IncomingHttpHeaders & IncomingHttpStatusHeader): Map<string, string> {
  const map = new Map<string, string>();
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined) map.set(name, String(single(value as string | string[])));
  }
  return map;
}
