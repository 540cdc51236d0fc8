import { visibleJson } from "./visible-text.js";

/**
 * gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
 * Kept here rather than imported from grpc-js so that the store, the compiler
 * and the client library speak one vocabulary without depending on a
 * transport.
 */
export enum Code {
  Ok = 0,
  Cancelled = 1,
  Unknown = 2,
  InvalidArgument = 3,
  DeadlineExceeded = 4,
  NotFound = 5,
  AlreadyExists = 6,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  FailedPrecondition = 9,
  Aborted = 10,
  OutOfRange = 11,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
  DataLoss = 15,
  Unauthenticated = 16,
}

/** The SCREAMING_CASE name of a code, as gRPC tools print it. */
export function codeName(code: Code): string {
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * The one error type of the project: a gRPC code, a message a person can act
 * on, and the original error as `cause`. The server turns it into a status in
 * one place (server/status.ts); everything else throws it.
 */
export class PluginError extends Error {
  readonly code: Code;
  /**
   * What the operator needs beside the message and the caller must not see
   * (server paths, configured URLs): the server logs it, the status leaves
   * it out.
   */
  readonly detail: string | undefined;

  constructor(code: Code, message: string, options?: { cause?: unknown; detail?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PluginError";
    this.code = code;
    this.detail = options?.detail;
  }

  /**
   * Wraps anything caught at a boundary. Node system errors are mapped by
   * their errno code so that a full disk is RESOURCE_EXHAUSTED, not INTERNAL.
   */
  static from(error: unknown, context?: string): PluginError {
    if (error instanceof PluginError) return error;
    const prefix = context ? `${context}: ` : "";
    if (isAbortError(error)) {
      return new PluginError(Code.Cancelled, `${prefix}cancelled`, { cause: error });
    }
    if (error instanceof Error) {
      const errno = (error as NodeJS.ErrnoException).code;
      const code = errno ? (ERRNO_CODES[errno] ?? Code.Internal) : Code.Internal;
      if ((error as NodeJS.ErrnoException).path !== undefined) {
        // "ENOENT: no such file or directory, open '/srv/...'": the path is
        // the server's, for its log; the caller gets what happened.
        const what = /^\w+: ([^,]+)/.exec(error.message)?.[1] ?? "file system error";
        return new PluginError(code, `${prefix}${what} (${errno})`, { cause: error, detail: error.message });
      }
      return new PluginError(code, `${prefix}${error.message}`, { cause: error });
    }
    return new PluginError(Code.Internal, `${prefix}${String(error)}`, { cause: error });
  }
}

/**
 * `value` as a message shows it: in double quotes, with control characters
 * (C0, DEL, C1, bidirectional overrides) escaped, and cut after `max`
 * characters ("…" then says so), so that a caller's 10 KiB value is not
 * echoed whole in a status or a log line.
 */
export function quoted(value: string, max = 64): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  return visibleJson(cut);
}

const ERRNO_CODES: Record<string, Code> = {
  ENOENT: Code.NotFound,
  ENOSPC: Code.ResourceExhausted,
  EDQUOT: Code.ResourceExhausted,
  EMFILE: Code.ResourceExhausted,
  ENFILE: Code.ResourceExhausted,
  EACCES: Code.PermissionDenied,
  EPERM: Code.PermissionDenied,
  ECONNREFUSED: Code.Unavailable,
  ECONNRESET: Code.Unavailable,
  ETIMEDOUT: Code.Unavailable,
  EHOSTUNREACH: Code.Unavailable,
  ENOTFOUND: Code.Unavailable,
  EAI_AGAIN: Code.Unavailable,
  EROFS: Code.FailedPrecondition,
};

/**
 * `promise`, unless `signal` aborts first: then the caller stops waiting
 * with CANCELLED (`message`) while the promise itself runs on, e.g. a build
 * or a chunk read that other callers share.
 */
export function abandonable<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  message: string,
): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(new PluginError(Code.Cancelled, message));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new PluginError(Code.Cancelled, message));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

export function isAbortError(error: unknown): boolean {
  return (
    error instanceof Error &&
    (error.name === "AbortError" || (error as { code?: string }).code === "ABORT_ERR")
  );
}

/**
 * An artifact whose signed provenance is missing, signed by no trusted key,
 * or made for other bytes or another build key: the client refuses it before
 * anything is written or loaded. Its own class (and the CLI's own exit code)
 * because it is not a transport failure: retrying from the same server gives
 * the same answer, and an operator must look.
 */
export class UntrustedArtifactError extends PluginError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.PermissionDenied, message, options);
    this.name = "UntrustedArtifactError";
  }
}

/** Why no call reached a server: what the CLI adds advice (a flag to change) for. */
export type UnreachableReason =
  | "refused"
  | "unresolved"
  | "unroutable"
  | "connect-timeout"
  | "silent"
  | "http1"
  | "expects-tls"
  | "expects-plaintext";

/**
 * A connection to the server that never carried an answer, told in words a
 * person acts on ("no server at 127.0.0.1:5679 (connection refused): is it
 * running?") rather than the socket's. `reason` says which, so that a tool
 * can add what to change (the CLI names its flags).
 */
export class ServerUnreachableError extends PluginError {
  readonly reason: UnreachableReason;

  constructor(reason: UnreachableReason, message: string, options?: { code?: Code; cause?: unknown }) {
    super(options?.code ?? Code.Unavailable, message, options);
    this.name = "ServerUnreachableError";
    this.reason = reason;
  }
}
