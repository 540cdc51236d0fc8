import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createPluginClient, type PluginClient } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

const CONCURRENCY = 64;

const keyOf = (i: number): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "sustained", version: `1.0.${i}` },
});

/** Runs `call(i)` for i in [0, count), `CONCURRENCY` at once; the messages of the calls that failed. */
async function run(count: number, call: (i: number) => Promise<unknown>): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < count; i = next++) {
        await call(i).catch((error: unknown) => failures.push((error as Error).message));
      }
    }),
  );
  return failures;
}

/**
 * What a CI pipeline or an operator's script does to one client: tens of
 * thousands of unary and client-streaming calls, 64 at a time, over the one
 * connection the client keeps, against a real server process. Before, the
 * client reset every answered call's stream, and nghttp2 tore the
 * connection down about every thousand streams: all calls in flight failed
 * with "Session closed with error code 2".
 */
describe("one client under sustained load", () => {
  let server: ServerProcess;
  let client: PluginClient;

  before(async () => {
    server = await startServerProcess({ args: ["--prewarm", "off"] });
    client = createPluginClient({ address: server.address });
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  it("30,000 pushes and 50,000 inspect calls, 64 at once over one client, none failing", async () => {
    const pushed = await run(30_000, (i) => client.push(keyOf(i % 500), [Buffer.from(`artifact ${i}`)]));
    assert.deepEqual(pushed.slice(0, 3), [], `${pushed.length} pushes failed`);
    const inspected = await run(50_000, (i) => client.inspect(keyOf(i % 500)));
    assert.deepEqual(inspected.slice(0, 3), [], `${inspected.length} inspect calls failed`);
  });
});
