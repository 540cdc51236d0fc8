import assert from "node:assert/strict";
import { cp, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, createPluginClient, loadPlugin, type PluginClient, PluginError } from "atomix-plugins-client";
import { EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";

interface Driver {
  name: string;
  handle(request: { key: string }): Promise<string> | string;
}
const isDriver = (value: unknown): value is Driver =>
  typeof value === "object" &&
  value !== null &&
  typeof (value as Driver).name === "string" &&
  typeof (value as Driver).handle === "function";

describe("loadPlugin with the real Node.js compiler", () => {
  let dir: string;
  let server: TestServer;
  let client: PluginClient;
  let runtimeRoot: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atomix-load-e2e-"));
    server = await startTestServer({ config: { runtimes: [EXAMPLE_RUNTIMES_DIR] } });
    client = createPluginClient({ address: server.address });
    // A runtime 1.0.0 installation: its SDK where plugins' bare imports find it.
    runtimeRoot = join(dir, "runtime");
    await cp(
      join(EXAMPLE_RUNTIMES_DIR, "1.0.0", "sdk", "runtime-sdk"),
      join(runtimeRoot, "node_modules", "@atomix", "runtime-sdk"),
      { recursive: true },
    );
    await mkdir(join(runtimeRoot, "plugins"));
  });
  after(async () => {
    client.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("compiles, loads by reference into the runtime and calls the driver", async () => {
    const key = {
      runtime: { version: "1.0.0", buildVersion: "node20" },
      plugin: { name: "counter", version: "1.0.0" },
    };
    const reference = await client.compile(key);
    const options = {
      client,
      cacheDir: join(dir, "cache"),
      modulesDir: join(runtimeRoot, "plugins"),
      exportName: "driver",
      check: isDriver,
    };
    const loaded = await loadPlugin(reference, options);
    assert.equal(loaded.digest, reference.digest);
    assert.equal(loaded.plugin.name, "counter");
    assert.equal(await loaded.plugin.handle({ key: "a" }), "key:a=1");

    // Pinned and cached: loads again without a call (the server is no longer needed).
    await server.server.shutdown(0);
    const again = await loadPlugin(reference, options);
    assert.equal(again.fromCache, true);
    assert.equal(again.plugin, loaded.plugin, "the same bytes are the same module");

    // Without the runtime's modules next to it, the plugin cannot load: said plainly.
    try {
      await loadPlugin(reference, { ...options, modulesDir: join(dir, "elsewhere") });
      assert.fail("expected FAILED_PRECONDITION");
    } catch (error) {
      assert.ok(error instanceof PluginError);
      assert.equal(error.code, Code.FailedPrecondition);
      assert.match(error.message, /does not load: .*@atomix\/runtime-sdk/);
    }
  });
});
