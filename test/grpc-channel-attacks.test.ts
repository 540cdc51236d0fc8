import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createSecureServer, createServer, type Http2SecureServer, type Http2Server } from "node:http2";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { serverTarget } from "atomix-plugins-client/server-target";
import {
  type CallSettings,
  type GrpcChannel,
  grpcChannel,
} from "atomix-plugins-client/transport/grpc-channel";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  PluginAdminDefinition,
  type PushPluginRequest,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import {
  CompilePluginResponse,
  PluginCompilerDefinition,
} from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";

/**
 * A hostile or broken server, or whatever sits on the path of a plaintext
 * connection, against the client's call channel: real sockets, a
 * `node:http2` server where Node's can say it, and a raw TCP server writing
 * HTTP/2 frames by hand where it cannot. What must hold: every call ends by
 * its deadline or signal, memory stays bounded, nothing crashes the process,
 * no answer is taken as OK that the server did not end with OK, and the
 * token shows in no error.
 */
const TOKEN = "t0ken-that-must-not-leak";
const compile = PluginCompilerDefinition.methods.compilePlugin;
const push = PluginAdminDefinition.methods.pushPlugin;
const request = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "p", version: "1.0.0" },
};
const answer = framed(CompilePluginResponse.encode({ plugin: "atomix-plugin://answer" }).finish());
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/tls/${name}`, import.meta.url));

function framed(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + bytes.byteLength);
  out.writeUInt32BE(bytes.byteLength, 1);
  out.set(bytes, 5);
  return out;
}

// --- HTTP/2 by hand (RFC 9113 framing, RFC 7541 literals) -------------------

const DATA = 0;
const HEADERS = 1;
const RST_STREAM = 3;
const SETTINGS = 4;
const PUSH_PROMISE = 5;
const PING = 6;
const GOAWAY = 7;
const WINDOW_UPDATE = 8;
const CONTINUATION = 9;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.byteLength, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

function hpackInteger(value: number, prefixBits: number, first = 0): number[] {
  const max = 2 ** prefixBits - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A header block of literals without indexing, no Huffman. */
function block(fields: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    parts.push(Buffer.from([0x00]));
    parts.push(Buffer.from(hpackInteger(name.length, 7)), Buffer.from(name, "latin1"));
    parts.push(Buffer.from(hpackInteger(value.length, 7)), Buffer.from(value, "latin1"));
  }
  return Buffer.concat(parts);
}

function u32(...values: number[]): Buffer {
  const out = Buffer.alloc(4 * values.length);
  values.forEach((value, i) => {
    out.writeUInt32BE(value, 4 * i);
  });
  return out;
}

const settingsFrame = (pairs: [number, number][] = []) => {
  const payload = Buffer.alloc(6 * pairs.length);
  pairs.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, 6 * i);
    payload.writeUInt32BE(value, 6 * i + 2);
  });
  return frame(SETTINGS, 0, 0, payload);
};
const grpcResponseHeaders: [string, string][] = [
  [":status", "200"],
  ["content-type", "application/grpc"],
];

interface RawCall {
  socket: Socket;
  /** The client's stream. */
  id: number;
  /** Every DATA byte of the client's stream so far. */
  received: () => number;
  /** How many connections the raw server has taken so far, this one included. */
  connection: number;
}
type RawBehaviour = (call: RawCall) => void;

/**
 * A TCP server that speaks just enough HTTP/2 to take a call: it reads the
 * preface, answers with an empty SETTINGS (or what `greeting` gives), acks
 * the client's, and hands each new stream to the behaviour of the test.
 */
function rawServer(): {
  server: Server;
  behave: (behaviour: RawBehaviour, greeting?: Buffer) => void;
  connections: () => number;
  sockets: Set<Socket>;
} {
  let behaviour: RawBehaviour = () => {};
  let greeting = settingsFrame();
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    connections++;
    const connection = connections;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let buffered = Buffer.alloc(0);
    let prefaced = false;
    let received = 0;
    const streams = new Set<number>();
    socket.write(greeting);
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!prefaced) {
        if (buffered.byteLength < 24) return;
        buffered = buffered.subarray(24);
        prefaced = true;
      }
      while (buffered.byteLength >= 9) {
        const length = buffered.readUIntBE(0, 3);
        if (buffered.byteLength < 9 + length) return;
        const type = buffered[3] as number;
        const flags = buffered[4] as number;
        const id = buffered.readUInt32BE(5) & 0x7fffffff;
        buffered = buffered.subarray(9 + length);
        if (type === SETTINGS && !(flags & 1) && !socket.destroyed) socket.write(frame(SETTINGS, 1, 0));
        if (type === DATA) received += length;
        if (type === HEADERS && !streams.has(id)) {
          streams.add(id);
          behaviour({ socket, id, received: () => received, connection });
        }
      }
    });
  });
  return {
    server,
    behave: (next, nextGreeting = settingsFrame()) => {
      behaviour = next;
      greeting = nextGreeting;
    },
    connections: () => connections,
    sockets,
  };
}

// --- helpers -----------------------------------------------------------------

async function listen(server: Server | Http2Server | Http2SecureServer | HttpsServer): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** The call's failure: a PluginError whose message carries no token. */
async function failure(call: Promise<unknown>): Promise<PluginError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof PluginError, `not a PluginError: ${String(error)}`);
    assertNoToken(error);
    return error;
  }
  assert.fail("the call succeeded");
}

function assertNoToken(error: unknown): void {
  for (let at: unknown = error; at instanceof Error; at = at.cause) {
    assert.ok(!at.message.includes(TOKEN), `the token shows in "${at.message}"`);
    assert.ok(!String(at.stack).includes(TOKEN), "the token shows in a stack");
  }
}

/** A call that must have ended by `ms`, whatever the server did. */
async function endsBy<T>(ms: number, call: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the call had not ended after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([call, late]);
  } finally {
    clearTimeout(timer);
  }
}

const within = (ms: number): CallSettings => ({ deadline: Date.now() + ms });

function unary(channel: GrpcChannel, settings: CallSettings = {}) {
  return channel.unary(PluginCompilerDefinition, compile, request, settings);
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 150 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(check(), what);
}

// --- the attacks ----------------------------------------------------------------

describe("the call channel against a hostile server (raw HTTP/2)", () => {
  const raw = rawServer();
  let address: string;
  let channel: GrpcChannel;

  before(async () => {
    address = await listen(raw.server);
  });
  after(async () => {
    channel?.close();
    for (const socket of raw.sockets) socket.destroy();
    await new Promise((resolve) => raw.server.close(resolve));
  });
  /** A fresh channel per attack, so that one's broken connection is not the next one's. */
  function fresh(): GrpcChannel {
    channel?.close();
    channel = grpcChannel(serverTarget(address, undefined), { token: TOKEN, maxResponseBytes: 64 * 1024 });
    return channel;
  }

  it("takes no OK from headers that did not end the stream: a whole message, then the connection drops", async () => {
    raw.behave(({ socket, id }) => {
      socket.write(frame(HEADERS, END_HEADERS, id, block([...grpcResponseHeaders, ["grpc-status", "0"]])));
      socket.write(frame(DATA, 0, id, answer), () => socket.destroy());
    });
    const error = await failure(endsBy(5_000, unary(fresh())));
    assert.equal(Code[error.code], "Unavailable", error.message);
    assert.match(error.message, /connection dropped/);
  });

  // Each its own test: the call ends by its deadline whatever the server sends or does not.
  const silences: [string, RawBehaviour, Buffer?][] = [
    ["silence after SETTINGS", () => {}],
    ["no SETTINGS at all", () => {}, Buffer.alloc(0)],
    ["half a frame", ({ socket, id }) => socket.write(frame(HEADERS, END_HEADERS, id).subarray(0, 5))],
    [
      "endless CONTINUATION",
      ({ socket, id }) => {
        socket.write(frame(HEADERS, 0, id, block(grpcResponseHeaders)));
        const filler = frame(CONTINUATION, 0, id, block([["x-filler", "a".repeat(1000)]]));
        const flood = () => {
          while (!socket.destroyed && socket.write(filler)) {}
          if (!socket.destroyed) socket.once("drain", flood);
        };
        flood();
      },
    ],
    [
      "a SETTINGS flood, never reading the acks",
      ({ socket }) => {
        socket.pause();
        const settings = settingsFrame([[3, 100]]);
        const flood = () => {
          while (!socket.destroyed && socket.write(settings)) {}
          if (!socket.destroyed) socket.once("drain", flood);
        };
        flood();
      },
    ],
    [
      "a PING flood, never reading the acks",
      ({ socket }) => {
        socket.pause();
        const ping = frame(PING, 0, 0, Buffer.alloc(8, 1));
        const flood = () => {
          while (!socket.destroyed && socket.write(ping)) {}
          if (!socket.destroyed) socket.once("drain", flood);
        };
        flood();
      },
    ],
    [
      "empty DATA frames, endlessly",
      ({ socket, id }) => {
        socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
        const empty = frame(DATA, 0, id);
        const flood = () => {
          while (!socket.destroyed && socket.write(empty)) {}
          if (!socket.destroyed) socket.once("drain", flood);
        };
        flood();
      },
    ],
    ["no stream may be opened", () => {}, settingsFrame([[3, 0]])],
    // Node.js keeps a session nghttp2 ended for a protocol error open,
    // and stops reading it, so that even the peer's FIN goes unseen: its
    // calls hear nothing more, and only the deadline ends them.
    [
      "an HTTP/1.1 answer, then the socket closed",
      ({ socket }) => socket.end(Buffer.from("HTTP/1.1 400 Bad Request\r\n\r\n")),
    ],
    ["a SETTINGS frame of 5 bytes", ({ socket }) => socket.write(frame(SETTINGS, 0, 0, Buffer.alloc(5)))],
  ];
  for (const [name, behaviour, greeting] of silences) {
    it(`ends by its deadline whatever the server does: ${name}`, async () => {
      raw.behave(behaviour, greeting);
      // The flooding server runs in this process too: the bound leaves it time.
      const error = await failure(endsBy(3_000, unary(fresh(), within(400))));
      // A flood the client's HTTP/2 stack refuses ends the call sooner, as UNAVAILABLE.
      assert.ok(["DeadlineExceeded", "Unavailable"].includes(Code[error.code]), `${name}: ${error.message}`);
    });
  }

  it("is cancelled by its signal while the server holds the stream half answered", async () => {
    raw.behave(({ socket, id }) => {
      socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
      socket.write(frame(DATA, 0, id, answer.subarray(0, 4)));
    });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const error = await failure(endsBy(3_000, unary(fresh(), { signal: controller.signal })));
    assert.equal(Code[error.code], "Cancelled", error.message);
  });

  // Each its own test: a connection broken at any point is a PluginError with grpc-js's code.
  const breaks: [string, RawBehaviour, string][] = [
    ["closed right after SETTINGS", ({ socket }) => socket.destroy(), "Unavailable"],
    [
      "GOAWAY with an error while answering",
      ({ socket, id }) => {
        socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
        socket.write(frame(GOAWAY, 0, 0, u32(id, 1)));
      },
      "Unavailable",
    ],
    [
      "a PUSH_PROMISE although push is off",
      ({ socket, id }) =>
        socket.write(
          frame(PUSH_PROMISE, END_HEADERS, id, Buffer.concat([u32(2), block(grpcResponseHeaders)])),
        ),
      "Unavailable",
    ],
    [
      "RST_STREAM after the headers",
      ({ socket, id }) => {
        socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
        socket.write(frame(RST_STREAM, 0, id, u32(2)));
      },
      "Internal",
    ],
    [
      "RST_STREAM(NO_ERROR) after a whole message",
      ({ socket, id }) => {
        socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
        socket.write(frame(DATA, 0, id, answer));
        socket.write(frame(RST_STREAM, 0, id, u32(0)));
      },
      "Internal",
    ],
    [
      "a WINDOW_UPDATE that overflows the window",
      ({ socket, id }) => socket.write(frame(WINDOW_UPDATE, 0, id, u32(0x7fffffff))),
      "Unavailable",
    ],
  ];
  for (const [name, behaviour, code] of breaks) {
    it(`reports a broken connection as a PluginError with grpc-js's code: ${name} is ${code}`, async () => {
      raw.behave(behaviour);
      const error = await failure(endsBy(5_000, unary(fresh())));
      assert.equal(Code[error.code], code, `${name}: ${error.message}`);
    });
  }

  it("sends a call refused by a GOAWAY once more, on a new connection", async () => {
    const first = raw.connections() + 1;
    raw.behave(({ socket, id, connection }) => {
      if (connection === first) {
        // Going away before taking the stream: it was not processed.
        socket.write(frame(GOAWAY, 0, 0, u32(0, 0)));
        return;
      }
      socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
      socket.write(frame(DATA, 0, id, answer));
      socket.write(frame(HEADERS, END_HEADERS | END_STREAM, id, block([["grpc-status", "0"]])));
    });
    const response = await endsBy(5_000, unary(fresh()));
    assert.equal(response.plugin, "atomix-plugin://answer");
    assert.equal(raw.connections() - first, 1, "refused on one connection, answered on the next");
  });

  it("dials again after a call whose deadline passed unanswered, instead of waiting on that connection too", async () => {
    // The first connection answers nothing after a broken frame (nghttp2 stops
    // reading it, and Node.js never says so); the next one answers.
    const first = raw.connections() + 1;
    raw.behave(({ socket, id, connection }) => {
      if (connection === first) {
        socket.write(frame(SETTINGS, 0, 0, Buffer.alloc(5)));
        return;
      }
      socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
      socket.write(frame(DATA, 0, id, answer));
      socket.write(frame(HEADERS, END_HEADERS | END_STREAM, id, block([["grpc-status", "0"]])));
    });
    const client = fresh();
    const stuck = await failure(endsBy(3_000, unary(client, within(300))));
    assert.ok(["DeadlineExceeded", "Unavailable"].includes(Code[stuck.code]), stuck.message);
    const response = await endsBy(3_000, unary(client, within(2_000)));
    assert.equal(response.plugin, "atomix-plugin://answer");
    assert.equal(raw.connections() - first, 1, "the second call went over a new connection");
  });

  it("survives errors on an idle connection and after close(), and dials again", async () => {
    /** Each answered connection's reset, in order: the test goes on once it has happened, not after a time. */
    const resets: Promise<void>[] = [];
    raw.behave(({ socket, id }) => {
      socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
      socket.write(frame(DATA, 0, id, answer));
      socket.write(frame(HEADERS, END_HEADERS | END_STREAM, id, block([["grpc-status", "0"]])));
      // Then, idle, the connection is reset: an error on a session no call uses.
      resets.push(
        new Promise((resolve) => {
          socket.once("close", () => resolve());
          setTimeout(() => socket.resetAndDestroy(), 50);
        }),
      );
    });
    const client = fresh();
    assert.equal((await unary(client)).plugin, "atomix-plugin://answer");
    await resets[0];
    assert.equal((await endsBy(5_000, unary(client))).plugin, "atomix-plugin://answer", "dialled again");
    client.close();
    await resets[1];
    const closed = await failure(unary(client));
    assert.equal(Code[closed.code], "Cancelled");
  });

  it("pushes nothing while the server's window is zero, and ends by the deadline, stopping the producer", async () => {
    let received = () => 0;
    raw.behave(
      (call) => {
        received = call.received;
      },
      settingsFrame([[4, 0]]),
    );
    let produced = 0;
    let stopped = false;
    const error = await failure(
      endsBy(
        3_000,
        fresh().clientStream(
          PluginAdminDefinition,
          push,
          (async function* (): AsyncGenerator<PushPluginRequest> {
            try {
              for (;;) {
                produced++;
                yield { part: { $case: "data", value: Buffer.alloc(64 * 1024) } };
              }
            } finally {
              stopped = true;
            }
          })(),
          within(400),
        ),
      ),
    );
    assert.equal(Code[error.code], "DeadlineExceeded", error.message);
    await waitFor(() => stopped, "the producer was stopped");
    // The client may spend HTTP/2's initial window before the server's SETTINGS reach it; not a byte more.
    assert.ok(produced <= 3, `${produced} messages produced for a window of zero`);
    assert.ok(received() <= 65_535, `${received()} bytes of DATA past a window of zero`);
  });
});

describe("the call channel against a hostile server (node:http2)", () => {
  let server: Http2Server;
  let address: string;
  let behaviour: (stream: import("node:http2").ServerHttp2Stream) => void = () => {};
  let channel: GrpcChannel;

  before(async () => {
    server = createServer();
    server.on("stream", (stream) => {
      stream.on("error", () => {});
      behaviour(stream);
    });
    address = await listen(server);
    channel = grpcChannel(serverTarget(address, undefined), { token: TOKEN });
  });
  after(async () => {
    channel.close();
    await new Promise((resolve) => server.close(resolve));
  });

  it("does not keep the body of an error page: an endless one ends the call at once", async () => {
    let written = 0;
    let reset = false;
    behaviour = (stream) => {
      stream.respond({ ":status": 503, "content-type": "text/html" });
      const page = Buffer.alloc(64 * 1024, "x");
      const more = () => {
        while (!stream.destroyed && stream.write(page)) written += page.byteLength;
        if (!stream.destroyed) stream.once("drain", more);
      };
      stream.on("close", () => {
        reset = true;
      });
      more();
    };
    // No deadline: the call must end by itself, with what the headers said.
    const error = await failure(endsBy(5_000, unary(channel)));
    assert.equal(Code[error.code], "Unavailable", error.message);
    assert.match(error.message, /HTTP 503/);
    await waitFor(() => reset, "the stream was reset");
    assert.ok(written < 16 * 1024 * 1024, `${written} bytes of the page were sent`);
  });

  it("ends a call in flight when the client is closed", async () => {
    // In flight once the server has the call, not after a time: closed before, it would test nothing.
    const arrived = new Promise<void>((resolve) => {
      behaviour = () => resolve();
    });
    const local = grpcChannel(serverTarget(address, undefined), { token: TOKEN });
    const call = unary(local);
    call.catch(() => {});
    await arrived;
    local.close();
    const error = await failure(endsBy(2_000, call));
    assert.equal(Code[error.code], "Cancelled", error.message);
  });

  it("keeps a deadline beyond what one timer holds (24.8 days)", async () => {
    behaviour = (stream) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(answer);
    };
    const response = await endsBy(5_000, unary(channel, within(2 ** 31 + 60_000)));
    assert.equal(response.plugin, "atomix-plugin://answer");
  });

  it("stops a producer of plain (not async) iterables when the server answers before the end", async () => {
    behaviour = (stream) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(framed(new Uint8Array([0x0a, 0x00])));
    };
    let produced = 0;
    let stopped = false;
    const response = await endsBy(
      5_000,
      channel.clientStream(
        PluginAdminDefinition,
        push,
        (function* (): Generator<PushPluginRequest> {
          try {
            for (;;) {
              produced++;
              yield { part: { $case: "data", value: Buffer.alloc(1024) } };
            }
          } finally {
            stopped = true;
          }
        })(),
      ),
    );
    assert.ok(response.manifest);
    await waitFor(() => stopped, "the producer was stopped");
    assert.ok(produced < 10_000, `${produced} messages produced`);
  });

  it("keeps the token out of its errors, whatever the token holds", async () => {
    behaviour = () => {};
    for (const token of [`${TOKEN}\r\nx-injected: 1`, `${TOKEN}é`]) {
      let created: GrpcChannel | undefined;
      const error = await failure(
        (async () => {
          created = grpcChannel(serverTarget(address, undefined), { token });
        })(),
      );
      created?.close();
      assert.equal(Code[error.code], "InvalidArgument", error.message);
      assert.match(error.message, /token/);
    }
  });
});

describe("the call channel against a TLS server that is not what it should be", () => {
  let untrusted: Http2SecureServer;
  let http1: HttpsServer;
  const seen: string[] = [];

  before(async () => {
    const cert = readFileSync(fixture("server.pem"));
    const key = readFileSync(fixture("server-key.pem"));
    untrusted = createSecureServer({ cert, key });
    untrusted.on("stream", (_stream, headers) => seen.push(String(headers.authorization)));
    http1 = createHttpsServer({ cert, key }, (req, res) => {
      seen.push(String(req.headers.authorization));
      res.end("hello");
    });
  });
  after(async () => {
    await new Promise((resolve) => untrusted.close(resolve));
    await new Promise((resolve) => http1.close(resolve));
  });

  it("refuses a certificate it cannot trust, sending nothing", async () => {
    const address = await listen(untrusted);
    // The server's certificate names registry.test, chained to a CA this client was not given.
    const channel = grpcChannel(serverTarget(address, { serverName: "registry.test" }), { token: TOKEN });
    try {
      const error = await failure(endsBy(5_000, unary(channel)));
      assert.equal(Code[error.code], "Unavailable", error.message);
      assert.match(error.message, /certificate/);
    } finally {
      channel.close();
    }
    assert.deepEqual(seen, [], "the token went nowhere");
  });

  it("refuses a server that does not speak h2 (ALPN), sending nothing", async () => {
    const address = await listen(http1);
    const channel = grpcChannel(
      serverTarget(address, { serverName: "registry.test", caFile: fixture("ca.pem") }),
      { token: TOKEN },
    );
    try {
      const error = await failure(endsBy(5_000, unary(channel)));
      assert.equal(Code[error.code], "Unavailable", error.message);
    } finally {
      channel.close();
    }
    assert.deepEqual(seen, [], "the token went nowhere");
  });
});

describe("a runtime process using the channel", () => {
  it("is not crashed by a server that breaks the connection while it idles, and exits by itself", async () => {
    const raw = rawServer();
    raw.behave(({ socket, id }) => {
      socket.write(frame(HEADERS, END_HEADERS, id, block(grpcResponseHeaders)));
      socket.write(frame(DATA, 0, id, answer));
      socket.write(frame(HEADERS, END_HEADERS | END_STREAM, id, block([["grpc-status", "0"]])));
      setTimeout(() => {
        socket.write(frame(GOAWAY, 0, 0, u32(0, 1)));
        socket.end(Buffer.from("trailing garbage"));
      }, 100);
    });
    const address = await listen(raw.server);
    const channelModule = import.meta.resolve("atomix-plugins-client/transport/grpc-channel");
    const targetModule = import.meta.resolve("atomix-plugins-client/server-target");
    const generated = import.meta.resolve("atomix-plugins-core/gen/atomix/runtime/v1/plugin");
    const script = `
      import { grpcChannel } from ${JSON.stringify(channelModule)};
      import { serverTarget } from ${JSON.stringify(targetModule)};
      import { PluginCompilerDefinition } from ${JSON.stringify(generated)};
      process.on("unhandledRejection", (e) => { console.log("unhandled", String(e)); process.exit(3); });
      const channel = grpcChannel(serverTarget(${JSON.stringify(address)}, undefined));
      const response = await channel.unary(PluginCompilerDefinition, PluginCompilerDefinition.methods.compilePlugin, ${JSON.stringify(request)});
      console.log(response.plugin);
      // Idle now: the server's GOAWAY and garbage land on a connection no call uses.
      setTimeout(() => console.log("alive"), 400);
    `;
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
        timeout: 10_000,
      });
      assert.deepEqual(stdout.trim().split("\n"), ["atomix-plugin://answer", "alive"]);
    } finally {
      for (const socket of raw.sockets) socket.destroy();
      await new Promise((resolve) => raw.server.close(resolve));
    }
  });
});
