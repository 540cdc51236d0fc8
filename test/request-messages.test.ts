import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { credentials, Metadata, type StatusObject } from "@grpc/grpc-js";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { PluginRegistryClient } from "./helpers/grpc-js-clients.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { rawPush } from "./helpers/raw-push.js";

const keyOf = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});
const LONG = "x".repeat(10 * 1024);

/** The final status of a PullPlugin call with `x-plugin-offset` values, and the bytes it sent. */
async function pullWithOffset(
  address: string,
  key: BuildKey,
  offsets: string[],
): Promise<StatusObject & { bytes: number }> {
  const client = new PluginRegistryClient(address, credentials.createInsecure());
  const metadata = new Metadata();
  for (const offset of offsets) metadata.add("x-plugin-offset", offset);
  try {
    const call = client.pullPlugin({ runtime: key.runtime, plugin: key.plugin }, metadata);
    let bytes = 0;
    const status = await new Promise<StatusObject>((resolve) => {
      call.on("data", (message: { data: Buffer }) => {
        bytes += message.data.byteLength;
      });
      call.on("error", () => {}); // the status event carries it
      call.on("status", resolve);
    });
    return { ...status, bytes };
  } finally {
    client.close();
  }
}

/** Asserts a message is short and does not echo `value` whole. */
function assertCut(message: string, value: string): void {
  assert.ok(message.length < 400, `a message of ${message.length} characters`);
  assert.ok(!message.includes(value), "the value is not echoed whole");
  assert.ok(message.includes("…"), `the cut is marked: ${message}`);
}

describe("codes and messages for what a caller sends", () => {
  let server: TestServer;
  let client: PluginClient;
  const artifact = randomBytes(1000);
  const stored = keyOf("stored");

  before(async () => {
    server = await startTestServer();
    client = createPluginClient({ address: server.address });
    await client.push(stored, [artifact]);
  });
  after(async () => {
    client.close();
    await server.close();
  });

  for (const size of ["9007199254740992", "18446744073709551615"]) {
    it(`answers INVALID_ARGUMENT naming size for a PushHeader size no artifact can have: ${size}`, async () => {
      const failure = await rawPush(server.address, {
        ...keyOf("huge"),
        // A uint64 past 2^53: the encoder takes its decimal digits.
        size: size as unknown as number,
      });
      assert.equal(failure?.code, Code.InvalidArgument, failure?.message);
      assert.match(failure.message, new RegExp(`^size ${size} is larger than any artifact can be`));
      assert.equal(await server.store.get(keyOf("huge")), undefined);
    });
  }

  for (const offset of ["1001", "1000000000000000", "99999999999999999999999999", "1".repeat(10 * 1024)]) {
    it(`answers OUT_OF_RANGE for a whole number of bytes past the end as x-plugin-offset: ${offset.length > 30 ? `${offset.length} digits` : offset}`, async () => {
      const status = await pullWithOffset(server.address, stored, [offset]);
      assert.equal(status.code, Code.OutOfRange, `${offset.slice(0, 30)}: ${status.details}`);
      assert.match(
        status.details,
        /^x-plugin-offset "\d+(…)?" is past the end of stored@1\.0\.0 .*\(1000 bytes\)$/,
      );
      assert.ok(status.details.length < 200, "a long number is cut");
    });
  }

  it("streams from x-plugin-offset up to the end, and nothing from the end itself", async () => {
    const atTheEnd = await pullWithOffset(server.address, stored, ["1000"]);
    assert.equal(atTheEnd.code, Code.Ok);
    assert.equal(atTheEnd.bytes, 0);
    const fromFive = await pullWithOffset(server.address, stored, ["5"]);
    assert.equal(fromFive.bytes, 995);
  });

  for (const offsets of [["+5"], ["-1"], ["5.0"], ["0x10"], ["1e3"], [""], ["5", "6"], ["five"]]) {
    it(`refuses a malformed x-plugin-offset with INVALID_ARGUMENT instead of streaming from byte 0: ${JSON.stringify(offsets)}`, async () => {
      const status = await pullWithOffset(server.address, stored, offsets);
      assert.equal(status.code, Code.InvalidArgument, `${JSON.stringify(offsets)}: ${status.details}`);
      assert.match(status.details, /^x-plugin-offset ".*" must be one non-negative whole number of bytes/);
      assert.equal(status.bytes, 0);
    });
  }

  it("refuses a malformed x-plugin-offset of 10 KiB, quoting only its start", async () => {
    const status = await pullWithOffset(server.address, stored, [LONG]);
    assert.equal(status.code, Code.InvalidArgument);
    assertCut(status.details, LONG);
  });

  it("cuts a long plugin name in its message instead of echoing it whole", async () => {
    const name = await rawPush(server.address, { ...keyOf(LONG), size: 1 });
    assert.equal(name?.code, Code.InvalidArgument);
    assertCut(name.message, LONG);
  });

  it("cuts a long digest in its message instead of echoing it whole", async () => {
    const digest = await rawPush(server.address, { ...keyOf("digest"), digest: `sha256:${LONG}` });
    assert.equal(digest?.code, Code.InvalidArgument);
    assertCut(digest.message, LONG);
  });

  it("cuts a long media type in its message instead of echoing it whole", async () => {
    const mediaType = await rawPush(server.address, {
      ...keyOf("media"),
      size: 1,
      mediaType: `text/${LONG}`,
    });
    assert.equal(mediaType?.code, Code.InvalidArgument);
    assertCut(mediaType.message, LONG);
  });

  for (const mediaType of [
    "text/plain\r\nx-injected: 1",
    "text/plain\n",
    "text",
    "/javascript",
    "text/java script",
    "text/plain; charset",
    `application/${"a".repeat(130)}`,
    `text/plain; a=${"b".repeat(100 * 1024)}`,
  ]) {
    it(`refuses a media_type that is not one (RFC 6838), storing nothing: ${JSON.stringify(mediaType.slice(0, 40))}`, async () => {
      const failure = await rawPush(server.address, { ...keyOf("bad-media"), size: 1, mediaType }, [
        Buffer.from("x"),
      ]);
      assert.equal(failure?.code, Code.InvalidArgument, JSON.stringify(mediaType.slice(0, 40)));
      assert.match(failure.message, /^media_type ".*" must be a media type \(RFC 6838\)/);
      assert.ok(failure.message.length < 400);
      assert.equal(await server.store.get(keyOf("bad-media")), undefined);
    });
  }

  it("stores the media types that are media types", async () => {
    for (const mediaType of [
      "text/javascript",
      "application/vnd.atomix.plugin.v1+wasm",
      'text/plain; charset="utf-8"',
    ]) {
      const manifest = await client.push(keyOf("media"), [Buffer.from("x")], { mediaType });
      assert.equal(manifest.mediaType, mediaType);
    }
  });

  for (const name of ["dev.atomix.toolchain", "dev.atomix.key.plugin.name", "DEV.Atomix.source"]) {
    it(`reserves dev.atomix.* annotations to the server, naming the key a push set: ${name}`, async () => {
      const failure = await client
        .push(keyOf("forged"), [Buffer.from("x")], { annotations: { team: "storage", [name]: "forged" } })
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      assert.ok(failure instanceof PluginError, `${name} was accepted`);
      assert.equal(failure.code, Code.InvalidArgument);
      assert.match(
        failure.message,
        new RegExp(`^annotations "${name}": keys under dev\\.atomix\\. are set by the server`),
      );
      assert.equal(await server.store.get(keyOf("forged")), undefined);
    });
  }

  it("stores annotations outside dev.atomix. as pushed", async () => {
    const manifest = await client.push(keyOf("annotated"), [Buffer.from("x")], {
      annotations: { team: "storage", "org.example.atomix": "ok" },
    });
    assert.deepEqual(manifest.annotations, { team: "storage", "org.example.atomix": "ok" });
  });
});
