import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { EXAMPLE_PLUGINS_DIR } from "../src/config.js";
import { failure } from "./helpers/failure.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { startServerProcess, tempDir } from "./helpers/server-process.js";

const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

/** Processes whose command line names `text`, this test's own ps aside. */
function processesNaming(text: string): string[] {
  return execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })
    .split("\n")
    .filter((line) => line.includes(text) && !line.startsWith("ps "));
}

describe("build containment", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let catalog: string;

  before(async () => {
    dir = await tempDir("atomix-containment-");
    catalog = join(dir.path, "catalog");
    const spin = join(catalog, "spin", "1.0.0");
    await mkdir(join(spin, "src"), { recursive: true });
    await writeFile(
      join(spin, "package.json"),
      JSON.stringify({
        name: "spin",
        version: "1.0.0",
        type: "module",
        peerDependencies: { "@atomix/runtime-sdk": "*" },
      }),
    );
    // Loading it never ends: only killing its process stops it.
    await writeFile(
      join(spin, "src", "index.ts"),
      '// @ts-nocheck\nfor (;;) {}\nexport const driver = { name: "spin", handle: (r: { key: string }) => r.key };\n',
    );
  });
  after(() => dir.remove());

  it("kills every process of a build at --build-timeout and frees its slot for the next build", async () => {
    const workRoot = join(dir.path, "tmp");
    await mkdir(workRoot);
    const server = await startServerProcess({
      args: [
        ...["--sources", catalog, "--sources", EXAMPLE_PLUGINS_DIR],
        ...["--build-concurrency", "1", "--build-timeout", "8000"],
      ],
      // Builds get their work directories here, so that their processes can be found by path.
      env: { TMPDIR: workRoot },
    });
    const client = createPluginClient({ address: server.address });
    try {
      const stopped = await failure(client.compile(key("spin"), { retry: { maxAttempts: 1 } }));
      assert.equal(stopped.code, Code.DeadlineExceeded, stopped.message);
      assert.match(stopped.message, /spin@1\.0\.0 .*took longer than 8000 ms/);
      // The one slot is free again: a normal build starts and finishes.
      const reference = await client.compile(key("counter"));
      assert.match(reference.digest ?? "", /^sha256:/);
      assert.deepEqual(processesNaming(workRoot), [], "no process of the stopped build is left");
      assert.deepEqual(
        (await readdir(workRoot)).filter((name) => name.startsWith("atomix-build-")),
        [],
        "work directories are removed",
      );
      assert.equal(await checkHealth(server.address), "SERVING");
    } finally {
      client.close();
      await server.stop();
    }
  });

  it("refuses builds with the fix when the sandbox cannot start, and says so at start", async () => {
    const server = await startServerProcess({ args: ["--bwrap", join(dir.path, "no-such-bwrap")] });
    const client = createPluginClient({ address: server.address });
    try {
      const refusal = server.logs.find((entry) => entry.sandbox === "unavailable");
      assert.ok(refusal, "the start-up log says builds will be refused");
      assert.equal(refusal.level, 50);
      assert.match(String(refusal.msg), /no-such-bwrap is not installed/, "the log names what is missing");
      const error = await failure(client.compile(key("counter")));
      assert.equal(error.code, Code.FailedPrecondition);
      assert.ok(!error.message.includes(dir.path), "a caller is not shown the server's paths");
      assert.match(
        error.message,
        /the build sandbox \(bubblewrap\) cannot start on this server.*apt-get install bubblewrap.*--sandbox off/,
      );
      assert.equal(await checkHealth(server.address), "SERVING", "the registry side keeps serving");
    } finally {
      client.close();
      await server.stop();
    }
  });

  it("builds once bubblewrap is installed after the start, without a restart, and says so while it is not", async () => {
    const tools = join(dir.path, "late-tools");
    await mkdir(tools, { recursive: true });
    const bwrap = join(tools, "bwrap");
    const server = await startServerProcess({ args: ["--bwrap", bwrap] });
    const client = createPluginClient({ address: server.address });
    try {
      assert.ok(server.logs.some((entry) => entry.sandbox === "unavailable"));
      const refused = await failure(client.compile(key("counter"), { retry: { maxAttempts: 1 } }));
      assert.equal(refused.code, Code.FailedPrecondition);
      assert.match(refused.message, /apt-get install bubblewrap.*no restart needed/);
      assert.equal(await checkHealth(server.address), "SERVING", "the registry side keeps serving");
      const healthz = await fetch(`http://${server.http}/healthz`);
      assert.equal(healthz.status, 200);
      assert.equal(await healthz.text(), "serving\n");

      // The operator installs bubblewrap where the server was told to find it.
      await symlink(execFileSync("sh", ["-c", "command -v bwrap"], { encoding: "utf8" }).trim(), bwrap);
      const reference = await client.compile(key("counter"), { retry: { maxAttempts: 1 } });
      assert.match(reference.digest ?? "", /^sha256:/, "built by the same server process");
      assert.ok(server.logs.some((entry) => /build sandbox now available/.test(String(entry.msg))));
      assert.equal(await checkHealth(server.address), "SERVING");
    } finally {
      client.close();
      await server.stop();
    }
  });

  it("builds without a sandbox only when told to, with a warning at start and on every build", async () => {
    const server = await startServerProcess({ args: ["--sandbox", "off"] });
    const client = createPluginClient({ address: server.address });
    try {
      assert.ok(server.logs.some((entry) => entry.sandbox === "off" && entry.level === 40));
      const reference = await client.compile(key("counter"));
      assert.match(reference.digest ?? "", /^sha256:/);
      // Waited for as the server prints it: the warning may reach the pipe after the answer.
      await server.logged((entry) => entry.msg === "building without a sandbox (--sandbox off)");
    } finally {
      client.close();
      await server.stop();
    }
  });
});
