import assert from "node:assert/strict";
import { once } from "node:events";
import { connect as http2Connect, constants as http2Constants } from "node:http2";
import { connect as netConnect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type Client,
  credentials,
  makeGenericClientConstructor,
  type ServiceDefinition,
  status,
} from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { splitHostPort } from "../src/config.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

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

  before(async () => {
    server = await startServerProcess();
  });

  after(async () => {
    await server.stop();
  });

  it("are retired (no new streams, then GOAWAY NO_ERROR) before nghttp2 ends them with INTERNAL_ERROR", async () => {
    const session = http2Connect(`http://${server.address}`);
    session.on("error", () => {});
    await once(session, "remoteSettings");
    const goaway = once(session, "goaway") as Promise<[number]>;
    let noNewStreams = false;
    session.on("remoteSettings", (settings) => {
      if (settings.maxConcurrentStreams === 0) noNewStreams = true;
    });
    // Calls cancelled as soon as they are sent: one RST_STREAM each, much
    // faster than the 33 a second nghttp2 refills. nghttp2 alone answers the
    // 1001st with GOAWAY(INTERNAL_ERROR).
    let sent = 0;
    let ended = false;
    void goaway.then(() => {
      ended = true;
    });
    while (!ended && sent < 1_500) {
      const stream = session.request({
        ":method": "POST",
        ":path": "/atomix.runtime.v1.PluginRegistry/PullPlugin",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => {});
      stream.close(http2Constants.NGHTTP2_CANCEL);
      sent += 1;
      // About a thousand a second, a reader between each few as a client has.
      if (sent % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const [code] = await goaway;
    session.destroy();
    assert.equal(code, http2Constants.NGHTTP2_NO_ERROR);
    assert.ok(noNewStreams, "GOAWAY came without SETTINGS_MAX_CONCURRENT_STREAMS 0 first");
    assert.ok(sent < 1_000, `retired only after ${sent} resets`);
    assert.ok(sent > 400, `retired after ${sent} resets already`);
  });
});

describe("shutdown", () => {
  it("ends an open health Watch with UNAVAILABLE at once and exits without waiting for the grace", async () => {
    const server = await startServerProcess({ args: ["--shutdown-grace", "20000"] });
    const HealthClient = makeGenericClientConstructor(
      healthService as ServiceDefinition,
      "grpc.health.v1.Health",
    );
    const client = new HealthClient(server.address, credentials.createInsecure()) as unknown as Client & {
      watch(request: { service: string }): NodeJS.EventEmitter;
    };
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
