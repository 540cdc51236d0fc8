import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createPluginClient, type PluginClient } from "atomix-plugins-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { runProcess } from "../src/compiler/run-process.js";
import { EXAMPLE_PLUGINS_DIR, EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { failure } from "./helpers/failure.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const HOST = join(ROOT, "examples", "node-host", "host.mjs");

function key(name: string, version: string, runtime: string, buildVersion = "node20"): BuildKey {
  return { runtime: { version: runtime, buildVersion }, plugin: { name, version } };
}

/** Runs the example runtime host on an artifact and returns what it printed. */
async function host(runtime: string, plugin: string, pluginKey: string): Promise<Record<string, string>> {
  const result = await runProcess(
    process.execPath,
    [HOST, "--runtime", join(EXAMPLE_RUNTIMES_DIR, runtime), "--plugin", plugin, "--key", pluginKey],
    { cwd: ROOT, env: { PATH: process.env.PATH ?? "" }, timeoutMs: 20_000 },
  );
  assert.equal(result.exitCode, 0, result.stderr);
  return JSON.parse(result.stdout) as Record<string, string>;
}

describe("compile and pull over gRPC", () => {
  let dir: string;
  let server: TestServer;
  let client: PluginClient;
  let toolchainRuns = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atomix-compiler-e2e-"));
    server = await startTestServer({
      config: { runtimes: [EXAMPLE_RUNTIMES_DIR] },
      onBuild: () => toolchainRuns++,
    });
    client = createPluginClient({ address: server.address });
  });

  after(async () => {
    client.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("runs one build for 20 concurrent identical CompilePlugin calls and answers all with one reference", async () => {
    const k = key("counter", "1.0.0", "1.0.0");
    const references = await Promise.all(Array.from({ length: 20 }, () => client.compile(k)));
    assert.equal(toolchainRuns, 1);
    const texts = new Set(references.map((reference) => reference.plugin));
    assert.equal(texts.size, 1);
    assert.match(
      [...texts][0] ?? "",
      /^atomix-plugin:\/\/1\.0\.0\/node20\/counter@1\.0\.0@sha256:[0-9a-f]{64}$/,
    );
    // A stored key answers from the store.
    await client.compile(k);
    assert.equal(toolchainRuns, 1);
  });

  it("compiles, pulls and runs plugins in the runtime host they were built for", async () => {
    const cases = [
      { k: key("counter", "1.0.0", "1.0.0"), result: "key:a=1", sdk: "1.0.0" },
      { k: key("counter", "2.0.0", "2.0.0", "node20.20.2"), result: "a=1 on runtime 2.0.0", sdk: "2.0.0" },
      { k: key("@atomix/echo", "1.0.0", "1.0.0"), result: "echo a (sdk 1.0.0)", sdk: "1.0.0" },
      { k: key("@atomix/echo", "1.0.0", "2.0.0"), result: "echo a (sdk 2.0.0)", sdk: "2.0.0" },
    ];
    for (const { k, result, sdk } of cases) {
      const reference = await client.compile(k);
      const to = join(dir, `${k.plugin.name.replace("/", "_")}-${k.runtime.version}.mjs`);
      const pulled = await client.pull(k, { to, expectedDigest: reference.digest });
      assert.equal(pulled.digest, reference.digest);
      const ran = await host(k.runtime.version, to, "a");
      assert.deepEqual(ran, {
        runtime: k.runtime.version,
        sdk,
        driver: k.plugin.name.split("/").pop(),
        result,
      });
    }
  });

  it("carries each error's code and message to the caller", async () => {
    const unknownRuntime = await failure(client.compile(key("counter", "1.0.0", "7.0.0")));
    assert.equal(unknownRuntime.code, Code.NotFound);
    assert.match(
      unknownRuntime.message,
      /runtime 7\.0\.0 is unknown to this server; available runtimes: 1\.0\.0, 2\.0\.0/,
    );

    const misaligned = await failure(client.compile(key("counter", "1.0.0", "2.0.0")));
    assert.equal(misaligned.code, Code.FailedPrecondition);
    assert.match(
      misaligned.message,
      /needs @atomix\/runtime-sdk \^1\.0\.0 .* runtime 2\.0\.0 supplies @atomix\/runtime-sdk 2\.0\.0/,
    );

    const untyped = await failure(client.compile(key("broken-types", "1.0.0", "2.0.0")));
    assert.equal(untyped.code, Code.FailedPrecondition);
    assert.match(untyped.message, /src\/index\.ts:\d+: /);

    const noExport = await failure(client.compile(key("no-export", "1.0.0", "1.0.0")));
    assert.equal(noExport.code, Code.FailedPrecondition);
    assert.match(noExport.message, /no export "driver"/);

    const wrongNode = await failure(client.compile(key("counter", "2.0.0", "2.0.0", "node18")));
    assert.equal(wrongNode.code, Code.FailedPrecondition);
    assert.match(wrongNode.message, /it runs on node20, node22/);

    const unknownPlugin = await failure(client.compile(key("nonexistent", "1.0.0", "1.0.0")));
    assert.equal(unknownPlugin.code, Code.NotFound);

    const invalid = await failure(client.compile(key("counter", "one", "1.0.0")));
    assert.equal(invalid.code, Code.InvalidArgument);
  });
});

describe("serve command", () => {
  let dir: string;
  const servers: ServerProcess[] = [];

  /** `atomix-plugins serve` as a process, over `dataDir`. */
  async function serve(dataDir: string, args: string[]): Promise<{ address: string }> {
    const server = await startServerProcess({ dataDir, args });
    servers.push(server);
    return server;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atomix-serve-e2e-"));
  });

  after(async () => {
    for (const server of servers) await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("builds on a pull miss with the bundled examples, and the artifact runs in the host", async () => {
    const { address } = await serve(join(dir, "build"), ["--build-concurrency", "1"]);
    const client = createPluginClient({ address });
    try {
      const to = join(dir, "counter.mjs");
      await client.pull(key("counter", "2.0.0", "2.0.0"), { to });
      assert.equal((await host("2.0.0", to, "b")).result, "b=1 on runtime 2.0.0");
    } finally {
      client.close();
    }
  });

  it("answers NOT_FOUND on a pull miss with --pull-policy never, and builds with CompilePlugin", async () => {
    const { address } = await serve(join(dir, "never"), [
      "--pull-policy",
      "never",
      "--runtimes",
      EXAMPLE_RUNTIMES_DIR,
      "--sources",
      EXAMPLE_PLUGINS_DIR,
    ]);
    const client = createPluginClient({ address });
    try {
      const k = key("@atomix/echo", "1.0.0", "1.0.0");
      const to = join(dir, "echo.mjs");
      assert.equal((await failure(client.pull(k, { to }))).code, Code.NotFound);
      await client.compile(k);
      await client.pull(k, { to });
      assert.equal((await host("1.0.0", to, "c")).result, "echo c (sdk 1.0.0)");
    } finally {
      client.close();
    }
  });
});
