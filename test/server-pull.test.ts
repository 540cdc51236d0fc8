import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readlink } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import type { PullPluginResponse } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { PULL_METADATA } from "atomix-plugins-core/protocol/metadata";
import { DEFAULT_CHUNK_SIZE } from "../src/config.js";
import { createGrpcClients, type GrpcClients } from "./helpers/grpc-js-clients.js";
import { checkHealth, listServicesByReflection } from "./helpers/grpc-probes.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const MiB = 1024 * 1024;

function keyFor(name: string, version = "1.0.0"): BuildKey {
  return { runtime: { version: "1.0.0", buildVersion: "node20" }, plugin: { name, version } };
}

const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

interface RawPull {
  data: Buffer;
  headers: Metadata;
}

/** Pulls with the bare generated client, so nothing of our client library stands between. */
function rawPull(clients: GrpcClients, request: unknown, metadata = new Metadata()): Promise<RawPull> {
  return new Promise((resolve, reject) => {
    const call = clients.registry.pullPlugin(request as never, metadata);
    const chunks: Buffer[] = [];
    let headers = new Metadata();
    call.on("metadata", (m) => {
      headers = m;
    });
    call.on("data", (message: PullPluginResponse) => chunks.push(message.data));
    call.on("error", reject);
    call.on("end", () => resolve({ data: Buffer.concat(chunks), headers }));
  });
}

async function openBlobHandles(pid: number, dataDir: string): Promise<number> {
  let count = 0;
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    if (target.startsWith(`${dataDir}/blobs/`)) count += 1;
  }
  return count;
}

describe("PullPlugin over a real server process", () => {
  let server: ServerProcess;
  let clients: GrpcClients;
  let client: PluginClient;

  before(async () => {
    server = await startServerProcess({ args: ["--pull-policy", "never"] });
    clients = createGrpcClients({ address: server.address });
    client = createPluginClient({ address: server.address });
  });

  after(async () => {
    clients.close();
    client.close();
    assert.equal(await server.stop(), 0);
  });

  const sizes = [0, 1, DEFAULT_CHUNK_SIZE - 1, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE + 1, 64 * MiB];
  for (const size of sizes) {
    it(`push then pull of ${size} bytes is byte-identical and its digest metadata matches`, async () => {
      const data = randomBytes(size);
      const key = keyFor(`sized-${size}`);
      const manifest = await client.push(key, [data]);
      assert.equal(manifest.digest, sha256(data));
      const pulled = await rawPull(clients, key);
      assert.equal(pulled.data.length, size);
      assert.ok(pulled.data.equals(data), "bytes differ");
      assert.equal(pulled.headers.get(PULL_METADATA.digest)[0], sha256(data));
      assert.equal(pulled.headers.get(PULL_METADATA.size)[0], String(size));
    });
  }

  it("answers INVALID_ARGUMENT naming the field for each kind of bad request, and stays healthy", async () => {
    const good = keyFor("counter");
    const cases: [string, unknown][] = [
      ["runtime.version", { plugin: good.plugin }],
      ["runtime.version", { ...good, runtime: { version: "one", buildVersion: "node20" } }],
      ["runtime.build_version", { ...good, runtime: { version: "1.0.0", buildVersion: "" } }],
      ["runtime.build_version", { ...good, runtime: { version: "1.0.0", buildVersion: "node/20" } }],
      ["plugin.name", { runtime: good.runtime, plugin: { name: "", version: "1.0.0" } }],
      ["plugin.name", { runtime: good.runtime, plugin: { name: "../../etc/passwd", version: "1.0.0" } }],
      ["plugin.name", { runtime: good.runtime, plugin: { name: "x".repeat(300), version: "1.0.0" } }],
      ["plugin.version", { runtime: good.runtime, plugin: { name: "counter", version: "" } }],
      ["plugin.version", { runtime: good.runtime, plugin: { name: "counter", version: "1.0" } }],
    ];
    for (const [field, request] of cases) {
      await assert.rejects(rawPull(clients, request), (error: { code: number; details: string }) => {
        assert.equal(error.code, status.INVALID_ARGUMENT, `${field}: ${error.details}`);
        assert.ok(error.details.startsWith(field), `"${error.details}" should name ${field}`);
        return true;
      });
    }
    assert.equal(await checkHealth(server.address), "SERVING");
  });

  it("answers NOT_FOUND naming the build key when nothing is stored for it", async () => {
    await assert.rejects(
      rawPull(clients, keyFor("missing", "9.9.9")),
      (error: { code: number; details: string }) => {
        assert.equal(error.code, status.NOT_FOUND);
        assert.match(error.details, /missing@9\.9\.9 for runtime 1\.0\.0\/node20/);
        return true;
      },
    );
    assert.equal(await checkHealth(server.address, "atomix.runtime.v1.PluginRegistry"), "SERVING");
  });

  it("streams from x-plugin-offset, and answers OUT_OF_RANGE past the end", async () => {
    const data = randomBytes(700_000);
    const key = keyFor("offset");
    await client.push(key, [data]);
    const metadata = new Metadata();
    metadata.set(PULL_METADATA.offset, "123457");
    const tail = await rawPull(clients, key, metadata);
    assert.ok(tail.data.equals(data.subarray(123_457)));
    assert.equal(tail.headers.get(PULL_METADATA.size)[0], String(data.length));
    const past = new Metadata();
    past.set(PULL_METADATA.offset, String(data.length + 1));
    await assert.rejects(rawPull(clients, key, past), { code: status.OUT_OF_RANGE });
  });

  it("sends no chunks when x-plugin-if-none-match names the current digest", async () => {
    const data = randomBytes(300_000);
    const key = keyFor("cached");
    await client.push(key, [data]);
    const metadata = new Metadata();
    metadata.set(PULL_METADATA.ifNoneMatch, sha256(data));
    const pulled = await rawPull(clients, key, metadata);
    assert.equal(pulled.data.length, 0);
    assert.equal(pulled.headers.get(PULL_METADATA.digest)[0], sha256(data));
  });

  it("serves 50 concurrent pulls, all byte-identical", async () => {
    const data = randomBytes(4 * MiB);
    const key = keyFor("popular");
    await client.push(key, [data]);
    const pulls = await Promise.all(Array.from({ length: 50 }, () => rawPull(clients, key)));
    for (const pulled of pulls) assert.ok(pulled.data.equals(data));
  });

  it("releases every file handle of 200 pulls cancelled mid-stream", async () => {
    const key = keyFor("cancelled");
    await client.push(key, [randomBytes(16 * MiB)]);
    await Promise.all(
      Array.from(
        { length: 200 },
        () =>
          new Promise<void>((resolve) => {
            const call = clients.registry.pullPlugin(key as never);
            call.once("data", () => call.cancel());
            call.on("error", () => resolve());
            call.on("end", () => resolve());
          }),
      ),
    );
    const pid = server.child.pid as number;
    let open = await openBlobHandles(pid, server.dataDir);
    for (let attempt = 0; open > 0 && attempt < 50; attempt += 1) {
      await new Promise((r) => setTimeout(r, 100));
      open = await openBlobHandles(pid, server.dataDir);
    }
    assert.equal(open, 0);
  });

  it("exposes the registry, the compiler, the admin API and health through reflection", async () => {
    const services = await listServicesByReflection(server.address);
    for (const name of [
      "atomix.runtime.v1.PluginRegistry",
      "atomix.runtime.v1.PluginCompiler",
      "atomix.plugins.admin.v1.PluginAdmin",
    ]) {
      assert.ok(services.includes(name), `${name} missing from ${services.join(", ")}`);
    }
  });
});

describe("server lifecycle", () => {
  it("keeps its store across a restart", async () => {
    const dir = await tempDir("atomix-data-");
    const first = await startServerProcess({ dataDir: dir.path });
    const data = randomBytes(50_000);
    const pusher = createPluginClient({ address: first.address });
    await pusher.push(keyFor("durable"), [data]);
    pusher.close();
    assert.equal(await first.stop(), 0);

    const second = await startServerProcess({ dataDir: first.dataDir });
    const clients = createGrpcClients({ address: second.address });
    try {
      assert.ok((await rawPull(clients, keyFor("durable"))).data.equals(data));
    } finally {
      clients.close();
      await second.stop();
      await dir.remove();
    }
  });

  it("on SIGTERM lets an in-flight pull finish and exits 0", async () => {
    const server = await startServerProcess();
    const data = randomBytes(32 * MiB);
    const pusher = createPluginClient({ address: server.address });
    await pusher.push(keyFor("inflight"), [data]);
    pusher.close();
    const clients = createGrpcClients({ address: server.address });
    try {
      const pulling = new Promise<Buffer>((resolve, reject) => {
        const call = clients.registry.pullPlugin(keyFor("inflight") as never);
        const chunks: Buffer[] = [];
        call.once("data", () => server.child.kill("SIGTERM"));
        call.on("data", (message: PullPluginResponse) => chunks.push(message.data));
        call.on("error", reject);
        call.on("end", () => resolve(Buffer.concat(chunks)));
      });
      assert.ok((await pulling).equals(data));
      assert.equal(await server.stop(), 0);
    } finally {
      clients.close();
    }
  });

  it("ends a pull whose client stopped reading with UNAVAILABLE once the grace period is over, and exits 0", async () => {
    const server = await startServerProcess({ args: ["--shutdown-grace", "300"] });
    const pusher = createPluginClient({ address: server.address });
    await pusher.push(keyFor("stalled"), [randomBytes(32 * MiB)]);
    pusher.close();
    // A small window and a paused reader: the stream cannot finish by itself.
    const clients = createGrpcClients({
      address: server.address,
      channelOptions: { "grpc-node.flow_control_window": 65_535 },
    });
    try {
      let signalled = 0;
      const outcome = new Promise<{ code: number; details: string }>((resolve) => {
        const call = clients.registry.pullPlugin(keyFor("stalled") as never);
        call.once("data", () => {
          call.pause();
          signalled = performance.now();
          server.child.kill("SIGTERM");
        });
        call.on("error", (error: { code: number; details: string }) => resolve(error));
      });
      const error = await outcome;
      assert.equal(error.code, status.UNAVAILABLE, `${status[error.code]}: ${error.details}`);
      const waited = performance.now() - signalled;
      assert.ok(waited >= 250 && waited < 5_000, `ended ${Math.round(waited)} ms after SIGTERM`);
      assert.equal(await server.stop(), 0);
    } finally {
      clients.close();
    }
  });
});
