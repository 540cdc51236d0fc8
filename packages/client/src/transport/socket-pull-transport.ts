import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { PullPluginRequest } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { PULL_METADATA } from "atomix-plugins-core/protocol/metadata";
import { PullStreamParser } from "atomix-plugins-core/protocol/pull-stream-parser";
import { answerFailure, diagnose, socketFailure, unansweredFailure } from "../connection-failure.js";
import { cancelled } from "../retry-policy.js";
import type { ServerTarget } from "../server-target.js";
import { type ConnectionState, next } from "./connection-state.js";
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
import {
  type AttemptOptions,
  type AttemptOutcome,
  announcedArtifact,
  attemptOutcome,
  PULL_PATH,
  type PullTransport,
  pullRequestMetadata,
} from "./pull-transport.js";
import { HeaderBlockDecoder } from "./wire/hpack.js";
import {
  CLIENT_PREFACE,
  ErrorCode,
  Flag,
  FrameReader,
  FrameType,
  frame,
  Http2ProtocolError,
  headerFrames,
  Setting,
  settingsFrame,
  windowUpdateFrame,
} from "./wire/http2-frames.js";
import { ReceiveBuffers } from "./wire/receive-buffers.js";

/**
 * PullPlugin spoken by hand over a plain or TLS socket that reads into
 * reused buffers: one gRPC stream at a time on a connection the transport
 * keeps, so a retry or the next pull reuses it (no new TCP or TLS
 * handshake). Pulls running at once get a connection each; one is kept.
 *
 * Why not grpc-js or `node:http2`: both allocate a fresh buffer for every
 * read and every message, so a 64 MiB artifact passes through 64 MiB of new
 * memory that the allocator first has to fault in and later gives back; on
 * the 2-vCPU machines we measure on that alone cost 150–200 ms per 64 MiB,
 * and grpc-js also concatenates each message out of its frames. Here the
 * socket reads into one of three 1 MiB buffers, and the artifact bytes are
 * hashed and written from there as views between the frame headers: nothing
 * per byte is allocated or copied in JavaScript (README, Performance, has
 * the figures). The other calls, small, go over `node:http2`
 * (grpc-channel.ts).
 */
export function socketPullTransport(target: ServerTarget, options: SocketPullOptions = {}): PullTransport {
  checkToken(options.token);
  let kept: PullConnection | undefined;
  let closed = false;
  /** Every connection not yet destroyed (kept, or carrying a pull, or waiting for its tunnel): close() ends them. */
  const live = new Set<PullConnection>();
  const drop = (connection: PullConnection) => {
    live.delete(connection);
    connection.destroy();
  };
  const release = (connection: PullConnection) => {
    if (!closed && kept === undefined && connection.reusable) {
      connection.idle();
      kept = connection;
    } else drop(connection);
  };
  return {
    async pullOnce(key, attempt) {
      if (attempt.signal?.aborted) throw cancelled(attempt.signal);
      if (closed) throw new PluginError(Code.Cancelled, "the client was closed");
      const idle = kept;
      kept = undefined;
      let connection = idle?.reusable ? idle : undefined;
      if (idle && !connection) drop(idle);
      try {
        for (;;) {
          const reused = connection !== undefined;
          if (!connection) {
            connection = new PullConnection(target);
            live.add(connection);
          }
          const call = new PullCall(connection, key, attempt, options);
          try {
            return await call.run();
          } catch (error) {
            // Ended before the server said a byte: say why in words (still
            // connecting at the deadline; an HTTP/1.1 port or a TLS server,
            // found by asking again), so that the message says what to change.
            if (connection.unanswered && !attempt.signal?.aborted && !closed) {
              const failure = PluginError.from(error);
              if (failure.code === Code.DeadlineExceeded) {
                throw unansweredFailure(target.authority, !connection.isConnected);
              }
              if (failure.code === Code.Unavailable && connection.isConnected) {
                throw (await diagnose(target)) ?? failure;
              }
            }
            // A kept connection the server closed meanwhile (its idle
            // timeout, a restart) fails before the call is taken: dial again
            // at once rather than spend an attempt and a backoff on it.
            if (!reused || !call.untaken || attempt.signal?.aborted || closed) throw error;
            drop(connection);
            connection = undefined;
          }
        }
      } finally {
        if (connection) release(connection);
      }
    },
    close() {
      closed = true;
      kept = undefined;
      // Pulls still running (or waiting for a proxy's tunnel) end at once,
      // as the channel's calls do: nothing is left holding the process.
      const closing = new PluginError(Code.Cancelled, "the client was closed during the call");
      for (const connection of live) connection.destroy(closing);
      live.clear();
    },
  };
}

export interface SocketPullOptions {
  /** Sent as `authorization: Bearer <token>`. */
  token?: string;
  userAgent?: string;
}

/**
 * The smallest read worth making; a receive buffer with less room left goes
 * to the writer. Also the size of the buffer a read gets while all wait.
 */
const MIN_READ = 64 * 1024;
/** Bytes handed to `onData` at once: one write system call per MiB. */
const RECEIVE_BUFFER = 1024 * 1024;
/** One filling, one being written, one waiting: the disk and the network both stay busy. */
const RECEIVE_BUFFERS = 3;
/** The stream's window; TCP's own window does the backpressure while reading is paused. */
const STREAM_WINDOW = 16 * 1024 * 1024;
const CONNECTION_WINDOW = 64 * 1024 * 1024;
/** Window handed back once this much was consumed. */
const WINDOW_UPDATE_EVERY = 4 * 1024 * 1024;
const DEFAULT_WINDOW = 65_535;
/** Client streams have odd numbers, each higher than the last; past this a connection is not reused. */
const LAST_STREAM_ID = 2 ** 31 - 1;

/**
 * One HTTP/2 connection to the server, carrying one PullPlugin stream at a
 * time. It owns what lives as long as the connection: the socket, the frame
 * reader, the HPACK table, the connection's flow-control window, and the
 * receive buffers (the socket always holds the memory of its next read, so
 * they cannot change hands between calls).
 */
class PullConnection {
  /** Once there: at once for a direct connection, when the tunnel is up for one through a proxy. */
  private opened: Socket | undefined;
  /** Connecting (TCP, TLS, a proxy's tunnel), ready, draining after a GOAWAY, or closed and why. */
  private state: ConnectionState<Socket | undefined, Socket> = { phase: "idle" };
  /** Settles once the socket is there or the connection died first; undefined when it was there at once. */
  readonly ready: Promise<void> | undefined;
  /** Abandons a tunnel being opened. */
  private readonly opening = new AbortController();
  readonly authority: string;
  private readonly proxy: string | undefined;
  readonly scheme: "http" | "https";
  readonly receive: ReceiveBuffers;
  private readonly frames: FrameReader;
  private readonly headers = new HeaderBlockDecoder();
  private headerBlock: Buffer[] = [];
  private headerStream = 0;
  /** The HEADERS frame being continued carried END_STREAM. */
  private headersEndStream = false;
  /** The stream of the DATA frame being read. */
  private dataStream = 0;
  private nextStreamId = 1;
  private call: PullCall | undefined;
  private unacknowledged = 0;
  private paused = false;
  /** The server sent something: what it answers is HTTP/2 at least, or was told apart as not. */
  private heard = false;

  constructor(target: ServerTarget) {
    this.authority = target.authority;
    this.scheme = target.scheme;
    this.proxy = target.proxy;
    this.receive = new ReceiveBuffers(
      Array.from({ length: RECEIVE_BUFFERS }, () => Buffer.allocUnsafe(RECEIVE_BUFFER)),
      Buffer.allocUnsafe(MIN_READ),
      (segments, release) => {
        if (this.call) this.call.write(segments, release);
        else release();
      },
    );
    this.frames = new FrameReader({
      onFrame: (type, flags, streamId, payload) => this.onFrame(type, flags, streamId, payload),
      onDataStart: (streamId, _flags, length) => {
        this.unacknowledged += length;
        this.dataStream = streamId;
        this.callOn(streamId)?.onDataStart(length);
      },
      onDataBytes: (bytes) => this.callOn(this.dataStream)?.parser.push(bytes),
      onDataEnd: (streamId, flags) => {
        if (flags & Flag.EndStream) this.callOn(streamId)?.endStream();
      },
    });
    this.state = next(this.state, { type: "dial", dial: undefined });
    const opened = target.connect(
      {
        buffer: () => this.receive.next(),
        callback: (bytes) => {
          this.onRead(bytes);
          return true;
        },
      },
      this.opening.signal,
    );
    if (opened instanceof Promise) {
      this.ready = opened.then(
        (socket) => this.attach(socket),
        (error) => this.die(PluginError.from(error)),
      );
    } else this.attach(opened);
  }

  private get socket(): Socket {
    return this.opened as Socket;
  }

  private attach(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.opened = socket;
    this.state = next(this.state, { type: "dial", dial: socket });
    // A tunnel's socket comes connected (TLS over it is still to come).
    if (this.scheme === "http" && !socket.connecting) this.connected(socket);
    socket.setNoDelay(true);
    socket.on("error", (error) => this.die(this.connectionFailure(error)));
    socket.on("close", () => this.die(this.connectionFailure()));
    if (this.scheme === "https") {
      socket.once("secureConnect", () => {
        this.connected(socket);
        const protocol = (socket as TLSSocket).alpnProtocol;
        if (protocol !== "h2") {
          this.die(
            new PluginError(
              Code.Unavailable,
              `${this.authority} did not agree to HTTP/2 (ALPN: ${protocol || "none"})`,
            ),
          );
        }
      });
    } else {
      socket.once("connect", () => this.connected(socket));
    }
    socket.write(
      Buffer.concat([
        CLIENT_PREFACE,
        settingsFrame([
          [Setting.EnablePush, 0],
          [Setting.InitialWindowSize, STREAM_WINDOW],
        ]),
        windowUpdateFrame(0, CONNECTION_WINDOW - DEFAULT_WINDOW),
      ]),
    );
  }

  private get closed(): boolean {
    return this.state.phase === "closed";
  }

  private connected(socket: Socket): void {
    this.state = next(this.state, { type: "connected", link: socket });
  }

  /** Whether another call may start here: its socket there, not closed nor told to go away, stream ids left. */
  get reusable(): boolean {
    const { phase } = this.state;
    return (
      this.opened !== undefined &&
      (phase === "connecting" || phase === "ready") &&
      this.nextStreamId < LAST_STREAM_ID
    );
  }

  /** Opens `call`'s stream and sends its request; throws why if the connection is already gone. */
  start(call: PullCall, headers: [string, string][], message: Buffer): number {
    if (this.state.phase === "closed") throw this.state.reason;
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    this.call = call;
    this.socket.ref();
    this.socket.write(
      Buffer.concat([...headerFrames(id, headers), frame(FrameType.Data, Flag.EndStream, id, message)]),
    );
    return id;
  }

  /** The call is over: what arrives for its stream from now on is read and dropped. */
  detach(call: PullCall, reset: boolean): void {
    if (this.call !== call) return;
    this.call = undefined;
    if (reset && !this.closed) {
      const code = Buffer.alloc(4);
      code.writeUInt32BE(ErrorCode.Cancel, 0);
      this.socket.write(frame(FrameType.RstStream, 0, call.id, code));
    }
    this.resume();
  }

  /** Kept for the next call: it must not hold the process open meanwhile. */
  idle(): void {
    this.socket.unref();
  }

  destroy(failure = new PluginError(Code.Unavailable, "the connection was closed by the client")): void {
    this.die(failure);
  }

  /** Reading waits while every receive buffer waits for the writer. */
  resume(): void {
    if (this.paused && this.receive.hasRoom) {
      this.paused = false;
      this.socket.resume();
    }
  }

  /** Window handed back for a stream's DATA once enough was consumed. */
  windowUpdate(streamId: number, increment: number): void {
    if (!this.closed) this.socket.write(windowUpdateFrame(streamId, increment));
  }

  private callOn(streamId: number): PullCall | undefined {
    return this.call !== undefined && this.call.id === streamId ? this.call : undefined;
  }

  /** `bytes` were read into the receive buffers; nothing thrown here may escape into the socket's callback. */
  private onRead(bytes: number): void {
    if (this.closed) return;
    try {
      const received = this.receive.received(bytes);
      if (!this.heard) {
        this.heard = true;
        // An HTTP/1.1 page or a TLS record where HTTP/2 frames were expected, said in words.
        const other = answerFailure(this.authority, received);
        if (other) {
          this.die(other);
          return;
        }
      }
      this.frames.push(received);
    } catch (error) {
      this.die(
        error instanceof Http2ProtocolError
          ? new PluginError(Code.Internal, `the server broke the HTTP/2 protocol: ${error.message}`)
          : PluginError.from(error),
      );
      return;
    }
    if (this.unacknowledged >= WINDOW_UPDATE_EVERY) {
      this.windowUpdate(0, this.unacknowledged);
      this.unacknowledged = 0;
    }
    this.call?.acknowledge();
    if (!this.receive.hasRoom && !this.paused && !this.closed) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    switch (type) {
      case FrameType.Settings:
        if (!(flags & Flag.Ack)) this.socket.write(frame(FrameType.Settings, Flag.Ack, 0, Buffer.alloc(0)));
        return;
      case FrameType.Ping:
        if (!(flags & Flag.Ack)) this.socket.write(frame(FrameType.Ping, Flag.Ack, 0, payload));
        return;
      case FrameType.GoAway: {
        const lastStream = payload.readUInt32BE(0) & 0x7fffffff;
        const goAway = { lastStream, error: payload.readUInt32BE(4) };
        this.state = next(this.state, { type: "go-away", link: this.socket, goAway });
        if (this.call && lastStream < this.call.id) {
          this.call.fail(
            new PluginError(Code.Unavailable, "the server is going away and did not take the call"),
            true,
          );
        }
        return;
      }
      case FrameType.PushPromise:
        throw new Http2ProtocolError("PUSH_PROMISE, though push was disabled");
      case FrameType.RstStream:
        this.callOn(streamId)?.reset(payload.readUInt32BE(0));
        return;
      case FrameType.Headers:
      case FrameType.Continuation:
        break;
      default:
        return;
    }
    // Every header block is decoded, a dropped stream's too: the HPACK table is the connection's.
    if (type === FrameType.Headers) {
      this.headerStream = streamId;
      this.headersEndStream = (flags & Flag.EndStream) !== 0;
    }
    this.headerBlock.push(type === FrameType.Headers ? headersContent(flags, payload) : payload);
    if (!(flags & Flag.EndHeaders)) return;
    const fields = this.headers.decode(Buffer.concat(this.headerBlock));
    this.headerBlock = [];
    const call = this.callOn(this.headerStream);
    call?.onHeaders(fields);
    if (this.headersEndStream) call?.endStream();
  }

  /** The connection is gone (or unusable): the call on it fails with `failure`. */
  private die(failure: PluginError): void {
    if (this.closed) return;
    this.state = next(this.state, { type: "close", reason: failure });
    this.opening.abort();
    this.opened?.destroy();
    this.call?.fail(failure, !this.call.responded);
  }

  /** Direct, and the server has not sent a single byte. */
  get unanswered(): boolean {
    return !this.heard && this.proxy === undefined;
  }

  /** The connection was made (TCP, and TLS when asked for), whether or not it is still there. */
  get isConnected(): boolean {
    const { state } = this;
    return (
      state.phase === "ready" || state.phase === "draining" || (state.phase === "closed" && state.reached)
    );
  }

  private connectionFailure(error?: Error): PluginError {
    const why = error?.message ?? "the connection closed";
    if (!this.heard && error && this.proxy === undefined) {
      const told = socketFailure(this.authority, error);
      if (told) return told;
    }
    if (!this.isConnected) {
      const through = this.proxy === undefined ? "" : ` through the proxy ${this.proxy}`;
      return new PluginError(Code.Unavailable, `cannot connect to ${this.authority}${through}: ${why}`);
    }
    const goAway = this.state.phase === "draining" ? ` (GOAWAY ${this.state.goAway.error})` : "";
    return new PluginError(Code.Unavailable, `the connection dropped: ${why}${goAway}`);
  }
}

/** One attempt: a stream on a connection; the response read into the connection's receive buffers. */
class PullCall {
  id = 0;
  readonly parser: PullStreamParser;
  /** The server sent the response headers: the call was taken. */
  responded = false;
  /** The call failed before the server took it, because of the connection: another connection may take it. */
  untaken = false;
  private response: Map<string, string> | undefined;
  private trailers: Map<string, string> | undefined;
  private failure: PluginError | undefined;
  private changed = false;
  private finished = false;
  /** The server ended the stream (END_STREAM or RST_STREAM): nothing to reset. */
  private closedByServer = false;
  private finish!: () => void;
  private readonly done = new Promise<void>((resolve) => {
    this.finish = resolve;
  });
  /** Receive buffers handed to `onData` one after the other, in order. */
  private writes: Promise<void> = Promise.resolve();
  private writeFailed = false;
  /** This stream's DATA bytes not yet handed back as window. */
  private unacknowledged = 0;

  constructor(
    private readonly connection: PullConnection,
    private readonly key: BuildKey,
    private readonly attempt: AttemptOptions,
    private readonly options: SocketPullOptions,
  ) {
    this.parser = new PullStreamParser((data) => connection.receive.keep(data));
  }

  async run(): Promise<AttemptOutcome> {
    const { signal, deadline } = this.attempt;
    const onAbort = () => this.fail(cancelled(signal as AbortSignal));
    signal?.addEventListener("abort", onAbort, { once: true });
    const stopTimer =
      deadline === undefined
        ? undefined
        : atDeadline(deadline, () =>
            this.fail(new PluginError(Code.DeadlineExceeded, "the pull passed its deadline")),
          );
    try {
      // Through a proxy: the tunnel first, within the call's deadline.
      if (this.connection.ready) await Promise.race([this.connection.ready, this.done]);
      if (!this.finished) {
        this.id = this.connection.start(this, this.requestHeaders(), requestMessage(this.key));
        await this.done;
      }
    } catch (error) {
      // The connection was gone before the stream opened.
      this.untaken = true;
      this.failure ??= PluginError.from(error);
    } finally {
      stopTimer?.();
      signal?.removeEventListener("abort", onAbort);
    }
    // Bytes in hand before the transport broke are good: they are written
    // for the resumed attempt. Abandoned ones are dropped.
    const keepBytes =
      this.failure === undefined ||
      (!this.writeFailed && !this.changed && this.failure.code !== Code.Cancelled);
    if (keepBytes) this.connection.receive.handOver();
    else this.connection.receive.discard();
    this.connection.detach(this, !this.closedByServer);
    // Never return while a write of ours may still touch the caller's file.
    await this.writes.catch(() => {});
    if (this.changed) return "changed";
    if (this.failure) throw this.failure;
    return this.outcome();
  }

  private requestHeaders(): [string, string][] {
    const { attempt, options, connection } = this;
    return [
      [":method", "POST"],
      [":scheme", connection.scheme],
      [":path", PULL_PATH],
      [":authority", connection.authority],
      ...requestHeaders({ ...options, deadline: attempt.deadline }),
      ...pullRequestMetadata(attempt),
    ];
  }

  onHeaders(fields: Map<string, string>): void {
    if (this.finished) return;
    if (this.response !== undefined) {
      this.trailers = fields;
      return;
    }
    this.response = fields;
    this.responded = true;
    const failure = httpFailure(fields);
    if (failure) {
      this.fail(failure);
      return;
    }
    if (fields.has("grpc-status")) return; // trailers-only: an error before any message
    try {
      if (!this.attempt.onHeaders(announcedIn(fields))) {
        this.changed = true;
        this.stop();
      }
    } catch (error) {
      this.fail(PluginError.from(error));
    }
  }

  onDataStart(length: number): void {
    this.unacknowledged += length;
    if (this.response === undefined) throw new Http2ProtocolError("DATA before the response headers");
  }

  /** Hands back this stream's window once enough was consumed. */
  acknowledge(): void {
    if (this.unacknowledged >= WINDOW_UPDATE_EVERY && !this.finished) {
      this.connection.windowUpdate(this.id, this.unacknowledged);
      this.unacknowledged = 0;
    }
  }

  /** Hands a full receive buffer's artifact bytes to `onData`, after those before it. */
  write(segments: Buffer[], release: () => void): void {
    this.writes = this.writes.then(async () => {
      // A broken connection does not spoil bytes already in hand: they are still written.
      if (!this.writeFailed && !this.changed) {
        try {
          await this.attempt.onData(segments);
        } catch (error) {
          // Ours (the disk, too many bytes), not the transport's; it fails
          // the call even after the stream ended well.
          this.writeFailed = true;
          this.failure ??= PluginError.from(error);
          this.stop();
        }
      }
      release();
      this.connection.resume();
    });
  }

  endStream(): void {
    this.closedByServer = true;
    this.stop();
  }

  /** The server reset the stream: it is closed, and answered with nothing. */
  reset(errorCode: number): void {
    this.closedByServer = true;
    this.fail(resetFailure(errorCode));
  }

  /** Ends the call with `failure`; `untaken` when the connection failed before the server took it. */
  fail(failure: PluginError, untaken = false): void {
    if (this.finished) return;
    this.failure ??= failure;
    if (untaken) this.untaken = true;
    this.stop();
  }

  private stop(): void {
    if (this.finished) return;
    this.finished = true;
    this.finish();
  }

  /** After the stream ended: the status, and the last bytes handed over. */
  private async outcome(): Promise<AttemptOutcome> {
    const status = this.trailers ?? (this.response?.has("grpc-status") ? this.response : undefined);
    if (!status) {
      // grpc-js's code for it too (a reset with NO_ERROR before the trailers).
      throw new PluginError(Code.Internal, "the stream ended without a gRPC status");
    }
    const code = Number(status.get("grpc-status"));
    if (code !== Code.Ok) throw statusFailure(code, grpcMessage(status.get("grpc-message")));
    if (!this.parser.atMessageBoundary) {
      throw new PluginError(Code.Internal, "the stream ended with OK in the middle of a message");
    }
    this.attempt.onTrailers?.(announcedIn(status));
    return attemptOutcome(status.get(PULL_METADATA.notModified));
  }
}

/** The digest and size a header block announces; an empty value announces nothing. */
function announcedIn(fields: Map<string, string>) {
  return announcedArtifact(
    fields.get(PULL_METADATA.digest) || undefined,
    fields.get(PULL_METADATA.size) || undefined,
  );
}

/** A HEADERS payload without its padding and priority fields. */
function headersContent(flags: number, payload: Buffer): Buffer {
  let start = 0;
  let end = payload.length;
  if (flags & Flag.Padded) {
    end -= payload[0] as number;
    start += 1;
  }
  if (flags & Flag.Priority) start += 5;
  if (start > end) throw new Http2ProtocolError("HEADERS padding longer than the frame");
  return payload.subarray(start, end);
}

function requestMessage(key: BuildKey): Buffer {
  return frameMessage(
    PullPluginRequest.encode({ runtime: { ...key.runtime }, plugin: { ...key.plugin } }).finish(),
  );
}
