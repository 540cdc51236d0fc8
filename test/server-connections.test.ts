import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect as http2Connect, constants as http2Constants } from "node:http2";
import { connect as netConnect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { createPluginClient } from "atomix-plugins-client";
import { splitHostPort } from "../src/config.js";
import { healthClient } from "./helpers/grpc-probes.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";
import { assertSettled, serverState } from "./helpers/server-state.js";

const key = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "cancelled", version: "1.0.0" },
};

const pullHeaders = {
  ":method": "POST",
  ":path": "/atomix.runtime.v1.PluginRegistry/PullPlugin",
  "content-type": "application/grpc",
  te: "trailers",
};

/** A framed PullPluginRequest for `key`, as a gRPC client sends it. */
const pullRequest = (() => {
  const text = (field: number, value: string) =>
    Buffer.concat([Buffer.from([(field << 3) | 2, Buffer.byteLength(value)]), Buffer.from(value)]);
  const message = (field: number, body: Buffer) =>
    Buffer.concat([Buffer.from([(field << 3) | 2, body.length]), body]);
  const request = Buffer.concat([
    message(1, Buffer.concat([text(1, key.runtime.version), text(2, key.runtime.buildVersion)])),
    message(2, Buffer.concat([text(1, key.plugin.name), text(2, key.plugin.version)])),
  ]);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(request.length, 1);
  return Buffer.concat([prefix, request]);
})();

/** Opens a TCP connection and resolves once it is connected. */
async function rawConnection(address: string): Promise<Socket> {
  const { host, port } = splitHostPort(address);
  const socket = netConnect({ host, port });
  socket.on("error", () => {}); // a reset by the server is what some tests wait for
  await once(socket, "connect");
  return socket;
}

/** Milliseconds until `socket` is closed by the other side, or Infinity if it still is open after `limitMs`. */
async function closedWithin(socket: Socket, limitMs: number): Promise<number> {
  const started = performance.now();
  socket.resume(); // read (and drop) whatever comes, so that the FIN is seen
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(Number.POSITIVE_INFINITY), limitMs);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(performance.now() - started);
    });
  });
}

describe("connections", () => {
  let server: ServerProcess;

  before(async () => {
    // Ten times apart, so that a machine under load cannot blur which of them closed a connection.
    server = await startServerProcess({ args: ["--handshake-timeout", "400", "--idle-timeout", "4000"] });
  });

  after(async () => {
    await server.stop();
  });

  it("closes connections that never send the HTTP/2 preface after the handshake timeout", async () => {
    const silent = await Promise.all(Array.from({ length: 200 }, () => rawConnection(server.address)));
    // Half a preface, then nothing.
    const halfway = await rawConnection(server.address);
    halfway.write("PRI * HTTP/2.0\r\n");
    const times = await Promise.all([...silent, halfway].map((socket) => closedWithin(socket, 5_000)));
    // All closed by the handshake timeout, before the idle timeout (4000 ms) would.
    const slowest = Math.max(...times);
    assert.ok(slowest < 3_500, `a connection without a preface was still open after ${slowest} ms`);
    assert.ok(Math.min(...times) >= 300, `closed after ${Math.min(...times)} ms: before the timeout`);
  });

  it("closes an HTTP/2 connection with no call after the idle timeout, with GOAWAY", async () => {
    const session = http2Connect(`http://${server.address}`);
    session.on("error", () => {});
    await once(session, "remoteSettings");
    const started = performance.now();
    const [goawayCode] = (await once(session, "goaway")) as [number];
    assert.equal(goawayCode, http2Constants.NGHTTP2_NO_ERROR);
    await once(session, "close");
    const waited = performance.now() - started;
    // Past the handshake timeout (400 ms), at the idle timeout (4000 ms).
    assert.ok(waited >= 3_500 && waited < 12_000, `closed after ${Math.round(waited)} ms`);
  });

  it("closes a connection that pings without pause while nothing is sent, with ENHANCE_YOUR_CALM", async () => {
    const session = http2Connect(`http://${server.address}`);
    session.on("error", () => {});
    await once(session, "remoteSettings");
    const goaway = once(session, "goaway") as Promise<[number, number, Buffer]>;
    const flood = setInterval(() => {
      if (!session.closed && !session.destroyed) session.ping(() => {});
    }, 20);
    try {
      const [code, , data] = await goaway;
      assert.equal(code, http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
      assert.equal(data.toString(), "too_many_pings");
    } finally {
      clearInterval(flood);
      session.destroy();
    }
  });
});

describe("connections whose client cancels a lot", () => {
  let server: ServerProcess;
  const artifact = randomBytes(600_000);

  before(async () => {
    // Small chunks: each pull is many messages, so a cancel falls anywhere in it.
    server = await startServerProcess({ args: ["--pull-policy", "never", "--chunk-size", "16384"] });
    const client = createPluginClient({ address: server.address });
    try {
      await client.push(key, [artifact]);
    } finally {
      client.close();
    }
  });

  after(async () => {
    await server.stop();
  });

  it("are retired (a GOAWAY notice, then GOAWAY NO_ERROR) before nghttp2 ends them with INTERNAL_ERROR", async () => {
    const session = http2Connect(`http://${server.address}`);
    session.on("error", () => {});
    await once(session, "remoteSettings");
    const goaway = once(session, "goaway") as Promise<[number, number]>;
    // Calls cancelled as soon as they are sent: one RST_STREAM each, much
    // faster than the 33 a second nghttp2 refills. nghttp2 alone answers the
    // 1001st with GOAWAY(INTERNAL_ERROR).
    let sent = 0;
    let ended = false;
    void goaway.then(() => {
      ended = true;
    });
    while (!ended && sent < 1_500) {
      const stream = session.request(pullHeaders);
      stream.on("error", () => {});
      stream.close(http2Constants.NGHTTP2_CANCEL);
      sent += 1;
      // About a thousand a second, a reader between each few as a client has.
      if (sent % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const [code, lastStreamId] = await goaway;
    session.destroy();
    assert.equal(code, http2Constants.NGHTTP2_NO_ERROR);
    // A notice first: every stream the client opened until it reads it is still served.
    assert.equal(lastStreamId, 2 ** 31 - 1);
    assert.ok(sent < 1_000, `retired only after ${sent} resets`);
    assert.ok(sent > 400, `retired after ${sent} resets already`);
  });

  it("stay up through thousands of pulls cancelled at random points, and give back descriptors and memory", {
    timeout: 180_000,
  }, async () => {
    const baseline = await serverState(server);
    const goaways: number[] = [];
    const failures: string[] = [];
    let cancelled = 0;
    let whole = 0;
    const goawayed = new WeakSet<object>();
    /** One connection as a client keeps it: a new one once the server says GOAWAY. */
    const connection = () => {
      const session = http2Connect(`http://${server.address}`);
      session.setMaxListeners(0); // one goaway listener per call in flight
      session.on("goaway", (code) => {
        goaways.push(code);
        goawayed.add(session);
      });
      session.on("error", (error) => failures.push(`session: ${error.message}`));
      return session;
    };
    const sessions = Array.from({ length: 6 }, connection);
    const pullOnce = (slot: number) =>
      new Promise<void>((resolve) => {
        let session = sessions[slot] as ReturnType<typeof connection>;
        if (session.closed || session.destroyed || goawayed.has(session)) {
          session = connection();
          sessions[slot] = session;
        }
        // Cancel after 0 to 40 messages' worth of bytes, or never (a whole pull).
        const cancelAfter =
          Math.random() < 0.2 ? Number.POSITIVE_INFINITY : Math.floor(Math.random() * 40 * 16_384);
        const stream = session.request(pullHeaders);
        stream.end(pullRequest);
        let received = 0;
        stream.on("data", (chunk: Buffer) => {
          received += chunk.length;
          if (received >= cancelAfter && !stream.closed) stream.close(http2Constants.NGHTTP2_CANCEL);
        });
        // A call not yet sent when the server says GOAWAY (held back by a
        // stream quota of 0) goes to a new connection, as gRPC clients do.
        const onGoaway = () => {
          if (stream.pending) stream.close(http2Constants.NGHTTP2_CANCEL);
        };
        session.on("goaway", onGoaway);
        stream.on("error", () => {});
        // A call a server never answers is one a client gives up on: a failure here.
        const hung = setTimeout(() => {
          failures.push(`a pull got no answer for 10 s (stream ${stream.id ?? "not opened"})`);
          stream.close(http2Constants.NGHTTP2_CANCEL);
        }, 10_000);
        stream.on("close", () => {
          clearTimeout(hung);
          session.off("goaway", onGoaway);
          if (stream.rstCode === http2Constants.NGHTTP2_CANCEL) cancelled += 1;
          else if (stream.rstCode === http2Constants.NGHTTP2_NO_ERROR) whole += 1;
          else if (stream.rstCode !== http2Constants.NGHTTP2_REFUSED_STREAM)
            failures.push(`stream reset by the server: ${stream.rstCode}`);
          resolve();
        });
        if (cancelAfter === 0) stream.close(http2Constants.NGHTTP2_CANCEL);
      });
    // 24 pulls at a time over 6 connections, 2,400 in all: about 1,900
    // cancelled, some 300 a connection, under the reset budget that retires
    // connections (test/pull-streams-grpc-go.test.ts goes past it).
    let next = 0;
    await Promise.all(
      Array.from({ length: 24 }, async (_, worker) => {
        while (next < 2_400) {
          next += 1;
          await pullOnce(worker % 6);
        }
      }),
    );
    for (const session of sessions) session.close();
    assert.deepEqual(failures, []);
    assert.deepEqual(
      goaways.filter((code) => code !== http2Constants.NGHTTP2_NO_ERROR),
      [],
      "a connection was ended with an error code",
    );
    assert.ok(cancelled > 1_500, `only ${cancelled} pulls were cancelled`);
    assert.ok(whole > 0, "no pull ran to its end");
    assert.deepEqual(
      server.logs.filter((l) => l.msg === "connection failed"),
      [],
    );
    // Every pull has ended on the server, and what they held is back.
    await assertSettled(server, baseline);
  });
});

describe("shutdown", () => {
  it("ends an open health Watch with UNAVAILABLE at once and exits without waiting for the grace", async () => {
    const server = await startServerProcess({ args: ["--shutdown-grace", "20000"] });
    const client = healthClient(server.address);
    try {
      const seen: string[] = [];
      const call = client.watch({ service: "" });
      const ended = new Promise<{ code: number }>((resolve) => call.on("error", resolve));
      call.on("data", (message: { status: string }) => seen.push(message.status));
      while (seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      const signalled = performance.now();
      const exited = server.stop();
      const error = await ended;
      assert.equal(error.code, status.UNAVAILABLE);
      assert.deepEqual(seen, ["SERVING", "NOT_SERVING"]);
      assert.equal(await exited, 0);
      const waited = performance.now() - signalled;
      assert.ok(waited < 5_000, `exited ${Math.round(waited)} ms after SIGTERM`);
    } finally {
      client.close();
      await server.kill();
    }
  });
});
