import type { Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import { Code, ServerUnreachableError } from "atomix-plugins-core/errors/plugin-error";
import { GRPC_ADDRESS_HEADER } from "atomix-plugins-core/protocol/metadata";
import type { ServerTarget } from "./server-target.js";
import { CLIENT_PREFACE, settingsFrame } from "./transport/wire/http2-frames.js";

/**
 * What a connection that never carried an answer means for a person, told
 * the same way by both transports (the pull reader and the channel of every
 * other call): refused, a name that does not resolve, TLS spoken to a
 * plaintext server or the reverse, the catalog's HTTP port taken for the
 * gRPC one. Each is a ServerUnreachableError with its reason.
 */

/** The port `atomix-plugins serve` takes for gRPC unless --listen says otherwise. */
const DEFAULT_GRPC_PORT = 5679;

/** How long a probe after a failure waits for the server's first bytes. */
const PROBE_MS = 2000;

/** A socket's error before any answer, in words; undefined when it is none of the known ones. */
export function socketFailure(authority: string, error: Error): ServerUnreachableError | undefined {
  const errno = error as NodeJS.ErrnoException & { hostname?: string };
  const options = { cause: error };
  switch (errno.code) {
    case "ECONNREFUSED":
      return new ServerUnreachableError(
        "refused",
        `no server at ${authority} (connection refused): is it running?`,
        options,
      );
    case "ENOTFOUND":
      return new ServerUnreachableError(
        "unresolved",
        `no server at ${authority}: the name ${errno.hostname ?? hostOf(authority)} does not resolve`,
        options,
      );
    case "EAI_AGAIN":
      return new ServerUnreachableError(
        "unresolved",
        `no server at ${authority}: the name ${errno.hostname ?? hostOf(authority)} could not be resolved (EAI_AGAIN: is a DNS server reachable?)`,
        options,
      );
    case "ETIMEDOUT":
      return new ServerUnreachableError(
        "connect-timeout",
        `no answer from ${authority} (connection timed out): is it running, and does the network let you reach it?`,
        options,
      );
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return new ServerUnreachableError(
        "unroutable",
        `no route to ${authority} (${errno.code === "EHOSTUNREACH" ? "host" : "network"} unreachable)`,
        options,
      );
  }
  // OpenSSL read a plaintext answer (an HTTP/2 SETTINGS frame, an HTTP/1.1 page) as a TLS record.
  if (
    errno.code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    errno.code === "ERR_SSL_PACKET_LENGTH_TOO_LONG" ||
    /wrong version number|packet length too long/.test(error.message)
  ) {
    return new ServerUnreachableError("expects-plaintext", `${authority} speaks plaintext, not TLS`, options);
  }
  return undefined;
}

/** What the first bytes a server sent say when they are not HTTP/2; undefined when they may be. */
export function answerFailure(authority: string, first: Uint8Array): ServerUnreachableError | undefined {
  const head = Buffer.from(first.subarray(0, 4096)).toString("latin1");
  if (head.startsWith("HTTP/1.")) {
    // The catalog's port of an atomix-plugins server says where its gRPC port is.
    const told = new RegExp(`\r\n${GRPC_ADDRESS_HEADER}: ([\\w.:[\\]-]{1,100})\r\n`, "i").exec(head)?.[1];
    const grpc = told && grpcAddressFrom(told, authority);
    return new ServerUnreachableError(
      "http1",
      grpc
        ? `${authority} answers HTTP/1.1, not gRPC: it is the catalog page's port of a server whose gRPC port is ${grpc}`
        : `${authority} answers HTTP/1.1, not gRPC: is it the catalog page's port? The gRPC port is another (${DEFAULT_GRPC_PORT} unless the server's --listen says otherwise)`,
    );
  }
  // A TLS record (alert or handshake): the server expects TLS.
  if (first.length >= 2 && (first[0] === 0x15 || first[0] === 0x16) && first[1] === 0x03) {
    return expectsTls(authority);
  }
  return undefined;
}

/** The gRPC address a server announces, its host the one the client used when it listens on every address. */
function grpcAddressFrom(told: string, authority: string): string | undefined {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(told);
  if (!match) return undefined;
  const wildcard = match[1] === "0.0.0.0" || match[1] === "[::]";
  return wildcard ? `${authority.replace(/:\d+$/, "")}:${match[2]}` : told;
}

function expectsTls(authority: string): ServerUnreachableError {
  return new ServerUnreachableError("expects-tls", `${authority} speaks TLS, not plaintext`);
}

/**
 * Why a plaintext connection failed before the server said anything in
 * HTTP/2, found by asking again: the first bytes it answers to an HTTP/2
 * preface (an HTTP/1.1 server answers a 400 page), and when it closes without
 * a byte, whether it completes a TLS handshake (a TLS server closes on a
 * plaintext preface). Only called after a failure, so a working connection
 * costs nothing; undefined when neither tells.
 */
export async function diagnose(target: ServerTarget): Promise<ServerUnreachableError | undefined> {
  if (target.scheme !== "http" || target.proxy !== undefined) return undefined;
  const answer = await firstAnswer(target);
  if (answer.bytes.length > 0) return answerFailure(target.authority, answer.bytes);
  if (answer.closed && (await speaksTls(target))) return expectsTls(target.authority);
  return undefined;
}

/** The server's first bytes after an HTTP/2 preface, and whether it closed. */
async function firstAnswer(target: ServerTarget): Promise<{ bytes: Buffer; closed: boolean }> {
  const socket = await target.connect();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ bytes: Buffer.concat(chunks), closed });
    };
    const timer = setTimeout(() => done(false), PROBE_MS);
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      // Enough to tell: an HTTP/1.1 answer's headers, or the first bytes of anything else.
      const head = Buffer.concat(chunks);
      const http1 = head.subarray(0, 5).toString("latin1") === "HTTP/";
      if (head.length >= 4096 || (http1 ? head.includes("\r\n\r\n") : head.length >= 9)) done(false);
    });
    socket.on("error", () => done(true));
    socket.on("close", () => done(true));
    socket.write(Buffer.concat([CLIENT_PREFACE, settingsFrame([])]));
  });
}

/** Whether the server completes a TLS handshake; its certificate is not checked (nothing is sent). */
async function speaksTls(target: ServerTarget): Promise<boolean> {
  const plain = (await target.connect()) as Socket;
  return new Promise((resolve) => {
    const tls = connectTls({ socket: plain, rejectUnauthorized: false, ALPNProtocols: ["h2"] });
    const done = (yes: boolean) => {
      clearTimeout(timer);
      tls.destroy();
      plain.destroy();
      resolve(yes);
    };
    const timer = setTimeout(() => done(false), PROBE_MS);
    tls.once("secureConnect", () => done(true));
    tls.once("error", () => done(false));
    tls.once("close", () => done(false));
  });
}

function hostOf(authority: string): string {
  return authority.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
}

/**
 * A call whose deadline passed before the server said anything in HTTP/2:
 * the connection was still being made, or something took it and kept quiet.
 */
export function unansweredFailure(authority: string, connecting: boolean): ServerUnreachableError {
  return connecting
    ? new ServerUnreachableError(
        "connect-timeout",
        `no answer from ${authority}: still connecting when the deadline passed: is the address right, and does a firewall let the connection through?`,
        { code: Code.DeadlineExceeded },
      )
    : new ServerUnreachableError(
        "silent",
        `${authority} took the connection but said nothing in HTTP/2 before the deadline: is it a gRPC server? (the gRPC port is ${DEFAULT_GRPC_PORT} unless the server's --listen says otherwise)`,
        { code: Code.DeadlineExceeded },
      );
}

/** A failure no retry mends: the server speaks another protocol than the one asked of it. */
export function isMismatch(error: unknown): boolean {
  return (
    error instanceof ServerUnreachableError &&
    (error.reason === "http1" || error.reason === "expects-tls" || error.reason === "expects-plaintext")
  );
}
