import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import { failure } from "./helpers/failure.js";
import { rawPush } from "./helpers/raw-push.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const PUSH_AND_HANG = fileURLToPath(new URL("./helpers/push-and-hang.js", import.meta.url));
const MiB = 1024 * 1024;

const keyOf = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});
const sha256 = (data: Uint8Array) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/**
 * Sends `head`, then holds the stream open without ending it until `release`
 * aborts; `stalled` resolves once the head is handed over and the stream holds.
 */
function stalledAfter(
  head: Buffer,
  release: AbortSignal,
): { data: AsyncGenerator<Uint8Array>; stalled: Promise<void> } {
  let holding!: () => void;
  const stalled = new Promise<void>((resolve) => {
    holding = resolve;
  });
  async function* data(): AsyncGenerator<Uint8Array> {
    yield head;
    holding();
    if (!release.aborted) await once(release, "abort");
  }
  return { data: data(), stalled };
}

/**
 * Every way a push without a digest can end early, over one store: each
 * leaves the key's previous artifact in place, served byte for byte.
 */
function describePushIntegrity(storeName: string, start: () => Promise<ServerProcess>): void {
  describe(`a push that does not end whole stores nothing (${storeName} store)`, () => {
    let server: ServerProcess;
    let client: PluginClient;
    let dir: { path: string; remove: () => Promise<void> };
    const good = randomBytes(3 * MiB + 17);
    let pulls = 0;

    /** The good artifact is what the key holds, and what a pull delivers. */
    async function assertGoodArtifactServed(key: BuildKey): Promise<void> {
      const manifest = await client.inspect(key);
      assert.equal(manifest.digest, sha256(good));
      assert.equal(manifest.size, good.byteLength);
      const to = join(dir.path, `pulled-${++pulls}`);
      await client.pull(key, { to });
      assert.ok((await readFile(to)).equals(good), "the pulled bytes are the good artifact's");
    }

    /**
     * Resolves once the server has said how the push to `key` ended, stored
     * or not: its store has let go of it, so what the key holds after that is
     * what the push left (not what a slow store has yet to finish). The line
     * must say it was not stored.
     */
    const pushNotStored = async (key: BuildKey) => {
      const end = await server.logged(
        (entry) =>
          (entry.msg === "push not stored" || entry.msg === "artifact pushed") &&
          entry.key === formatBuildKey(key) &&
          entry.digest !== sha256(good),
      );
      assert.equal(end.msg, "push not stored");
      return end;
    };

    /** A key holding the good artifact, pushed whole. */
    async function keyWithGoodArtifact(name: string): Promise<BuildKey> {
      const key = keyOf(name);
      await client.push(key, [good]);
      await assertGoodArtifactServed(key);
      return key;
    }

    before(async () => {
      dir = await tempDir("atomix-push-integrity-");
      server = await start();
      client = createPluginClient({ address: server.address });
    });
    after(async () => {
      client.close();
      await server.stop();
      await dir.remove();
    });

    it("keeps the previous artifact when the client cancels mid-stream", async () => {
      const key = await keyWithGoodArtifact("cancelled");
      const controller = new AbortController();
      const over = pushNotStored(key);
      const stream = stalledAfter(randomBytes(MiB), controller.signal);
      const pushing = client.push(key, stream.data, { size: good.byteLength, signal: controller.signal });
      // Cancelled once the first MiB is sent and the stream holds: mid-stream, whatever the machine's speed.
      await stream.stalled;
      controller.abort();
      assert.equal((await failure(pushing)).code, Code.Cancelled);
      assert.equal((await over).code, "CANCELLED");
      await assertGoodArtifactServed(key);
    });

    it("keeps the previous artifact when the push's deadline passes mid-stream", async () => {
      const key = await keyWithGoodArtifact("deadline");
      const release = new AbortController();
      const over = pushNotStored(key);
      const stream = stalledAfter(randomBytes(MiB), release.signal);
      const pushing = client.push(key, stream.data, { size: good.byteLength, timeoutMs: 400 });
      assert.equal((await failure(pushing)).code, Code.DeadlineExceeded);
      release.abort();
      await over;
      await assertGoodArtifactServed(key);
    });

    it("keeps the previous artifact when the pushing process is killed mid-stream", async () => {
      const key = await keyWithGoodArtifact("killed");
      const child = spawn(
        process.execPath,
        [PUSH_AND_HANG, server.address, "killed", String(good.byteLength), String(2 * MiB)],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      const exited = once(child, "exit");
      const over = pushNotStored(key);
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
      const [line] = (await once(lines, "line")) as [string];
      assert.equal(line, "sent");
      child.kill("SIGKILL");
      await exited;
      assert.equal((await over).code, "CANCELLED");
      await assertGoodArtifactServed(key);
    });

    it("keeps the previous artifact when the stream half-closes short of the announced size", async () => {
      const key = await keyWithGoodArtifact("short");
      const refused = await failure(
        client.push(key, [randomBytes(good.byteLength - 1)].values(), { size: good.byteLength }),
      );
      assert.equal(refused.code, Code.InvalidArgument);
      assert.match(refused.message, new RegExp(`expected ${good.byteLength}`));
      await assertGoodArtifactServed(key);
    });

    it("refuses a stream longer than announced as soon as it is, keeping the previous artifact", async () => {
      const key = await keyWithGoodArtifact("long");
      const refused = await failure(
        client.push(key, [randomBytes(good.byteLength + 5000)].values(), { size: good.byteLength }),
      );
      assert.equal(refused.code, Code.InvalidArgument);
      assert.match(refused.message, new RegExp(`more than the announced ${good.byteLength} bytes`));
      await assertGoodArtifactServed(key);
    });

    it("refuses a header that announces neither size nor digest, naming the field", async () => {
      const key = await keyWithGoodArtifact("unannounced");
      const failure = await rawPush(server.address, key, [randomBytes(1000)]);
      assert.equal(failure?.code, Code.InvalidArgument);
      assert.match(failure.message, /^size is required when digest is not set/);
      await assertGoodArtifactServed(key);
    });

    it("stores a push without a digest once it half-closes with exactly the announced size", async () => {
      const key = await keyWithGoodArtifact("whole");
      const next = randomBytes(MiB + 3);
      const stored = await client.push(key, [next.subarray(0, 1000), next.subarray(1000)].values(), {
        size: next.byteLength,
      });
      assert.equal(stored.digest, sha256(next));
      assert.equal((await client.inspect(key)).digest, sha256(next));
    });
  });
}

describePushIntegrity("fs", () => startServerProcess({ args: ["--shutdown-grace", "0"] }));

let registry: RegistryProcess | undefined;
before(async () => {
  registry = await startRegistry();
});
after(async () => {
  await registry?.dispose();
});
describePushIntegrity("oci", () => {
  assert.ok(registry, "the registry runs");
  return startServerProcess({
    args: ["--store", registry.storeUrl("push-integrity/artifacts"), "--shutdown-grace", "0"],
  });
});
