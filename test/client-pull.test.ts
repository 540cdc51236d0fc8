import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Metadata } from "@grpc/grpc-js";
import {
  Code,
  createPluginClient,
  formatReference,
  loadPlugin,
  type PluginClient,
  PluginError,
} from "atomix-plugins-client";
import type { Digest } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { PULL_METADATA } from "atomix-plugins-core/protocol/metadata";
import { createGrpcClients } from "./helpers/grpc-js-clients.js";
import { type HostileUpstream, startHostileUpstream } from "./helpers/hostile-upstream.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { startTcpRelay } from "./helpers/tcp-relay.js";

const sha256 = (bytes: Uint8Array) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const key = (name: string, version = "1.0.0"): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: `node${process.versions.node.split(".")[0]}` },
  plugin: { name, version },
});

async function rejectsWith(promise: Promise<unknown>, code: Code, pattern?: RegExp): Promise<PluginError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PluginError, `expected a PluginError, got ${String(error)}`);
    assert.equal(Code[error.code], Code[code], error.message);
    if (pattern) assert.match(error.message, pattern);
    return error;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

/** test/fixtures/tls, from dist/test/. */
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/tls/${name}`, import.meta.url));

/** The client's pulls against the real server. */
function describeClientPull() {
  describe("client pull", () => {
    let server: TestServer;
    let client: PluginClient;
    let work: string;
    const artifact = randomBytes(3 * 1024 * 1024 + 17);
    const connect = (address: string) => createPluginClient({ address });

    before(async () => {
      server = await startTestServer({ config: { chunkSize: 64 * 1024 } });
      client = connect(server.address);
      work = await mkdtemp(join(tmpdir(), "atomix-pull-"));
      await client.push(key("blob"), [artifact]);
    });
    after(async () => {
      client.close();
      await server.close();
      await rm(work, { recursive: true, force: true });
    });

    it("writes the verified artifact and leaves no temporary file", async () => {
      const dir = await mkdtemp(join(work, "plain-"));
      const to = join(dir, "blob.bin");
      const seen: number[] = [];
      const result = await client.pull(key("blob"), { to, onProgress: (p) => seen.push(p.received) });
      assert.deepEqual(await readFile(to), artifact);
      assert.equal(result.digest, sha256(artifact));
      assert.equal(result.size, artifact.length);
      assert.equal(result.fromCache, false);
      assert.equal(result.transferredBytes, artifact.length);
      assert.deepEqual(result.attempts, [{ offset: 0, bytes: artifact.length }]);
      assert.equal(seen.at(-1), artifact.length);
      assert.deepEqual(await readdir(dir), ["blob.bin"]);
    });

    it("a cache hit transfers no artifact bytes", async () => {
      const cacheDir = join(work, "cache-hit");
      const first = await client.pull(key("blob"), { to: join(work, "first.bin"), cacheDir });
      assert.equal(first.fromCache, false);
      const pullsBefore = server.pulls.length;
      const second = await client.pull(key("blob"), { to: join(work, "second.bin"), cacheDir });
      assert.equal(second.fromCache, true);
      assert.equal(second.transferredBytes, 0);
      assert.deepEqual(await readFile(join(work, "second.bin")), artifact);
      // The server was asked (x-plugin-if-none-match) and sent no chunk.
      assert.deepEqual(server.pulls.slice(pullsBefore), [{ code: Code.Ok, bytes: 0 }]);
    });

    it("a cache with a size limit evicts the least recently used artifacts", async () => {
      const cacheDir = join(work, "cache-lru");
      const bodies = new Map(["lru-a", "lru-b", "lru-c"].map((name) => [name, randomBytes(100_000)]));
      for (const [name, body] of bodies) await client.push(key(name), [body]);
      const pull = async (name: string) => {
        await new Promise((resolve) => setTimeout(resolve, 20)); // distinct mtimes
        return client.pull(key(name), { to: join(work, `${name}.bin`), cacheDir, cacheMaxBytes: 250_000 });
      };
      const cached = async () =>
        (await readdir(join(cacheDir, "blobs", "sha256"))).map((hex) => `sha256:${hex}`).sort();
      await pull("lru-a");
      await pull("lru-b");
      assert.equal((await pull("lru-a")).fromCache, true); // a is now the more recently used
      await pull("lru-c"); // 300 kB > 250 kB: b goes
      const [a, b, c] = [...bodies.values()].map(sha256);
      assert.deepEqual(await cached(), [a, c].sort());
      assert.equal((await readdir(join(cacheDir, "keys"))).length, 2, "b's key file went with its blob");
      const again = await pull("lru-b");
      assert.equal(again.fromCache, false);
      assert.deepEqual(await readFile(join(work, "lru-b.bin")), bodies.get("lru-b"));
      assert.ok(!(await cached()).includes(a as string), "then a, the least recently used, went");
      assert.ok((await cached()).includes(b as string));
    });

    it("a digest pinned by the caller and cached makes no call at all", async () => {
      const cacheDir = join(work, "cache-pinned");
      await client.pull(key("blob"), { to: join(work, "pin-1.bin"), cacheDir });
      const pullsBefore = server.pulls.length;
      const result = await client.pull(key("blob"), {
        to: join(work, "pin-2.bin"),
        cacheDir,
        expectedDigest: sha256(artifact) as `sha256:${string}`,
      });
      assert.equal(result.fromCache, true);
      assert.deepEqual(result.attempts, []);
      assert.equal(server.pulls.length, pullsBefore);
    });

    it("a cached copy that is out of date or damaged is fetched again", async () => {
      const cacheDir = join(work, "cache-stale");
      const first = randomBytes(100_000);
      await client.push(key("changing"), [first]);
      await client.pull(key("changing"), { to: join(work, "changing-1.bin"), cacheDir });
      const second = randomBytes(120_000);
      await client.push(key("changing"), [second]);
      const updated = await client.pull(key("changing"), { to: join(work, "changing-2.bin"), cacheDir });
      assert.equal(updated.fromCache, false);
      assert.deepEqual(await readFile(join(work, "changing-2.bin")), second);

      const blob = join(cacheDir, "blobs", "sha256", sha256(second).slice("sha256:".length));
      const damaged = Buffer.from(second);
      damaged[5] = (damaged[5] ?? 0) ^ 0xff;
      await writeFile(blob, damaged);
      const refetched = await client.pull(key("changing"), { to: join(work, "changing-3.bin"), cacheDir });
      assert.equal(refetched.fromCache, false);
      assert.equal(refetched.transferredBytes, second.length);
      assert.deepEqual(await readFile(join(work, "changing-3.bin")), second);
    });

    it("a tampered stored blob is refused with DATA_LOSS and nothing is written", async () => {
      const bytes = randomBytes(200_000);
      const manifest = await client.push(key("tampered"), [bytes]);
      const hex = manifest.digest.slice("sha256:".length);
      const stored = join(server.dataDir, "blobs", "sha256", hex.slice(0, 2), hex);
      const tampered = Buffer.from(bytes);
      tampered.fill(0x41, 1000, 1100);
      await writeFile(stored, tampered);

      const dir = await mkdtemp(join(work, "tampered-"));
      const to = join(dir, "tampered.bin");
      await rejectsWith(
        client.pull(key("tampered"), { to }),
        Code.DataLoss,
        new RegExp(`hashing to sha256:[0-9a-f]{64}, but the server announced ${manifest.digest}`),
      );
      assert.deepEqual(await readdir(dir), [], "neither the artifact nor a temporary file is left");
    });

    it("an expected digest the server does not hold is refused before any byte is fetched", async () => {
      const dir = await mkdtemp(join(work, "expected-"));
      const pullsBefore = server.pulls.length;
      await rejectsWith(
        client.pull(key("blob"), { to: join(dir, "x.bin"), expectedDigest: `sha256:${"0".repeat(64)}` }),
        Code.FailedPrecondition,
        /not the expected sha256:0{64}/,
      );
      assert.deepEqual(await readdir(dir), []);
      assert.ok(server.pulls.slice(pullsBefore).every((p) => p.bytes < artifact.length));
    });

    it("a missing key is NOT_FOUND and leaves `to` untouched", async () => {
      const to = join(work, "kept.bin");
      await writeFile(to, "previous");
      await rejectsWith(client.pull(key("absent"), { to }), Code.NotFound, /absent@1\.0\.0/);
      assert.equal(await readFile(to, "utf8"), "previous");
    });

    it("an invalid key is refused before any call", async () => {
      await rejectsWith(
        client.pull(key("blob", "latest"), { to: join(work, "never.bin") }),
        Code.InvalidArgument,
        /plugin\.version "latest"/,
      );
    });

    it("an offset past the end is OUT_OF_RANGE; an offset at the end sends nothing", async () => {
      const clients = createGrpcClients({ address: server.address });
      const pullWithOffset = (offset: number) =>
        new Promise<{ bytes: number; digest: string }>((resolve, reject) => {
          const metadata = new Metadata();
          metadata.set(PULL_METADATA.offset, String(offset));
          const call = clients.registry.pullPlugin(key("blob"), metadata);
          let bytes = 0;
          let digest = "";
          call.on("metadata", (m: Metadata) => {
            digest = String(m.get(PULL_METADATA.digest)[0]);
          });
          call.on("data", (m: { data: Uint8Array }) => {
            bytes += m.data.byteLength;
          });
          call.on("error", reject);
          call.on("end", () => resolve({ bytes, digest }));
        });
      try {
        await assert.rejects(
          pullWithOffset(artifact.length + 1),
          (error: { code: number; details: string }) => {
            assert.equal(error.code, Code.OutOfRange);
            assert.match(error.details, /past the end/);
            return true;
          },
        );
        assert.deepEqual(await pullWithOffset(artifact.length), { bytes: 0, digest: sha256(artifact) });
        assert.deepEqual(await pullWithOffset(artifact.length - 10), { bytes: 10, digest: sha256(artifact) });
      } finally {
        clients.close();
      }
    });

    it("an aborted pull rejects with CANCELLED and leaves nothing behind", async () => {
      const dir = await mkdtemp(join(work, "abort-"));
      const controller = new AbortController();
      await rejectsWith(
        client.pull(key("blob"), {
          to: join(dir, "aborted.bin"),
          signal: controller.signal,
          onProgress: () => controller.abort(),
        }),
        Code.Cancelled,
      );
      assert.deepEqual(await readdir(dir), []);
    });

    it("retries stop at the deadline with DEADLINE_EXCEEDED", async () => {
      // Nothing listens on port 1: every attempt is UNAVAILABLE.
      const unreachable = connect("127.0.0.1:1");
      try {
        await rejectsWith(
          unreachable.pull(key("blob"), {
            to: join(work, "never.bin"),
            timeoutMs: 300,
            retry: { maxAttempts: 1000, initialDelayMs: 20, maxDelayMs: 100 },
          }),
          Code.DeadlineExceeded,
        );
        await rejectsWith(
          unreachable.compile(key("blob"), { retry: { maxAttempts: 2, initialDelayMs: 1 } }),
          Code.Unavailable,
        );
        await rejectsWith(
          unreachable.compile(key("blob"), {
            timeoutMs: 200,
            retry: { maxAttempts: 1000, initialDelayMs: 20, maxDelayMs: 100 },
          }),
          Code.DeadlineExceeded,
        );
      } finally {
        unreachable.close();
      }
    });

    it("compile returns the server's answer with the reference of the stored artifact it parses to", async () => {
      const compiled = await client.compile(key("blob"));
      const digest = sha256(artifact) as Digest;
      assert.deepEqual(compiled, {
        plugin: formatReference({ key: key("blob"), digest }),
        key: key("blob"),
        digest,
        reference: { key: key("blob"), digest },
      });
    });

    it("keeps one TLS connection for pulls, a cache check and a pull abandoned midway", async () => {
      const secure = await startTestServer({
        config: { chunkSize: 64 * 1024, tlsCert: fixture("server.pem"), tlsKey: fixture("server-key.pem") },
      });
      const relay = await startTcpRelay(secure.address);
      const tlsClient = createPluginClient({
        address: relay.address,
        tls: { caFile: fixture("ca.pem"), serverName: "registry.test" },
      });
      try {
        await tlsClient.push(key("kept"), [artifact]);
        // Push goes over the call channel's connection; pulls dial one connection of their own.
        const beforePulls = relay.accepted();
        const cacheDir = join(work, "kept-cache");
        const to = join(work, "kept.bin");
        await tlsClient.pull(key("kept"), { to, cacheDir });
        assert.equal((await tlsClient.pull(key("kept"), { to, cacheDir })).fromCache, true);
        const controller = new AbortController();
        await rejectsWith(
          tlsClient.pull(key("kept"), {
            to: join(work, "kept-aborted.bin"),
            signal: controller.signal,
            onProgress: () => controller.abort(),
          }),
          Code.Cancelled,
        );
        const last = await tlsClient.pull(key("kept"), { to });
        assert.equal(last.transferredBytes, artifact.length);
        assert.equal(beforePulls, 1);
        assert.equal(relay.accepted() - beforePulls, 1, "four pulls over one TLS connection");
      } finally {
        tlsClient.close();
        await relay.close();
        await secure.close();
      }
    });
  });
}

describeClientPull();

describe("loadPlugin", () => {
  let server: TestServer;
  let client: PluginClient;
  let cacheDir: string;
  const source = 'export const driver = { name: "echo", call: (x) => "echo:" + x };\nexport default 42;\n';

  before(async () => {
    server = await startTestServer();
    client = createPluginClient({ address: server.address });
    cacheDir = await mkdtemp(join(tmpdir(), "atomix-load-"));
    await client.push(key("echo"), [Buffer.from(source)]);
  });
  after(async () => {
    client.close();
    await server.close();
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("pulls, verifies, imports and returns the required export", async () => {
    type Driver = { name: string; call(x: string): string };
    const isDriver = (value: unknown): value is Driver =>
      typeof (value as Driver).call === "function" && typeof (value as Driver).name === "string";
    const loaded = await loadPlugin(key("echo"), { client, cacheDir, exportName: "driver", check: isDriver });
    assert.equal(loaded.plugin.call("hi"), "echo:hi");
    assert.equal(loaded.fromCache, false);
    assert.equal((await stat(loaded.path)).size, source.length);

    const again = await loadPlugin(key("echo"), { server: { address: server.address }, cacheDir });
    assert.equal(again.plugin, 42);
    assert.equal(again.fromCache, true);
    assert.equal(again.path, loaded.path);
  });

  it("loads by reference, and refuses a plugin without the export or built for another runtime", async () => {
    const reference = await client.compile(key("echo"));
    const loaded = await loadPlugin(
      `atomix-plugin://1.0.0/${key("echo").runtime.buildVersion}/echo@1.0.0@${reference.digest}`,
      { client, cacheDir, exportName: "driver" },
    );
    assert.equal(loaded.digest, reference.digest);
    await rejectsWith(
      loadPlugin(key("echo"), { client, cacheDir, exportName: "createDriver" }),
      Code.FailedPrecondition,
      /does not export "createDriver"; it exports "default", "driver"/,
    );
    await rejectsWith(
      loadPlugin(
        { ...key("echo"), runtime: { version: "1.0.0", buildVersion: "go1.19.8" } },
        { client, cacheDir },
      ),
      Code.FailedPrecondition,
      /not a Node\.js runtime/,
    );
  });
});

describe("a server that announces a size past the client's bound", () => {
  let upstream: HostileUpstream;
  let dir: string;
  before(async () => {
    upstream = await startHostileUpstream();
    dir = await mkdtemp(join(tmpdir(), "atomix-announced-size-"));
    // A terabyte announced, 8 MiB sent: without the bound the client writes what comes.
    upstream.answers.set("huge", {
      manifest: { digest: sha256(Buffer.alloc(0)) as Digest, size: 1024 ** 4 },
      body: () => Buffer.alloc(8 * 1024 * 1024),
    });
  });
  after(async () => {
    await upstream.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("is refused with RESOURCE_EXHAUSTED before any byte, by the 1 GiB default and by maxBytes", async () => {
    const client = createPluginClient({ address: upstream.address });
    try {
      const huge = { ...key("huge"), plugin: { name: "huge", version: "1.0.0" } };
      const to = join(dir, "huge.bin");
      await rejectsWith(
        client.pull(huge, { to, retry: { maxAttempts: 1 } }),
        Code.ResourceExhausted,
        /announced 1099511627776 bytes .* more than the 1073741824 accepted \(maxBytes, 1 GiB by default\)/,
      );
      await rejectsWith(
        client.pull(huge, { to, maxBytes: 1024, retry: { maxAttempts: 1 } }),
        Code.ResourceExhausted,
        /more than the 1024 accepted \(maxBytes\)/,
      );
      assert.deepEqual(await readdir(dir), [], "nothing was written");
    } finally {
      client.close();
    }
  });
});
