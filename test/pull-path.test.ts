import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { credentials, Metadata } from "@grpc/grpc-js";
import { createPluginClient } from "atomix-plugins-client";
import type { PullPluginResponse } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import { installInPlaceFraming } from "../src/server/grpc-framing.js";
import { PluginRegistryClient } from "./helpers/grpc-js-clients.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";

const key = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "framed", version: "1.0.0" },
};

/** Pulls with the generated client (its own decoder, not ours), concurrently when asked. */
function pullWithGeneratedClient(address: string, offset = 0): Promise<Buffer> {
  const client = new PluginRegistryClient(address, credentials.createInsecure());
  const metadata = new Metadata();
  if (offset) metadata.set("x-plugin-offset", String(offset));
  const call = client.pullPlugin({ runtime: key.runtime, plugin: key.plugin }, metadata);
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    call.on("data", (message: PullPluginResponse) => chunks.push(Buffer.from(message.data)));
    call.on("error", (error) => {
      client.close();
      reject(error);
    });
    call.on("end", () => {
      client.close();
      resolve(Buffer.concat(chunks));
    });
  });
}

/**
 * Pulls with the generated client, reading no faster than one message per
 * `pauseMs`: the stream stays paused in between, so HTTP/2 flow control
 * holds the server's chunks queued while faster streams move on.
 */
function pullSlowly(address: string, pauseMs: number): Promise<Buffer> {
  const client = new PluginRegistryClient(address, credentials.createInsecure());
  const call = client.pullPlugin({ runtime: key.runtime, plugin: key.plugin });
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    call.on("data", (message: PullPluginResponse) => {
      chunks.push(Buffer.from(message.data));
      call.pause();
      setTimeout(() => call.resume(), pauseMs);
    });
    call.on("error", (error) => {
      client.close();
      reject(error);
    });
    call.on("end", () => {
      client.close();
      resolve(Buffer.concat(chunks));
    });
  });
}

describe("pull path with in-place framing", () => {
  let server: TestServer;
  // Not a multiple of any chunk size, so the last chunk is short and buffers are reused at other sizes.
  const artifact = randomBytes(3 * 1024 * 1024 + 12345);

  before(async () => {
    // Room for a few chunks in all: buffers are recycled many times in one pull.
    server = await startTestServer({
      config: { chunkSize: 65536, streamBufferBytes: 131072, pullMemoryBytes: 512 * 1024 },
    });
    const client = createPluginClient({ address: server.address });
    try {
      await client.push(
        key,
        (async function* () {
          yield artifact;
        })(),
        { size: artifact.byteLength },
      );
    } finally {
      client.close();
    }
  });

  after(() => server.close());

  it("frames messages in place on this grpc-js", () => {
    assert.equal(installInPlaceFraming(), true);
  });

  it("streams exactly the stored bytes to several pulls at once, whole and from an offset", async () => {
    const [one, two, three] = await Promise.all([
      pullWithGeneratedClient(server.address),
      pullWithGeneratedClient(server.address),
      pullWithGeneratedClient(server.address, 1_000_001),
    ]);
    const digest = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    assert.equal(digest(one), digest(artifact));
    assert.equal(digest(two), digest(artifact));
    assert.equal(digest(three), digest(artifact.subarray(1_000_001)));
  });

  it("gives slow and fast readers of one artifact at once every byte, though they share chunk buffers", async () => {
    const pulls = Array.from({ length: 24 }, (_, i) =>
      i % 2 === 0 ? pullWithGeneratedClient(server.address) : pullSlowly(server.address, 1 + (i % 5)),
    );
    const want = createHash("sha256").update(artifact).digest("hex");
    for (const pulled of await Promise.all(pulls)) {
      assert.equal(pulled.length, artifact.length);
      assert.equal(createHash("sha256").update(pulled).digest("hex"), want);
    }
  });
});
