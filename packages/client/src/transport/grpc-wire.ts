import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/**
 * gRPC over HTTP/2 as both of the client's transports speak it (the pull
 * reader, socket-pull-transport.ts, and the channel of every other call,
 * grpc-channel.ts): the request headers, message framing, deadlines, and how
 * a status, an HTTP answer that is not gRPC, or a reset stream becomes a
 * PluginError carrying the code grpc-js would give.
 */

/** The request headers of a call to `path`, past the pseudo-headers the transport adds. */
export function requestHeaders(options: {
  token?: string | undefined;
  userAgent?: string | undefined;
  deadline?: number | undefined;
}): [string, string][] {
  const headers: [string, string][] = [
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ["grpc-accept-encoding", "identity"],
    ["user-agent", options.userAgent ?? "atomix-plugins-client"],
  ];
  if (options.deadline !== undefined)
    headers.push(["grpc-timeout", grpcTimeout(options.deadline - Date.now())]);
  if (options.token) headers.push(["authorization", `Bearer ${options.token}`]);
  return headers;
}

/**
 * Refuses a token no header value can carry (control characters, non-ASCII):
 * sent as is, it would reach the server as a broken header, and an HTTP/1
 * hop could split it into headers of its own. The message does not show it.
 */
export function checkToken(token: string | undefined): void {
  if (token !== undefined && !/^[\x20-\x7e]*$/.test(token)) {
    throw new PluginError(
      Code.InvalidArgument,
      "the token holds characters a header cannot carry (control characters or non-ASCII)",
    );
  }
}

/** One length-prefixed, uncompressed gRPC message. */
export function frameMessage(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.byteLength);
  out[0] = 0;
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
}

/** gRPC's timeout header: at most 8 digits, so long deadlines go in seconds. */
function grpcTimeout(ms: number): string {
  const millis = Math.max(1, Math.ceil(ms));
  return millis <= 99_999_999 ? `${millis}m` : `${Math.min(99_999_999, Math.ceil(millis / 1000))}S`;
}

/** The longest delay one Node.js timer holds; a longer one fires at once (TimeoutOverflowWarning). */
const LONGEST_TIMER = 2 ** 31 - 1;

/**
 * Calls `expire` once `deadline` (epoch ms) has passed, however far away it
 * is: a `timeoutMs` past 24.8 days would otherwise end the call at once.
 * Returns the cancel function.
 */
export function atDeadline(deadline: number, expire: () => void): () => void {
  let timer: NodeJS.Timeout;
  const arm = () => {
    const left = deadline - Date.now();
    timer = left > LONGEST_TIMER ? setTimeout(arm, LONGEST_TIMER) : setTimeout(expire, Math.max(0, left));
  };
  arm();
  return () => clearTimeout(timer);
}

/** A response that is not gRPC at all (a proxy's error page), mapped as gRPC's HTTP status table says. */
export function httpFailure(headers: Map<string, string>): PluginError | undefined {
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

/** A gRPC status as a PluginError: a code outside gRPC's is UNKNOWN. */
export function statusFailure(code: number, message: string): PluginError {
  const known = Number.isInteger(code) && code > 0 && code <= 16;
  return new PluginError(known ? (code as Code) : Code.Unknown, message || "(no message)");
}

/** RST_STREAM error codes with a gRPC code of their own (RFC 9113 §7). */
const RESET_CODES: Record<number, [Code, string]> = {
  7: [Code.Unavailable, "the server refused the stream"],
  8: [Code.Cancelled, "the server cancelled the stream"],
  11: [Code.ResourceExhausted, "the server reset the stream: too many requests"],
  12: [Code.PermissionDenied, "the server reset the stream: inadequate security"],
};

/** A stream the server reset, with the code grpc-js gives it (INTERNAL for the others). */
export function resetFailure(errorCode: number): PluginError {
  const [code, message] = RESET_CODES[errorCode] ?? [
    Code.Internal,
    `Received RST_STREAM with code ${errorCode}`,
  ];
  return new PluginError(code, message);
}

/** `grpc-message`, percent-decoded as the spec says. */
export function grpcMessage(value: string | undefined): string {
  const raw = value ?? "";
  try {
    return decodeURIComponent(raw) || "(no message)";
  } catch {
    return raw || "(no message)";
  }
}
