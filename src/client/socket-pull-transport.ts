import { readFileSync } from "node:fs";
import { connect as connectTcp, isIP, type Socket } from "node:net";
import { type ConnectionOptions, connect as connectTls, type TLSSocket } from "node:tls";
import { Code, PluginError } from "../errors/plugin-error.js";
import { PullPluginRequest } from "../gen/atomix/runtime/v1/plugin.js";
import type { BuildKey } from "../model/build-key.js";
import { PULL_METADATA } from "../protocol/metadata.js";
import { PullStreamParser } from "../protocol/pull-stream-parser.js";
import type { TlsOptions } from "./channel-credentials.js";
import {
  type AttemptOptions,
  type AttemptOutcome,
  announcedArtifact,
  type PullTransport,
} from "./pull-transport.js";
import { cancelled } from "./retry-policy.js";
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
 * PullPlugin as one gRPC call on a connection of its own, spoken by hand
 * over a plain or TLS socket that reads into reused buffers.
 *
 * Why not grpc-js or `node:http2`: both allocate a fresh buffer for every
 * read and every message, so a 64 MiB artifact passes through 64 MiB of new
 * memory that the allocator first has to fault in and later gives back; on
 * the 2-vCPU machines we measure on that alone cost 150–200 ms per 64 MiB,
 * and grpc-js also concatenates each message out of its frames. Here the
 * socket reads into one of three 1 MiB buffers, and the artifact bytes are
 * hashed and written from there as views between the frame headers: nothing
 * per byte is allocated or copied in JavaScript (README, Performance, has
 * the figures). Compile and admin calls stay on grpc-js.
 */
export function socketPullTransport(target: PullTarget, options: SocketPullOptions = {}): PullTransport {
  const spare: BufferSet[] = [];
  return {
    async pullOnce(key, attempt) {
      if (attempt.signal?.aborted) throw cancelled(attempt.signal);
      const buffers = spare.pop() ?? newBufferSet();
      try {
        return await new PullCall(target, key, attempt, options, buffers).run();
      } finally {
        spare.push(buffers);
      }
    },
    close() {
      spare.length = 0;
    },
  };
}

export interface SocketPullOptions {
  /** Sent as `authorization: Bearer <token>`. */
  token?: string;
  userAgent?: string;
}

/** Where and how to connect. */
export interface PullTarget {
  /** `:authority`, and the name the server's certificate must carry with TLS. */
  authority: string;
  scheme: "http" | "https";
  connect(onread: { buffer: () => Buffer; callback: (bytes: number, buffer: Buffer) => boolean }): Socket;
}

/**
 * The connection for a grpc-js style address (`host:port`, `[v6]:port`,
 * `dns:host:port`, `unix:/path`), or undefined when only grpc-js can reach
 * it: other name resolvers, or an HTTP proxy in the environment (grpc-js
 * honours `grpc_proxy`, `https_proxy` and `http_proxy`).
 */
export function pullTarget(
  address: string,
  tls: TlsOptions | undefined,
  env: NodeJS.ProcessEnv = process.env,
): PullTarget | undefined {
  if (env.grpc_proxy || env.https_proxy || env.http_proxy) return undefined;
  let where: { path: string } | { host: string; port: number };
  let authority: string;
  let servername = tls?.serverName;
  if (address.startsWith("unix:")) {
    const path = address.slice(address.startsWith("unix://") ? 7 : 5);
    if (!path) return undefined;
    where = { path };
    authority = servername ?? "localhost";
  } else {
    const match = /^(\[[0-9a-fA-F:.]+\]|[^:/[\]]+)(?::(\d{1,5}))?$/.exec(
      address.replace(/^dns:(\/\/\/)?/, ""),
    );
    if (!match) return undefined;
    const host = (match[1] as string).replace(/^\[|\]$/g, "");
    const port = Number(match[2] ?? 443); // grpc-js's default, TLS or not
    where = { host, port };
    authority = servername ?? `${match[1]}:${port}`;
    servername ??= isIP(host) ? undefined : host;
  }
  const secure = tls ? { ...tlsConnectOptions(tls), servername } : undefined;
  return {
    authority,
    scheme: secure ? "https" : "http",
    connect: (onread) =>
      secure ? tlsSocket({ ...secure, ...where, onread }) : connectTcp({ ...where, onread }),
  };
}

/** TLS sockets take `onread` as plain ones do (Node.js ≥ 12.17); @types/node does not say so. */
function tlsSocket(options: ConnectionOptions & { onread: unknown }): TLSSocket {
  return connectTls(options);
}

function tlsConnectOptions(tls: TlsOptions) {
  const read = (path: string | undefined) => (path ? readFileSync(path) : undefined);
  return { ca: read(tls.caFile), cert: read(tls.certFile), key: read(tls.keyFile), ALPNProtocols: ["h2"] };
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
const STREAM_ID = 1;
const PATH = "/atomix.runtime.v1.PluginRegistry/PullPlugin";

interface BufferSet {
  receive: Buffer[];
  overflow: Buffer;
}

function newBufferSet(): BufferSet {
  return {
    receive: Array.from({ length: RECEIVE_BUFFERS }, () => Buffer.allocUnsafe(RECEIVE_BUFFER)),
    overflow: Buffer.allocUnsafe(MIN_READ),
  };
}

/** One attempt: connect, send the request, read the response into the receive buffers, end. */
class PullCall {
  private socket: Socket | undefined;
  private readonly frames: FrameReader;
  private readonly headers = new HeaderBlockDecoder();
  private readonly parser: PullStreamParser;
  private headerBlock: Buffer[] = [];
  private response: Map<string, string> | undefined;
  private trailers: Map<string, string> | undefined;
  /** The HEADERS frame being continued carried END_STREAM: the stream ends with its block. */
  private headersEndStream = false;
  private failure: PluginError | undefined;
  private changed = false;
  private finished = false;
  private finish!: () => void;
  private readonly done = new Promise<void>((resolve) => {
    this.finish = resolve;
  });

  private readonly receive: ReceiveBuffers;
  /** Receive buffers handed to `onData` one after the other, in order. */
  private writes: Promise<void> = Promise.resolve();
  private paused = false;
  private unacknowledged = 0;
  private goAwayError: number | undefined;
  private connected = false;
  private writeFailed = false;

  constructor(
    private readonly target: PullTarget,
    private readonly key: BuildKey,
    private readonly attempt: AttemptOptions,
    private readonly options: SocketPullOptions,
    buffers: BufferSet,
  ) {
    this.receive = new ReceiveBuffers(buffers.receive, buffers.overflow, (segments, release) =>
      this.write(segments, release),
    );
    this.parser = new PullStreamParser((data) => this.receive.keep(data));
    this.frames = new FrameReader({
      onFrame: (type, flags, streamId, payload) => this.onFrame(type, flags, streamId, payload),
      onDataStart: (streamId, _flags, length) => this.onDataStart(streamId, length),
      onDataBytes: (bytes) => this.parser.push(bytes),
      onDataEnd: (streamId, flags) => {
        if (streamId === STREAM_ID && flags & Flag.EndStream) this.endStream();
      },
    });
  }

  async run(): Promise<AttemptOutcome> {
    const { signal, deadline } = this.attempt;
    const onAbort = () => this.fail(cancelled(signal as AbortSignal));
    signal?.addEventListener("abort", onAbort, { once: true });
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(
            () => this.fail(new PluginError(Code.DeadlineExceeded, "the pull passed its deadline")),
            Math.max(0, deadline - Date.now()),
          );
    try {
      this.open();
      await this.done;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      this.socket?.destroy();
      // Never return while a write of ours may still touch the caller's file.
      await this.writes.catch(() => {});
    }
    if (this.changed) return "changed";
    if (this.failure) {
      // Bytes in hand before the transport broke are good; keep them for the resumed attempt.
      const transportBroke = !this.writeFailed && this.failure.code !== Code.Cancelled;
      if (transportBroke) {
        this.receive.flush();
        await this.writes.catch(() => {});
      }
      throw this.failure;
    }
    return this.outcome();
  }

  private open(): void {
    const socket = this.target.connect({
      buffer: () => this.receive.next(),
      callback: (bytes) => {
        if (!this.finished) this.onRead(bytes);
        return true;
      },
    });
    this.socket = socket;
    socket.setNoDelay(true);
    // After the stream ended, what the socket does no longer matters.
    socket.on("error", (error) => {
      if (!this.finished) this.fail(this.connectionFailure(error));
    });
    socket.on("close", () => {
      if (!this.finished) this.fail(this.connectionFailure());
    });
    if (this.target.scheme === "https") {
      socket.once("secureConnect", () => {
        this.connected = true;
        const protocol = (socket as TLSSocket).alpnProtocol;
        if (protocol !== "h2") {
          this.fail(
            new PluginError(
              Code.Unavailable,
              `${this.target.authority} did not agree to HTTP/2 (ALPN: ${protocol || "none"})`,
            ),
          );
        }
      });
    } else {
      socket.once("connect", () => {
        this.connected = true;
      });
    }
    socket.write(
      Buffer.concat([
        CLIENT_PREFACE,
        settingsFrame([
          [Setting.EnablePush, 0],
          [Setting.InitialWindowSize, STREAM_WINDOW],
        ]),
        windowUpdateFrame(0, CONNECTION_WINDOW - DEFAULT_WINDOW),
        ...headerFrames(STREAM_ID, this.requestHeaders()),
        frame(FrameType.Data, Flag.EndStream, STREAM_ID, requestMessage(this.key)),
      ]),
    );
  }

  private requestHeaders(): [string, string][] {
    const { attempt, options, target } = this;
    const headers: [string, string][] = [
      [":method", "POST"],
      [":scheme", target.scheme],
      [":path", PATH],
      [":authority", target.authority],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ["grpc-accept-encoding", "identity"],
      ["user-agent", options.userAgent ?? "atomix-plugins-client"],
    ];
    if (attempt.deadline !== undefined) {
      headers.push(["grpc-timeout", grpcTimeout(attempt.deadline - Date.now())]);
    }
    if (attempt.offset > 0) headers.push([PULL_METADATA.offset, String(attempt.offset)]);
    if (attempt.ifNoneMatch) headers.push([PULL_METADATA.ifNoneMatch, attempt.ifNoneMatch]);
    if (options.token) headers.push(["authorization", `Bearer ${options.token}`]);
    return headers;
  }

  /** `bytes` were read into the receive buffers; nothing thrown here may escape into the socket's callback. */
  private onRead(bytes: number): void {
    if (this.finished) return;
    try {
      this.frames.push(this.receive.received(bytes));
    } catch (error) {
      this.fail(
        error instanceof Http2ProtocolError
          ? new PluginError(Code.Internal, `the server broke the HTTP/2 protocol: ${error.message}`)
          : PluginError.from(error),
      );
      return;
    }
    if (this.unacknowledged >= WINDOW_UPDATE_EVERY && !this.finished) {
      this.socket?.write(
        Buffer.concat([
          windowUpdateFrame(0, this.unacknowledged),
          windowUpdateFrame(STREAM_ID, this.unacknowledged),
        ]),
      );
      this.unacknowledged = 0;
    }
    if (!this.receive.hasRoom && !this.paused) {
      this.paused = true;
      this.socket?.pause();
    }
  }

  private onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    switch (type) {
      case FrameType.Settings:
        if (!(flags & Flag.Ack)) this.socket?.write(frame(FrameType.Settings, Flag.Ack, 0, Buffer.alloc(0)));
        return;
      case FrameType.Ping:
        if (!(flags & Flag.Ack)) this.socket?.write(frame(FrameType.Ping, Flag.Ack, 0, payload));
        return;
      case FrameType.GoAway: {
        const lastStream = payload.readUInt32BE(0) & 0x7fffffff;
        this.goAwayError = payload.readUInt32BE(4);
        if (lastStream < STREAM_ID) {
          this.fail(new PluginError(Code.Unavailable, "the server is going away and did not take the call"));
        }
        return;
      }
      case FrameType.PushPromise:
        throw new Http2ProtocolError("PUSH_PROMISE, though push was disabled");
    }
    if (streamId !== STREAM_ID) return;
    if (type === FrameType.RstStream) {
      this.fail(resetFailure(payload.readUInt32BE(0)));
      return;
    }
    if (type !== FrameType.Headers && type !== FrameType.Continuation) return;
    this.headerBlock.push(type === FrameType.Headers ? headersContent(flags, payload) : payload);
    if (type === FrameType.Headers) this.headersEndStream = (flags & Flag.EndStream) !== 0;
    if (!(flags & Flag.EndHeaders)) return;
    const fields = this.headers.decode(Buffer.concat(this.headerBlock));
    this.headerBlock = [];
    if (this.response === undefined) this.onResponse(fields);
    else this.trailers = fields;
    if (this.headersEndStream) this.endStream();
  }

  private onResponse(fields: Map<string, string>): void {
    this.response = fields;
    const failure = httpFailure(fields);
    if (failure) {
      this.fail(failure);
      return;
    }
    if (fields.has("grpc-status")) return; // trailers-only: an error before any message
    const announced = announcedArtifact(
      fields.get(PULL_METADATA.digest) ?? "",
      fields.get(PULL_METADATA.size) ?? "",
    );
    if (!this.attempt.onHeaders(announced)) {
      this.changed = true;
      this.stop();
    }
  }

  private onDataStart(streamId: number, length: number): void {
    this.unacknowledged += length;
    if (streamId === STREAM_ID && this.response === undefined) {
      throw new Http2ProtocolError("DATA before the response headers");
    }
  }

  /** Hands a full receive buffer's artifact bytes to `onData`, after those before it. */
  private write(segments: Buffer[], release: () => void): void {
    this.writes = this.writes.then(async () => {
      // A broken connection does not spoil bytes already in hand: they are still written.
      if (!this.writeFailed && !this.changed) {
        try {
          await this.attempt.onData(segments);
        } catch (error) {
          // Ours (the disk, too many bytes), not the transport's.
          this.writeFailed = true;
          this.fail(PluginError.from(error));
        }
      }
      release();
      if (this.paused && !this.finished) {
        this.paused = false;
        this.socket?.resume();
      }
    });
  }

  private endStream(): void {
    this.finished = true;
    this.socket?.end();
    this.finish();
  }

  private fail(failure: PluginError): void {
    this.failure ??= failure;
    this.stop();
  }

  private stop(): void {
    if (this.finished) return;
    this.finished = true;
    this.socket?.destroy();
    this.finish();
  }

  private connectionFailure(error?: Error): PluginError {
    const why = error?.message ?? "the connection closed";
    if (!this.connected) {
      return new PluginError(Code.Unavailable, `cannot connect to ${this.target.authority}: ${why}`);
    }
    const goAway = this.goAwayError === undefined ? "" : ` (GOAWAY ${this.goAwayError})`;
    return new PluginError(Code.Unavailable, `the connection dropped: ${why}${goAway}`);
  }

  /** After the stream ended: the status, and the last bytes handed over. */
  private async outcome(): Promise<AttemptOutcome> {
    const status = this.trailers ?? (this.response?.has("grpc-status") ? this.response : undefined);
    if (!status) {
      throw new PluginError(Code.Unavailable, "the stream ended without a gRPC status");
    }
    const code = Number(status.get("grpc-status"));
    if (code !== Code.Ok) {
      throw new PluginError(
        Number.isInteger(code) && code > 0 && code <= 16 ? (code as Code) : Code.Unknown,
        grpcMessage(status.get("grpc-message")),
      );
    }
    if (!this.parser.atMessageBoundary) {
      throw new PluginError(Code.Internal, "the stream ended with OK in the middle of a message");
    }
    this.receive.flush();
    await this.writes;
    if (this.failure) throw this.failure;
    if (status.get(PULL_METADATA.notModified) === "true") return "not-modified";
    return "complete";
  }
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

/** gRPC's timeout header: at most 8 digits, so long deadlines go in seconds. */
function grpcTimeout(ms: number): string {
  const millis = Math.max(1, Math.ceil(ms));
  return millis <= 99_999_999 ? `${millis}m` : `${Math.min(99_999_999, Math.ceil(millis / 1000))}S`;
}

function requestMessage(key: BuildKey): Buffer {
  const message = PullPluginRequest.encode({
    runtime: { ...key.runtime },
    plugin: { ...key.plugin },
  }).finish();
  const out = Buffer.allocUnsafe(5 + message.byteLength);
  out[0] = 0;
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
}

/** A response that is not gRPC at all (a proxy's error page), mapped as gRPC's HTTP status table says. */
function httpFailure(headers: Map<string, string>): PluginError | undefined {
  const status = Number(headers.get(":status"));
  if (status !== 200) {
    return new PluginError(
      HTTP_TO_GRPC[status] ?? Code.Unknown,
      `the server answered HTTP ${status} instead of a gRPC response`,
    );
  }
  const contentType = headers.get("content-type") ?? "";
  if (!contentType.startsWith("application/grpc")) {
    return new PluginError(Code.Unknown, `the server answered with content-type "${contentType}", not gRPC`);
  }
  const encoding = headers.get("grpc-encoding");
  if (encoding !== undefined && encoding !== "identity") {
    return new PluginError(
      Code.Internal,
      `the server compressed the stream with ${encoding}, which was not asked for`,
    );
  }
  return undefined;
}

const HTTP_TO_GRPC: Record<number, Code> = {
  400: Code.Internal,
  401: Code.Unauthenticated,
  403: Code.PermissionDenied,
  404: Code.Unimplemented,
  429: Code.Unavailable,
  502: Code.Unavailable,
  503: Code.Unavailable,
  504: Code.Unavailable,
};

/** RST_STREAM codes as grpc-js reports them. */
function resetFailure(code: number): PluginError {
  switch (code) {
    case ErrorCode.RefusedStream:
      return new PluginError(Code.Unavailable, "the server refused the stream");
    case ErrorCode.Cancel:
      return new PluginError(Code.Cancelled, "the server cancelled the stream");
    case ErrorCode.EnhanceYourCalm:
      return new PluginError(Code.ResourceExhausted, "the server reset the stream: too many requests");
    default:
      return new PluginError(Code.Internal, `Received RST_STREAM with code ${code}`);
  }
}

function grpcMessage(value: string | undefined): string {
  const raw = value ?? "";
  try {
    return decodeURIComponent(raw) || "(no message)";
  } catch {
    return raw || "(no message)";
  }
}
