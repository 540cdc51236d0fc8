import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import {
  constants,
  createServer,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, createPluginClient, type PluginClient, PluginError } from "atomix-plugins-client";
import { PullPluginRequest } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { BuildKey } from "atomix-plugins-core/model/build-key";

/**
 * The client's PullPlugin reader against a real HTTP/2 server (Node's) that
 * misbehaves on demand: the plugin name in the request picks the
 * behaviour. The server pads every frame it sends and adds a header larger
 * than one frame, so padding and CONTINUATION frames are read on every
 * call. The codes expected are the ones grpc-js gives.
 */
const artifact = randomBytes(2_500_000);
const digest = `sha256:${createHash("sha256").update(artifact).digest("hex")}`;
const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

/** gRPC messages of PullPluginResponse{data} for `bytes`, in chunks of 64 KiB. */
function messages(bytes: Buffer, compressed = false): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += 65_536) {
    const message = PullPluginResponse(bytes.subarray(at, at + 65_536));
    const prefix = Buffer.alloc(5);
    prefix[0] = compressed ? 1 : 0;
    prefix.writeUInt32BE(message.length, 1);
    out.push(prefix, message);
  }
  return out;
}

function PullPluginResponse(data: Buffer): Buffer {
  const length = Buffer.from(varint(data.length));
  return Buffer.concat([Buffer.from([0x0a]), length, data]);
}

function varint(value: number): number[] {
  const bytes: number[] = [];
  while (value > 0x7f) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value);
  return bytes;
}

const grpcHeaders = {
  ":status": 200,
  "content-type": "application/grpc",
  "x-plugin-digest": digest,
  "x-plugin-size": String(artifact.length),
  "x-large": "x".repeat(40_000),
};

type Behaviour = (stream: ServerHttp2Stream, offset: number, attempt: number) => void;

const behaviours: Record<string, Behaviour> = {
  ok(stream, offset) {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    for (const part of messages(artifact.subarray(offset))) stream.write(part);
    stream.end();
  },
  "drops-once"(stream, offset, attempt) {
    if (attempt > 1) return behaviours.ok?.(stream, offset, attempt);
    stream.respond(grpcHeaders);
    const parts = messages(artifact);
    for (const part of parts.slice(0, 2 * 24)) stream.write(part); // 24 chunks of 64 KiB: 1.5 MiB
    // The whole connection goes, as when a server or a proxy dies.
    setTimeout(() => stream.session?.destroy(), 50);
  },
  reset(stream) {
    stream.close(constants.NGHTTP2_INTERNAL_ERROR);
  },
  "going-away-once"(stream, offset, attempt) {
    if (attempt > 1) return behaviours.ok?.(stream, offset, attempt);
    // A server shutting down: GOAWAY, then the connection closes with the call unanswered.
    const session = stream.session;
    session?.goaway(constants.NGHTTP2_NO_ERROR, 0);
    setTimeout(() => session?.destroy(), 50);
  },
  "going-away-kept"(stream, offset, attempt) {
    return behaviours["going-away-once"]?.(stream, offset, attempt);
  },
  refused(stream) {
    stream.close(constants.NGHTTP2_REFUSED_STREAM);
  },
  "unavailable-once"(stream, offset, attempt) {
    if (attempt > 1) return behaviours.ok?.(stream, offset, attempt);
    // A server's own UNAVAILABLE (its store unreachable, say): the connection is fine.
    stream.respond(
      { ":status": 200, "content-type": "application/grpc", "grpc-status": "14", "grpc-message": "busy" },
      { endStream: true },
    );
  },

  "not-found"(stream) {
    stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": "5",
        // Percent-encoded as gRPC says: only what is not printable ASCII, and "%".
        "grpc-message": "no plugin named not-found: %C3%A9",
      },
      { endStream: true },
    );
  },
  "http-503"(stream) {
    stream.respond({ ":status": 503, "content-type": "text/plain" });
    stream.end("busy");
  },
  "html-page"(stream) {
    stream.respond({ ":status": 200, "content-type": "text/html" });
    stream.end("<html></html>");
  },
  "no-status"(stream) {
    stream.respond(grpcHeaders);
    for (const part of messages(artifact)) stream.write(part);
    stream.end();
  },
  compressed(stream) {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    for (const part of messages(artifact, true)) stream.write(part);
    stream.end();
  },
  "cut-message"(stream) {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(Buffer.concat(messages(artifact)).subarray(0, 1000));
  },
  silent() {},
};

function describeTransport() {
  describe("PullPlugin over the client's own reader", () => {
    let server: Http2Server;
    let client: PluginClient;
    let address: string;
    let work: string;
    let connections = 0;
    const attempts = new Map<string, number>();
    const requests: IncomingHttpHeaders[] = [];
    const connect = (options: { address?: string; token?: string } = {}) =>
      createPluginClient({ address, ...options });

    before(async () => {
      server = createServer({ paddingStrategy: constants.PADDING_STRATEGY_MAX });
      server.on("session", () => connections++);
      server.on("stream", (stream, headers) => {
        requests.push(headers);
        const body: Buffer[] = [];
        stream.on("data", (chunk: Buffer) => body.push(chunk));
        stream.on("end", () => {
          const request = PullPluginRequest.decode(Buffer.concat(body).subarray(5));
          const name = request.plugin?.name ?? "";
          const attempt = (attempts.get(name) ?? 0) + 1;
          attempts.set(name, attempt);
          const offset = Number(headers["x-plugin-offset"] ?? 0);
          stream.on("error", () => {});
          behaviours[name]?.(stream, offset, attempt);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      client = connect({ token: "s3cret" });
      work = await mkdtemp(join(tmpdir(), "atomix-transport-"));
    });
    after(async () => {
      client.close();
      await new Promise((resolve) => server.close(resolve));
      await rm(work, { recursive: true, force: true });
    });

    async function failure(name: string, options: { timeoutMs?: number } = {}): Promise<PluginError> {
      const dir = await mkdtemp(join(work, `${name}-`));
      try {
        await client.pull(key(name), { to: join(dir, "out"), retry: { maxAttempts: 1 }, ...options });
      } catch (error) {
        assert.ok(error instanceof PluginError, String(error));
        assert.deepEqual(await readdir(dir), [], "nothing is left behind");
        return error;
      }
      assert.fail(`pulling ${name} succeeded`);
    }

    it("reads padded frames and split header blocks, and sends gRPC's headers and ours", async () => {
      const to = join(work, "ok.bin");
      const result = await client.pull(key("ok"), { to, timeoutMs: 60_000 });
      assert.ok((await readFile(to)).equals(artifact));
      assert.equal(result.digest, digest);
      const headers = requests.at(-1) as IncomingHttpHeaders;
      assert.equal(headers[":method"], "POST");
      assert.equal(headers[":path"], "/atomix.runtime.v1.PluginRegistry/PullPlugin");
      assert.equal(headers["content-type"], "application/grpc");
      assert.equal(headers.te, "trailers");
      assert.equal(headers.authorization, "Bearer s3cret");
      assert.match(String(headers["grpc-timeout"]), /^\d+m$/);
    });

    it("resumes with x-plugin-offset after the connection drops", async () => {
      const to = join(work, "resumed.bin");
      const result = await client.pull(key("drops-once"), { to, retry: { initialDelayMs: 1 } });
      assert.ok((await readFile(to)).equals(artifact));
      assert.equal(result.attempts.length, 2);
      assert.match(result.attempts[0]?.error ?? "", /^UNAVAILABLE: .*connection dropped/i);
      assert.equal(result.attempts[1]?.offset, result.attempts[0]?.bytes);
      // Every byte received before the drop is kept, the last partial MiB included.
      assert.ok((result.attempts[0]?.bytes ?? 0) > 1024 * 1024, `kept ${result.attempts[0]?.bytes} bytes`);
    });

    it("retries on a new connection when the server goes away without answering", async () => {
      const fresh = connect();
      try {
        const to = join(work, "goaway.bin");
        const result = await fresh.pull(key("going-away-once"), { to, retry: { initialDelayMs: 1 } });
        assert.ok((await readFile(to)).equals(artifact));
        assert.equal(result.attempts.length, 2);
        assert.match(result.attempts[0]?.error ?? "", /^UNAVAILABLE: /);
        assert.equal(result.attempts[0]?.bytes, 0);
      } finally {
        fresh.close();
      }
    });

    it("sends a call again at once when its kept connection turns out to be going away", async () => {
      const kept = connect();
      try {
        await kept.pull(key("ok"), { to: join(work, "warm.bin") });
        // The server answers the next call on that connection with GOAWAY: the
        // reader sends it again on a new connection without spending an attempt.
        const to = join(work, "kept-goaway.bin");
        const result = await kept.pull(key("going-away-kept"), {
          to,
          retry: { maxAttempts: 2, initialDelayMs: 1 },
        });
        assert.ok((await readFile(to)).equals(artifact));
        assert.equal(result.attempts.length, 1);
      } finally {
        kept.close();
      }
    });

    it("keeps one connection across a retry and the next pulls", async () => {
      const kept = connect();
      const before = connections;
      try {
        await kept.pull(key("ok"), { to: join(work, "first.bin") });
        const retried = await kept.pull(key("unavailable-once"), {
          to: join(work, "retried.bin"),
          retry: { initialDelayMs: 1 },
        });
        assert.equal(retried.attempts.length, 2);
        assert.equal(retried.attempts[0]?.error, "UNAVAILABLE: busy");
        await kept.pull(key("ok"), { to: join(work, "third.bin") });
        assert.equal(connections - before, 1, "three pulls and a retry over one connection");
      } finally {
        kept.close();
      }
    });

    it("reports every failure with the code grpc-js would give, and leaves nothing behind", async () => {
      const notFound = await failure("not-found");
      assert.equal(Code[notFound.code], "NotFound");
      assert.equal(notFound.message, "no plugin named not-found: é");
      // [behaviour, code, the reader's message]
      const cases: [string, keyof typeof Code, RegExp][] = [
        ["reset", "Internal", /RST_STREAM with code 2/],
        ["refused", "Unavailable", /refused/],
        ["http-503", "Unavailable", /HTTP 503/],
        // (grpc-js does not look at the content-type: it reads "<htm" as a length.)
        ["html-page", "Unknown", /content-type "text\/html"/],
        ["no-status", "Internal", /without a gRPC status/],
        ["compressed", "Internal", /compressed message/],
        ["cut-message", "Internal", /middle of a message/],
      ];
      for (const [name, code, pattern] of cases) {
        const error = await failure(name);
        assert.equal(Code[error.code], code, `${name}: ${error.message}`);
        assert.match(error.message, pattern, name);
      }
    });

    it("gives up at the deadline on a server that never answers", async () => {
      const error = await failure("silent", { timeoutMs: 300 });
      assert.equal(Code[error.code], "DeadlineExceeded", error.message);
    });

    it("reaches a server on a unix socket", async () => {
      const path = join(work, "registry.sock");
      const local = createServer();
      local.on("stream", server.listeners("stream")[0] as (...args: unknown[]) => void);
      await new Promise<void>((resolve) => local.listen(path, resolve));
      const overUnix = connect({ address: `unix:${path}` });
      try {
        const to = join(work, "unix.bin");
        await overUnix.pull(key("ok"), { to });
        assert.ok((await readFile(to)).equals(artifact));
      } finally {
        overUnix.close();
        await new Promise((resolve) => local.close(resolve));
      }
    });

    it("cannot connect: UNAVAILABLE, naming the address", async () => {
      const closed = connect({ address: "127.0.0.1:1" });
      try {
        await closed.pull(key("ok"), { to: join(work, "never"), retry: { maxAttempts: 1 } });
        assert.fail("pulled from a closed port");
      } catch (error) {
        assert.ok(error instanceof PluginError);
        assert.equal(Code[error.code], "Unavailable");
        assert.match(error.message, /: no server at 127\.0\.0\.1:1 \(connection refused\): is it running\?$/);
      } finally {
        closed.close();
      }
    });
  });
}

describeTransport();
