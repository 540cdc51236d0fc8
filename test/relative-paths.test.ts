import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cp, mkdir, readFile, realpath, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { runProcess } from "../src/compiler/run-process.js";
import { generateSigningKey } from "../src/provenance/signing-key.js";
import { COUNTER, EXAMPLES, goKey, goTestDir } from "./helpers/go-fixtures.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { startServerProcess } from "./helpers/server-process.js";

/** The GOROOT of the `go` on PATH, as an operator would name an installation. */
async function goRoot(): Promise<string> {
  const result = await runProcess("go", ["env", "GOROOT"], {
    cwd: tmpdir(),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: tmpdir() },
  });
  assert.equal(result.exitCode, 0, result.stderr);
  return result.stdout.trim();
}

const NODE_KEY: BuildKey = {
  runtime: { version: "2.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "2.0.0" },
};

/**
 * `npm start` serves with `--data ./data`, and operators write paths as they
 * stand in a shell: every path option of `serve` given relative to the
 * server's working directory must work exactly as an absolute one, for each
 * store and toolchain, whatever folder a build step or child process runs in.
 */
describe("relative paths given to serve", () => {
  let test: Awaited<ReturnType<typeof goTestDir>>;
  let registry: RegistryProcess;
  /** Every path option, relative to `test.dir`, the server's working directory. */
  const relativeArgs = [
    ...["--runtimes", "./examples/runtimes"],
    ...["--sources", "./examples/plugins"],
    ...["--go-proxy", "./examples/goproxy"],
    // One Go cache for both servers: the second build is a warm one.
    ...["--go-cache", "./go-cache"],
    ...["--signing-key", "./signing.key"],
    ...["--admin-token-file", "./admin-token"],
    // Programs given by path rather than looked up on PATH.
    ...["--bwrap", "./tools/bwrap"],
    ...["--go", "./tools/go"],
  ];

  before(async () => {
    test = await goTestDir();
    // The examples as an operator keeps them: the Go runtime's go.mod beside its release.
    for (const folder of ["runtimes", "plugins", "goproxy", "go-runtime"]) {
      await cp(join(EXAMPLES, folder), join(test.dir, "examples", folder), { recursive: true });
    }
    await mkdir(join(test.dir, "tools"));
    await symlink(await realpath("/usr/bin/bwrap"), join(test.dir, "tools", "bwrap"));
    await symlink(await goRoot(), join(test.dir, "tools", "go"));
    await writeFile(join(test.dir, "signing.key"), generateSigningKey("ecdsa-p256").privateKeyPem, {
      mode: 0o600,
    });
    await writeFile(join(test.dir, "admin-token"), "relative-paths-token\n", { mode: 0o600 });
    registry = await startRegistry();
  });

  after(async () => {
    await registry?.dispose();
    await test?.remove();
  });

  async function compileAndPull(address: string, pulledFile: string) {
    const client = createPluginClient({ address });
    try {
      const node = await client.compile(NODE_KEY);
      const pulled = await client.pull(NODE_KEY, { to: join(test.dir, pulledFile) });
      assert.equal(pulled.digest, node.digest);
      const bytes = await readFile(pulled.path);
      assert.equal(`sha256:${createHash("sha256").update(bytes).digest("hex")}`, node.digest);
      const go = await client.compile(goKey(COUNTER, "v1.0.0"), { timeoutMs: 600_000 });
      assert.match(go.digest ?? "", /^sha256:[0-9a-f]{64}$/, "the bundled Go driver builds");
    } finally {
      client.close();
    }
  }

  it("builds and serves Node.js and Go plugins with the embedded store in a relative --data", async () => {
    const server = await startServerProcess({ cwd: test.dir, dataDir: "./data", args: relativeArgs });
    try {
      await compileAndPull(server.address, "counter-fs.mjs");
      assert.ok((await stat(join(test.dir, "data", "index"))).isDirectory(), "the store is in ./data");
      assert.ok((await stat(join(test.dir, "go-cache"))).isDirectory(), "Go's caches are in ./go-cache");
    } finally {
      await server.stop();
    }
  });

  it("builds and serves Node.js and Go plugins over an OCI registry with a relative --cache-dir", async () => {
    const server = await startServerProcess({
      cwd: test.dir,
      dataDir: "./replica",
      args: [...relativeArgs, "--store", registry.storeUrl("relative"), "--cache-dir", "./content-cache"],
    });
    try {
      await compileAndPull(server.address, "counter-oci.mjs");
      assert.ok(
        (await stat(join(test.dir, "content-cache", "sha256"))).isDirectory(),
        "the content cache is in ./content-cache",
      );
    } finally {
      await server.stop();
    }
  });
});
