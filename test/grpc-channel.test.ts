import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  constants,
  createServer,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { serverTarget } from "atomix-plugins-client/server-target";
import { type GrpcChannel, grpcChannel } from "atomix-plugins-client/transport/grpc-channel";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  PluginAdminDefinition,
  PushPluginRequest,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import {
  CompilePluginRequest,
  CompilePluginResponse,
  PluginCompilerDefinition,
} from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";

/**
 * The client's call channel (compile, admin and provenance calls over
 * `node:http2`) against a real HTTP/2 server that misbehaves on demand: the
 * plugin name in a CompilePlugin request picks the behaviour. The codes
 * expected are the ones grpc-js gives for the same answers.
 */
const compile = PluginCompilerDefinition.methods.compilePlugin;
const push = PluginAdminDefinition.methods.pushPlugin;
const request = (name: string) => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

function framed(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + bytes.byteLength);
  out.writeUInt32BE(bytes.byteLength, 1);
  out.set(bytes, 5);
  return out;
}
const answer = framed(CompilePluginResponse.encode({ plugin: "atomix-plugin://answer" }).finish());
const grpcHeaders = { ":status": 200, "content-type": "application/grpc" };
/** The server's TCP connections, to drop them. */
const sockets = new Set<Socket>();
/** "dropped-once" drops the connection under the first call that asks for it, answers the next. */
let droppedOnce = false;

type Behaviour = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;
const behaviours: Record<string, Behaviour> = {
  ok: (stream) => {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(answer);
  },
  "not-found": (stream) => {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () =>
      stream.sendTrailers({ "grpc-status": "5", "grpc-message": encodeURIComponent("no such plugin: é") }),
    );
    stream.end();
  },
  "trailers-only": (stream) => {
    stream.respond({ ...grpcHeaders, "grpc-status": "7", "grpc-message": "not yours" }, { endStream: true });
  },
  reset: (stream) => stream.close(constants.NGHTTP2_INTERNAL_ERROR),
  refused: (stream) => stream.close(constants.NGHTTP2_REFUSED_STREAM),
  "http-503": (stream) => {
    stream.respond({ ":status": 503, "content-type": "text/plain" });
    stream.end("busy");
  },
  "html-page": (stream) => {
    stream.respond({ ":status": 200, "content-type": "text/html" });
    stream.end("<html>a proxy's page</html>");
  },
  "no-status": (stream) => {
    stream.respond(grpcHeaders);
    stream.end(answer);
  },
  compressed: (stream) => {
    const bytes = Buffer.from(answer);
    bytes[0] = 1;
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(bytes);
  },
  "two-messages": (stream) => {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(Buffer.concat([answer, answer]));
  },
  "no-message": (stream) => {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end();
  },
  "cut-message": (stream) => {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(answer.subarray(0, answer.byteLength - 3));
  },
  garbage: (stream) => {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(framed(Buffer.from([0x0a, 0xff, 0xff, 0xff])));
  },
  huge: (stream) => {
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(framed(Buffer.alloc(2 * 1024 * 1024)));
  },
  silent: () => {},
  "dropped-once": (stream, headers) => {
    if (droppedOnce) return behaviours.ok?.(stream, headers);
    droppedOnce = true;
    for (const socket of sockets) socket.destroy();
  },
  "connection-dropped": (stream) => {
    stream.respond(grpcHeaders);
    stream.write(answer.subarray(0, 3), () => {
      for (const socket of sockets) socket.destroy();
    });
  },
};

describe("the client's call channel over node:http2", () => {
  let server: Http2Server;
  let address: string;
  let channel: GrpcChannel;
  let sessions = 0;
  const seen: IncomingHttpHeaders[] = [];
  /** The behaviour each CompilePlugin call asked for, in order. */
  const called: string[] = [];
  const resets: number[] = [];
  /** PushPlugin: messages received per call, and how many to take before answering. */
  let pushed: PushPluginRequest[] = [];
  let answerPushAfter = Number.POSITIVE_INFINITY;
  let readPushes = true;

  before(async () => {
    server = createServer();
    server.on("session", () => sessions++);
    server.on("connection", (socket: Socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
    server.on("stream", (stream, headers) => {
      seen.push(headers);
      stream.on("error", () => {});
      stream.on("close", () => resets.push(stream.rstCode ?? 0));
      if (headers[":path"] === "/atomix.plugins.admin.v1.PluginAdmin/PushPlugin") return servePush(stream);
      const body: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => body.push(chunk));
      stream.on("end", () => {
        const name = CompilePluginRequest.decode(Buffer.concat(body).subarray(5)).plugin?.name ?? "";
        called.push(name);
        behaviours[name]?.(stream, headers);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    channel = grpcChannel(serverTarget(address, undefined), {
      token: "s3cret",
      maxResponseBytes: 1024 * 1024,
    });
  });
  after(async () => {
    channel.close();
    await new Promise((resolve) => server.close(resolve));
  });

  /** Reads PushPlugin messages (unless paused) and answers once enough came, or at the end. */
  function servePush(stream: ServerHttp2Stream): void {
    let buffered = Buffer.alloc(0);
    let answered = false;
    const respond = (status: string, message = "") => {
      if (answered) return;
      answered = true;
      stream.respond(grpcHeaders, { waitForTrailers: true });
      stream.on("wantTrailers", () =>
        stream.sendTrailers({ "grpc-status": status, "grpc-message": message }),
      );
      stream.end(status === "0" ? framed(new Uint8Array([0x0a, 0x00])) : undefined);
    };
    if (!readPushes) stream.pause();
    stream.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.byteLength >= 5 && buffered.byteLength >= 5 + buffered.readUInt32BE(1)) {
        const length = buffered.readUInt32BE(1);
        pushed.push(PushPluginRequest.decode(buffered.subarray(5, 5 + length)));
        buffered = buffered.subarray(5 + length);
        if (pushed.length >= answerPushAfter) respond("3", "refused after the header");
      }
    });
    stream.on("end", () => respond("0"));
  }

  async function failure(name: string, settings: { deadline?: number; signal?: AbortSignal } = {}) {
    try {
      await channel.unary(PluginCompilerDefinition, compile, request(name), settings);
    } catch (error) {
      assert.ok(error instanceof PluginError, String(error));
      return error;
    }
    assert.fail(`${name} succeeded`);
  }

  it("sends a unary call as gRPC and reads its answer, over one kept connection", async () => {
    const before = sessions;
    for (let i = 0; i < 3; i++) {
      const response = await channel.unary(PluginCompilerDefinition, compile, request("ok"));
      assert.equal(response.plugin, "atomix-plugin://answer");
    }
    assert.equal(sessions - before, 1, "three calls over one connection");
    const headers = seen.at(-1) as IncomingHttpHeaders;
    assert.equal(headers[":path"], "/atomix.runtime.v1.PluginCompiler/CompilePlugin");
    assert.equal(headers[":authority"], address);
    assert.equal(headers["content-type"], "application/grpc");
    assert.equal(headers.te, "trailers");
    assert.equal(headers.authorization, "Bearer s3cret");
  });

  it("reports every failure with the code grpc-js gives", async () => {
    const notFound = await failure("not-found");
    assert.equal(Code[notFound.code], "NotFound");
    assert.equal(notFound.message, "no such plugin: é");
    const cases: [string, keyof typeof Code, RegExp][] = [
      ["trailers-only", "PermissionDenied", /not yours/],
      ["reset", "Internal", /RST_STREAM with code 2/],
      ["refused", "Unavailable", /refused/],
      ["http-503", "Unavailable", /HTTP 503/],
      ["html-page", "Unknown", /content-type "text\/html"/],
      ["no-status", "Internal", /without a gRPC status/],
      ["compressed", "Internal", /compressed/],
      ["two-messages", "Unimplemented", /more than one message/],
      ["no-message", "Unimplemented", /no message/],
      ["cut-message", "Internal", /cut short/],
      ["garbage", "Internal", /cannot be decoded/],
      ["huge", "ResourceExhausted", /larger than 1048576 bytes/],
      ["connection-dropped", "Unavailable", /the connection dropped/],
    ];
    for (const [name, code, pattern] of cases) {
      const error = await failure(name);
      assert.equal(Code[error.code], code, `${name}: ${error.message}`);
      assert.match(error.message, pattern, name);
    }
    const refusals = called.filter((name) => name === "refused").length;
    assert.equal(refusals, 2, "a refused call is sent once more at once, and only once");
    // And the channel still works after all of them.
    const response = await channel.unary(PluginCompilerDefinition, compile, request("ok"));
    assert.equal(response.plugin, "atomix-plugin://answer");
  });

  it("sends the deadline as grpc-timeout and gives up at it, resetting the stream", async () => {
    const started = Date.now();
    const error = await failure("silent", { deadline: Date.now() + 300 });
    assert.equal(Code[error.code], "DeadlineExceeded", error.message);
    assert.ok(Date.now() - started < 5_000);
    const timeout = String(seen.at(-1)?.["grpc-timeout"]);
    assert.match(timeout, /^\d{1,8}m$/);
    assert.ok(Number(timeout.slice(0, -1)) <= 300, timeout);
    await waitFor(() => resets.at(-1) === constants.NGHTTP2_CANCEL, "the stream was reset with CANCEL");
  });

  it("is cancelled by its signal, resetting the stream", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const error = await failure("silent", { signal: controller.signal });
    assert.equal(Code[error.code], "Cancelled", error.message);
    await waitFor(() => resets.at(-1) === constants.NGHTTP2_CANCEL, "the stream was reset with CANCEL");
    const already = await failure("ok", { signal: controller.signal });
    assert.equal(Code[already.code], "Cancelled");
  });

  it("streams requests with flow control, and stops reading them when the server answers early", async () => {
    pushed = [];
    answerPushAfter = Number.POSITIVE_INFINITY;
    const chunk = Buffer.alloc(256 * 1024, 7);
    const response = await channel.clientStream(
      PluginAdminDefinition,
      push,
      (function* () {
        yield {
          part: {
            $case: "header" as const,
            value: { ...request("p"), digest: "", size: 0, mediaType: "", annotations: {} },
          },
        };
        for (let i = 0; i < 8; i++) yield { part: { $case: "data" as const, value: chunk } };
      })(),
    );
    assert.ok(response.manifest, "the server's answer");
    assert.equal(pushed.length, 9);
    assert.equal(pushed[0]?.part?.$case, "header");

    // A server that refuses after the header: the producer, endless, is stopped.
    pushed = [];
    answerPushAfter = 1;
    let produced = 0;
    let stopped = false;
    const error = await channel
      .clientStream(
        PluginAdminDefinition,
        push,
        (async function* () {
          try {
            for (;;) {
              produced++;
              yield { part: { $case: "data" as const, value: chunk } };
            }
          } finally {
            stopped = true;
          }
        })(),
      )
      .then(
        () => assert.fail("an endless push was answered OK"),
        (failure: unknown) => failure as PluginError,
      );
    assert.equal(Code[error.code], "InvalidArgument", error.message);
    assert.equal(error.message, "refused after the header");
    await waitFor(() => stopped, "the producer was stopped");
    answerPushAfter = Number.POSITIVE_INFINITY;
    assert.ok(produced < 1000, `${produced} messages produced`);
  });

  it("produces no faster than the server reads: HTTP/2 flow control holds the producer", async () => {
    readPushes = false;
    pushed = [];
    let produced = 0;
    const controller = new AbortController();
    const call = channel.clientStream(
      PluginAdminDefinition,
      push,
      (async function* () {
        for (;;) {
          produced++;
          yield { part: { $case: "data" as const, value: Buffer.alloc(256 * 1024) } };
        }
      })(),
      { signal: controller.signal },
    );
    call.catch(() => {});
    // Calls answered over the same connection, not a time: each round trip
    // gives a producer that ignored the window every chance to go on.
    await channel.unary(PluginCompilerDefinition, compile, request("ok"));
    const held = produced;
    for (let i = 0; i < 3; i++) await channel.unary(PluginCompilerDefinition, compile, request("ok"));
    controller.abort();
    readPushes = true;
    await assert.rejects(call, (error: PluginError) => error.code === Code.Cancelled);
    // HTTP/2's default windows are 64 KiB; Node's writable buffer holds 16 KiB more: a few messages at most.
    assert.ok(held <= 8, `${held} messages of 256 KiB produced for a server that reads nothing`);
    assert.equal(produced, held, "nothing more was produced while the server did not read");
  });

  it("redials after the server closed the kept connection", async () => {
    for (const session of await openSessions()) session.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const response = await channel.unary(PluginCompilerDefinition, compile, request("ok"));
    assert.equal(response.plugin, "atomix-plugin://answer");
  });

  it("answers thousands of calls, 64 at once, over one connection: an ended call's stream is not reset", async () => {
    // nghttp2 tears a connection down with GOAWAY(INTERNAL_ERROR) once its
    // client sent more than 1000 RST_STREAM (33 a second back), closed
    // streams' included: resetting every answered call failed some in every
    // thousand with "Session closed with error code 2".
    const before = sessions;
    let next = 0;
    const failures: string[] = [];
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < 4000) {
          next += 1;
          await channel
            .unary(PluginCompilerDefinition, compile, request("ok"))
            .catch((error: unknown) => failures.push(String(error)));
        }
      }),
    );
    assert.deepEqual(failures.slice(0, 3), []);
    // The connection kept from the calls before, or one dialled for these: never a second.
    assert.ok(sessions - before <= 1, `${sessions - before} connections dialled`);
  });

  it("sends a read once more when its connection is lost before the answer, never a write", async () => {
    droppedOnce = false;
    const calls = () => called.filter((name) => name === "dropped-once").length;
    const read = await channel.unary(PluginCompilerDefinition, compile, request("dropped-once"), {
      idempotent: true,
    });
    assert.equal(read.plugin, "atomix-plugin://answer");
    assert.equal(calls(), 2);
    droppedOnce = false;
    const write = await failure("dropped-once");
    assert.equal(Code[write.code], "Unavailable", write.message);
    assert.equal(calls(), 3, "a call that may have changed something is not sent again");
  });

  it("cannot connect: UNAVAILABLE, naming the address", async () => {
    const closed = grpcChannel(serverTarget("127.0.0.1:1", undefined));
    try {
      await closed.unary(PluginCompilerDefinition, compile, request("ok"));
      assert.fail("called a closed port");
    } catch (error) {
      assert.ok(error instanceof PluginError);
      assert.equal(Code[error.code], "Unavailable", error.message);
      assert.match(error.message, /^no server at 127\.0\.0\.1:1 \(connection refused\): is it running\?$/);
    } finally {
      closed.close();
    }
  });

  it("does not hold a runtime's process open between calls", async () => {
    const client = import.meta.resolve("atomix-plugins-client");
    const script = `
      import { createPluginClient } from ${JSON.stringify(client)};
      const client = createPluginClient({ address: ${JSON.stringify(address)} });
      const key = { runtime: { version: "1.0.0", buildVersion: "node20" }, plugin: { name: "ok", version: "1.0.0" } };
      await client.compile(key);
      console.log("called");
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
      timeout: 10_000,
    });
    assert.equal(stdout.trim(), "called");
  });

  function openSessions(): Promise<import("node:http2").ServerHttp2Session[]> {
    // Node's server keeps no list of sessions; one call on each tells us which is live.
    return new Promise((resolve) => {
      server.once("stream", (stream) => resolve([stream.session as import("node:http2").ServerHttp2Session]));
      channel.unary(PluginCompilerDefinition, compile, request("ok")).catch(() => {});
    });
  }
});

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(check(), what);
}
