import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { failure } from "./helpers/failure.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const key = (runtime: string, buildVersion: string): BuildKey => ({
  runtime: { version: runtime, buildVersion },
  plugin: { name: "counter", version: runtime },
});

describe("build versions", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let server: ServerProcess;
  let trustedKey: string;

  before(async () => {
    dir = await tempDir("atomix-build-versions-");
    const made = await runCli(["keygen", "-o", join(dir.path, "signing")]);
    assert.equal(made.code, 0, made.stderr);
    trustedKey = await readFile(join(dir.path, "signing.pub"), "utf8");
    server = await startServerProcess({ args: ["--signing-key", join(dir.path, "signing.key")] });
  });
  after(async () => {
    await server?.stop();
    await dir.remove();
  });

  it("builds every patch release of a declared Node.js line as the line's one artifact", async () => {
    const signed = createPluginClient({ address: server.address, trustedKeys: [trustedKey] });
    try {
      // Runtime 1.0.0 declares "20": node20.20.2 and node20.6.0 are node20.
      const asked = ["node20.20.2", "node20.6.0", "node20.0.1", "node20"];
      const references = [];
      for (const buildVersion of asked) references.push(await signed.compile(key("1.0.0", buildVersion)));
      assert.equal(new Set(references.map((reference) => reference.digest)).size, 1, "one artifact");
      const stored = await signed.list({ pluginName: "counter", runtimeVersion: "1.0.0" });
      assert.deepEqual(
        stored.map((manifest) => manifest.runtime?.buildVersion),
        ["node20"],
        "nothing stored for the patch releases asked for",
      );
      // A runtime asking for its own patch release pulls and verifies the line's signed artifact.
      const to = join(dir.path, "counter.mjs");
      const pulled = await signed.pull(key("1.0.0", "node20.6.0"), { to });
      assert.equal(pulled.digest, references[0]?.digest);
      const manifest = await signed.inspect(key("1.0.0", "node20.20.2"));
      assert.equal(manifest.digest, references[0]?.digest);
    } finally {
      signed.close();
    }
  });

  it("refuses a build version outside every declared line, naming those it accepts", async () => {
    const client = createPluginClient({ address: server.address });
    try {
      for (const buildVersion of ["node18", "node21.0.1", "node2", "go1.22.0"]) {
        const error = await failure(client.compile(key("2.0.0", buildVersion)));
        assert.equal(error.code, Code.FailedPrecondition, error.message);
        assert.match(error.message, /it runs on node20, node22/);
      }
      // A Go runtime takes exactly the Go release it was built with: no patch release maps onto it.
      const otherGo = await failure(client.compile(key("3.0.0", "go1.19.9")));
      assert.equal(otherGo.code, Code.FailedPrecondition, otherGo.message);
      assert.match(otherGo.message, /runtime 3\.0\.0 was built with go1\.19\.8, not go1\.19\.9/);
    } finally {
      client.close();
    }
  });
});
