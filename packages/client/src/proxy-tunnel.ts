import { connect as connectTcp, type OnReadOpts, type Socket } from "node:net";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { HttpProxy } from "./proxy-selection.js";

/** The most of a CONNECT answer's status line and headers read: a proxy is hostile until checked. */
const MAX_ANSWER = 16 * 1024;
/** How much of a refusing status line a message quotes. */
const MAX_QUOTED = 200;
const HEADER_END = Buffer.from("\r\n\r\n");
/** The one read after early bytes that is copied into the caller's buffers (see `scratch`). */
const MIN_SCRATCH = 64 * 1024;

export interface TunnelOptions {
  proxy: HttpProxy;
  /** `host:port` the tunnel leads to (IPv6 in brackets). */
  target: string;
  /**
   * The caller's reader, for a tunnel whose bytes the caller reads as they
   * come (no TLS on top): the answer is read into a buffer of the tunnel's
   * own, then every read goes to `onread`, the server's bytes that came
   * with the answer first.
   */
  onread?: OnReadOpts | undefined;
  /** Abandons the tunnel (the caller's deadline, a closed client): the socket is destroyed. */
  signal?: AbortSignal | undefined;
  /**
   * TLS comes next: the server speaks only after our hello, so bytes after
   * the proxy's answer are a protocol error.
   */
  tlsFollows: boolean;
}

/**
 * A socket to `target` through `proxy`'s HTTP CONNECT tunnel, once the
 * proxy answered 2xx; UNAVAILABLE, naming the proxy (never its password)
 * and the target, when it cannot be reached, refuses, or answers what is
 * not HTTP.
 */
export function openTunnel(options: TunnelOptions): Promise<Socket> {
  const { proxy, target, onread, signal, tlsFollows } = options;
  return new Promise<Socket>((resolve, reject) => {
    const answer = Buffer.allocUnsafe(MAX_ANSWER);
    let filled = 0;
    let open = false;
    /**
     * The memory of the socket's first read after the answer, when early
     * bytes wait for the caller: the socket took its next buffer from the
     * caller's reader already, which delivering the early bytes would hand
     * out a second time, and that read would land on them.
     */
    let scratch: Buffer | undefined;
    let settled = false;
    const fail = (message: string) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      reject(new PluginError(Code.Unavailable, message));
    };
    const onAbort = () => fail(`connecting to ${target} through the proxy ${proxy.shown} was abandoned`);

    /**
     * Takes `bytes` more of the answer (already in `answer`), and `beyond`,
     * what the read held past the room left; true once the tunnel is open.
     */
    const took = (bytes: number, beyond?: Buffer): boolean => {
      const searchFrom = Math.max(0, filled - 3);
      filled += bytes;
      const end = answer.subarray(0, filled).indexOf(HEADER_END, searchFrom);
      if (end < 0) {
        if (filled >= MAX_ANSWER) {
          fail(
            `the proxy ${proxy.shown} answered the CONNECT to ${target} with more than ${MAX_ANSWER} bytes of headers`,
          );
        }
        return false;
      }
      const failure = refusal(answer.subarray(0, end).toString("latin1"), proxy, target);
      if (failure) {
        fail(failure);
        return false;
      }
      const after = answer.subarray(end + HEADER_END.length, filled);
      const early = beyond?.length ? Buffer.concat([after, beyond]) : after;
      if (early.length > 0 && tlsFollows) {
        fail(
          `the proxy ${proxy.shown} sent ${early.length} bytes after its answer to the CONNECT to ${target}, before the TLS handshake began`,
        );
        return false;
      }
      open = true;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      socket.removeListener("close", onClose);
      // The caller listens from the next microtask on; until then an error is its to find.
      socket.removeListener("error", onError);
      socket.on("error", () => {});
      if (onread) {
        // The caller attaches to the socket once the promise resolves: the
        // server's early bytes wait for it, and reading waits for them.
        if (early.length > 0) {
          const held = Buffer.from(early);
          scratch = Buffer.allocUnsafe(MIN_SCRATCH);
          socket.pause();
          setImmediate(() => {
            deliver(onread, held);
            if (!socket.destroyed) socket.resume();
          });
        }
      } else {
        socket.removeListener("data", onData);
        socket.pause();
        if (early.length > 0) socket.unshift(Buffer.from(early));
      }
      resolve(socket);
      return true;
    };

    const onData = (chunk: Buffer) => {
      const bytes = Math.min(chunk.length, MAX_ANSWER - filled);
      chunk.copy(answer, filled, 0, bytes);
      took(bytes, chunk.subarray(bytes));
    };
    // Reads go into `answer` until the tunnel is open, then into the caller's buffers.
    const reader: OnReadOpts | undefined = onread && {
      buffer: () => (open ? (scratch ?? readBuffer(onread)) : answer.subarray(filled)),
      callback: (bytes, buffer) => {
        if (open && buffer === scratch) {
          scratch = undefined;
          return deliver(onread, (buffer as Buffer).subarray(0, bytes));
        }
        if (open) return onread.callback(bytes, buffer);
        took(bytes);
        return true;
      },
    };
    const onError = (error: Error) =>
      fail(`cannot reach the proxy ${proxy.shown} (to connect to ${target}): ${error.message}`);
    const onClose = () =>
      fail(`the proxy ${proxy.shown} closed the connection before answering the CONNECT to ${target}`);

    const socket = connectTcp({ host: proxy.host, port: proxy.port, ...(reader && { onread: reader }) });
    socket.on("error", onError);
    socket.on("close", onClose);
    if (!reader) socket.on("data", onData);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    socket.setNoDelay(true);
    socket.write(connectRequest(proxy, target));
  });
}

function connectRequest(proxy: HttpProxy, target: string): string {
  const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
  if (proxy.credentials) {
    const { user, password } = proxy.credentials;
    lines.push(`Proxy-Authorization: Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`);
  }
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** Why the proxy's answer (its head, without the blank line) does not open the tunnel; undefined when it does. */
function refusal(head: string, proxy: HttpProxy, target: string): string | undefined {
  const statusLine = head.split("\r\n", 1)[0] as string;
  const match = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine);
  const quoted = JSON.stringify(
    statusLine.length > MAX_QUOTED ? `${statusLine.slice(0, MAX_QUOTED)}…` : statusLine,
  );
  if (!match)
    return `the proxy ${proxy.shown} answered the CONNECT to ${target} with what is not HTTP: ${quoted}`;
  const status = Number(match[1]);
  if (status >= 200 && status < 300) return undefined;
  // 407 is the proxy's own "who are you"; some proxies (tinyproxy, for
  // credentials it refuses) answer a CONNECT with 401 instead.
  if (status === 407 || status === 401) {
    return proxy.credentials
      ? `the proxy ${proxy.shown} refused the credentials given for it when connecting to ${target}: ${quoted}`
      : `the proxy ${proxy.shown} needs credentials to connect to ${target} (${quoted}): give them as http://user:password@host:port`;
  }
  return `the proxy ${proxy.shown} refused to connect to ${target}: ${quoted}`;
}

function readBuffer(onread: OnReadOpts): Uint8Array {
  return typeof onread.buffer === "function" ? onread.buffer() : onread.buffer;
}

/**
 * Hands `bytes` to a caller's reader as if the socket had read them into its
 * buffers: once per connection for a plaintext tunnel's early bytes, and for
 * every read of a TLS socket over a tunnel (Node.js gives such a socket no
 * reader of its own), one copy each.
 */
export function deliver(onread: OnReadOpts, bytes: Buffer): boolean {
  let offset = 0;
  let flowing = true;
  while (offset < bytes.length) {
    const into = readBuffer(onread);
    const count = Math.min(into.length, bytes.length - offset);
    bytes.copy(into, 0, offset, offset + count);
    offset += count;
    if (onread.callback(count, into) === false) flowing = false;
  }
  return flowing;
}
