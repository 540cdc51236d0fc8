import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { Client, credentials, type ServiceError, status } from "@grpc/grpc-js";
import { SERVICE_NAMES } from "../src/server/server.js";
import { checkHealth, type HealthClient, healthClient } from "./helpers/grpc-probes.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";

/** Check with a request of raw bytes, as a broken or hostile client sends it. */
async function checkRaw(address: string, request: Buffer): Promise<ServiceError | Buffer> {
  const client = new Client(address, credentials.createInsecure());
  const identity = (bytes: Buffer) => bytes;
  try {
    return await new Promise((resolve) =>
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        identity,
        identity,
        request,
        (error, response) => resolve(error ?? (response as Buffer)),
      ),
    );
  } finally {
    client.close();
  }
}

describe("grpc.health.v1.Health", () => {
  let server: TestServer;
  let client: HealthClient;

  before(async () => {
    server = await startTestServer();
    client = healthClient(server.address);
  });
  after(async () => {
    client.close();
    await server.close();
  });

  it("answers Check SERVING for the server and for each service it serves", async () => {
    assert.equal(await checkHealth(server.address), "SERVING");
    for (const service of SERVICE_NAMES) assert.equal(await checkHealth(server.address, service), "SERVING");
  });

  it("answers Check for a service it does not serve with NOT_FOUND naming it, cut if long", async () => {
    await assert.rejects(checkHealth(server.address, "no.such.Service"), (error: ServiceError) => {
      assert.equal(error.code, status.NOT_FOUND);
      assert.match(error.details, /no\.such\.Service/);
      return true;
    });
    const long = "x".repeat(10_000);
    await assert.rejects(checkHealth(server.address, long), (error: ServiceError) => {
      assert.equal(error.code, status.NOT_FOUND);
      assert.ok(error.details.length < 200, `${error.details.length} characters`);
      return true;
    });
  });

  it("lists every service with its status", async () => {
    const listed = await new Promise<Record<string, { status: string }>>((resolve, reject) =>
      client.list({}, (error, response) => (error ? reject(error) : resolve(response.statuses))),
    );
    assert.deepEqual(
      listed,
      Object.fromEntries(["", ...SERVICE_NAMES].map((name) => [name, { status: "SERVING" }])),
    );
  });

  it("sends Watch the status at once and keeps it open, SERVICE_UNKNOWN for a service it does not serve", async () => {
    for (const [service, expected] of [
      ["", "SERVING"],
      ["atomix.runtime.v1.PluginRegistry", "SERVING"],
      ["no.such.Service", "SERVICE_UNKNOWN"],
    ] as const) {
      const call = client.watch({ service });
      const ended: unknown[] = [];
      call.on("status", (s) => ended.push(s));
      call.on("error", () => {});
      const [message] = (await once(call, "data")) as [{ status: string }];
      assert.equal(message.status, expected, `Watch "${service}"`);
      // A round trip on the same connection later, the watch is still open.
      assert.equal(await checkHealth(server.address), "SERVING");
      assert.deepEqual(ended, [], `Watch "${service}" still open`);
      call.cancel();
    }
  });

  it("answers a request that is not a HealthCheckRequest with INVALID_ARGUMENT and keeps serving", async () => {
    const truncated = Buffer.from([0x0a, 0x05, 0x61]);
    const notUtf8 = Buffer.from([0x0a, 0x02, 0xc3, 0x28]);
    for (const request of [truncated, notUtf8]) {
      const answer = await checkRaw(server.address, request);
      assert.ok(!Buffer.isBuffer(answer), "an error, not a response");
      assert.equal(answer.code, status.INVALID_ARGUMENT);
      assert.match(answer.details, /HealthCheckRequest/);
    }
    // Unknown fields are skipped, as protobuf says: field 2, a varint.
    const withUnknownField = await checkRaw(server.address, Buffer.from([0x10, 0x01]));
    assert.ok(Buffer.isBuffer(withUnknownField));
    assert.deepEqual([...withUnknownField], [0x08, 0x01], "SERVING");
    assert.equal(await checkHealth(server.address), "SERVING");
  });
});
