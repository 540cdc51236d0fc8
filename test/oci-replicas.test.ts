import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { credentials, type StatusObject } from "@grpc/grpc-js";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { buildKeyTag } from "../src/store/oci/build-key-tag.js";
import { failure } from "./helpers/failure.js";
import { PluginRegistryClient } from "./helpers/grpc-js-clients.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

interface Replica {
  address: string;
  child: ChildProcess;
  client: PluginClient;
  stop(): Promise<void>;
}

/** `atomix-plugins serve --store <url>` as a real process, ready once it logs "serving". */
async function startReplica(
  storeUrl: string,
  dataDir: string,
  started: Set<ServerProcess>,
): Promise<Replica> {
  const server = await startServerProcess({
    dataDir,
    http: "off",
    // Health follows the registry within a test's patience.
    args: ["--store", storeUrl, "--store-probe-interval", "100", "--shutdown-grace", "0"],
  });
  started.add(server);
  const client = createPluginClient({ address: server.address });
  return {
    address: server.address,
    child: server.child,
    client,
    async stop() {
      client.close();
      await server.kill();
    },
  };
}

/** Asks `probe` until it answers `wanted` or 10 s pass; returns the last answer. */
async function eventually(probe: () => Promise<string>, wanted: string): Promise<string> {
  const until = Date.now() + 10_000;
  for (;;) {
    const answer = await probe();
    if (answer === wanted || Date.now() > until) return answer;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function keyOf(name: string, version = "1.0.0"): BuildKey {
  return { runtime: { version: "1.0.0", buildVersion: "node20" }, plugin: { name, version } };
}

const sha256 = (data: Uint8Array) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

async function* chunksOf(data: Buffer, size = 256 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.byteLength; i += size) yield data.subarray(i, i + size);
}

/** The final status of a PullPlugin call, read from grpc-js's status event. */
async function pullStatus(address: string, key: BuildKey): Promise<StatusObject> {
  const client = new PluginRegistryClient(address, credentials.createInsecure());
  try {
    const call = client.pullPlugin({ runtime: key.runtime, plugin: key.plugin });
    return await new Promise<StatusObject>((resolve) => {
      call.on("data", () => {});
      call.on("error", () => {}); // the status event carries it
      call.on("status", resolve);
    });
  } finally {
    client.close();
  }
}

/**
 * A TCP relay that forwards up to `limit` bytes from its clients to `target`
 * and then holds everything further: a server behind it is caught in the
 * middle of an upload, for as long as the test wants.
 */
async function startHoldingRelay(target: string, limit: number) {
  const [host, port] = [
    target.slice(0, target.lastIndexOf(":")),
    Number(target.slice(target.lastIndexOf(":") + 1)),
  ];
  let forwarded = 0;
  let reached!: () => void;
  const held = new Promise<void>((resolve) => {
    reached = resolve;
  });
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = tcpConnect(port, host);
    sockets.add(inbound).add(outbound);
    outbound.pipe(inbound);
    inbound.on("data", (data: Buffer) => {
      const room = limit - forwarded;
      if (room <= 0) return;
      const part = data.subarray(0, room);
      forwarded += part.byteLength;
      outbound.write(part);
      if (forwarded >= limit) reached();
    });
    for (const socket of [inbound, outbound]) socket.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address() as { port: number };
  return {
    address: `127.0.0.1:${address.port}`,
    held,
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
}

describe("OCI store shared by two server replicas", () => {
  let registry: RegistryProcess;
  let dataDir: string;
  let a: Replica;
  let b: Replica;
  const repository = "atomix/plugins";

  const children = new Set<ServerProcess>();

  before(async () => {
    registry = await startRegistry();
    dataDir = await mkdtemp(join(tmpdir(), "atomix-replica-"));
    // Both starts are waited for, even when one fails: a replica that comes
    // up after the other failed is in `children` before after() stops them.
    const started = await Promise.allSettled([
      startReplica(registry.storeUrl(repository), dataDir, children),
      startReplica(registry.storeUrl(repository), dataDir, children),
    ]);
    for (const replica of started) if (replica.status === "rejected") throw replica.reason;
    [a, b] = started.map((replica) => (replica as PromiseFulfilledResult<Replica>).value) as [
      Replica,
      Replica,
    ];
  });

  after(async () => {
    a?.client.close();
    b?.client.close();
    for (const server of children) await server.kill();
    await registry?.dispose();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("serves through B, byte for byte, an artifact pushed through A", async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const key = keyOf("counter");
    const pushed = await a.client.push(key, chunksOf(data), {
      mediaType: "text/javascript",
      size: data.byteLength,
    });
    assert.equal(pushed.digest, sha256(data));
    const to = join(dataDir, "pulled-counter");
    const pulled = await b.client.pull(key, { to });
    assert.equal(pulled.digest, pushed.digest);
    assert.deepEqual(await readFile(to), data);
    const reference = await b.client.compile(key);
    assert.equal(reference.digest, pushed.digest);
    assert.deepEqual(
      (await b.client.list({ pluginName: "counter" })).map((m) => m.digest),
      [pushed.digest],
    );
  });

  it("leaves exactly one digest when A and B store identical bytes for one key at once, and both succeed", async () => {
    const data = randomBytes(2 * 1024 * 1024);
    const key = keyOf("simultaneous");
    const results = await Promise.all([
      a.client.push(key, chunksOf(data), { size: data.byteLength }),
      b.client.push(key, chunksOf(data), { size: data.byteLength }),
      a.client.push(key, chunksOf(data), { size: data.byteLength }),
      b.client.push(key, chunksOf(data), { size: data.byteLength }),
    ]);
    assert.deepEqual(new Set(results.map((r) => r.digest)), new Set([sha256(data)]));
    const listed = await a.client.list({ pluginName: "simultaneous" });
    assert.deepEqual(
      listed.map((m) => m.digest),
      [sha256(data)],
    );
    const to = join(dataDir, "pulled-simultaneous");
    await b.client.pull(key, { to });
    assert.deepEqual(await readFile(to), data);
  });

  it("leaves exactly one digest when A and B compile the same key at once, and both succeed", async () => {
    const key: BuildKey = {
      runtime: { version: "1.0.0", buildVersion: "node20" },
      plugin: { name: "@atomix/echo", version: "1.0.0" },
    };
    const references = await Promise.all([
      a.client.compile(key),
      b.client.compile(key),
      a.client.compile(key),
      b.client.compile(key),
    ]);
    const digests = new Set(references.map((r) => r.digest));
    assert.equal(digests.size, 1, [...digests].join(" "));
    const listed = await b.client.list({ pluginName: "@atomix/echo" });
    assert.deepEqual(
      listed.map((m) => m.digest),
      [...digests],
    );
    const [fromA, fromB] = [join(dataDir, "echo-a.mjs"), join(dataDir, "echo-b.mjs")];
    await Promise.all([a.client.pull(key, { to: fromA }), b.client.pull(key, { to: fromB })]);
    const [bytesA, bytesB] = await Promise.all([readFile(fromA), readFile(fromB)]);
    assert.deepEqual(bytesA, bytesB);
    assert.equal(sha256(bytesA), references[0]?.digest);
  });

  it("never lets B serve a partial artifact of a replica killed while pushing, and stores the key cleanly afterwards", async () => {
    const key = keyOf("interrupted");
    const data = randomBytes(3 * 1024 * 1024);
    // C reaches the registry through a relay that stops after 512 KiB: C is
    // caught midway through uploading the blob when it is killed.
    const relay = await startHoldingRelay(registry.address, 512 * 1024);
    const c = await startReplica(`oci://${relay.address}/${repository}`, dataDir, children);
    try {
      const pushing = c.client.push(key, chunksOf(data), { size: data.byteLength });
      pushing.catch(() => {});
      await relay.held;
      const uploads = join(registry.storageDir, "docker/registry/v2/repositories", repository, "_uploads");
      assert.equal((await readdir(uploads)).length, 1, "the registry holds C's unfinished upload");
      const during = await pullStatus(b.address, key);
      assert.equal(during.code, Code.NotFound, during.details);
      const exited = once(c.child, "exit");
      c.child.kill("SIGKILL");
      await exited;
      assert.equal((await failure(pushing)).code, Code.Unavailable);
    } finally {
      await c.stop();
      await relay.close();
    }
    // C's spooled copy outlived it; the next replica to start on this data
    // directory removes it, and leaves the spool files of live replicas alone.
    const spool = join(dataDir, "oci-spool");
    const leftover = `atomix-oci-${c.child.pid}-`;
    assert.ok(
      (await readdir(spool)).some((name) => name.startsWith(leftover)),
      "C left its spool file",
    );
    const d = await startReplica(`oci://${registry.address}/${repository}`, dataDir, children);
    await d.stop();
    assert.ok(!(await readdir(spool)).some((name) => name.startsWith(leftover)), "the spool file is gone");

    const after = await pullStatus(b.address, key);
    assert.equal(after.code, Code.NotFound, after.details);
    assert.deepEqual(await b.client.list({ pluginName: "interrupted" }), []);

    const stored = await b.client.push(key, chunksOf(data), { size: data.byteLength });
    assert.equal(stored.digest, sha256(data));
    const to = join(dataDir, "pulled-interrupted");
    await a.client.pull(key, { to });
    assert.deepEqual(await readFile(to), data);
  });

  it("keeps artifacts readable with plain HTTP per the distribution spec", async () => {
    const data = randomBytes(100_000);
    const key = keyOf("@acme/driver", "1.2.0");
    const pushed = await a.client.push(key, chunksOf(data), {
      size: data.byteLength,
      mediaType: "text/javascript",
      annotations: { "org.example.reviewed-by": "ops" },
    });
    const base = `http://${registry.address}/v2/${repository}`;
    const tags = (await (await fetch(`${base}/tags/list`)).json()) as { tags: string[] };
    const tag = buildKeyTag(key);
    assert.match(tag, /^acme-driver_1\.2\.0_1\.0\.0_node20-[0-9a-f]{32}$/);
    assert.ok(tags.tags.includes(tag), `${tag} in ${tags.tags}`);

    const response = await fetch(`${base}/manifests/${tag}`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    assert.equal(response.status, 200);
    const bytes = Buffer.from(await response.arrayBuffer());
    assert.equal(response.headers.get("docker-content-digest"), sha256(bytes));
    const manifest = JSON.parse(bytes.toString()) as {
      artifactType: string;
      config: { mediaType: string };
      layers: { mediaType: string; digest: string; size: number }[];
      annotations: Record<string, string>;
    };
    assert.equal(manifest.artifactType, "application/vnd.atomix.plugin.v1");
    assert.equal(manifest.config.mediaType, "application/vnd.oci.empty.v1+json");
    assert.deepEqual(
      manifest.layers.map((l) => [l.mediaType, l.digest, l.size]),
      [["text/javascript", pushed.digest, data.byteLength]],
    );
    assert.equal(manifest.annotations["dev.atomix.key.plugin.name"], "@acme/driver");
    assert.equal(manifest.annotations["dev.atomix.key.plugin.version"], "1.2.0");
    assert.equal(manifest.annotations["dev.atomix.key.runtime.version"], "1.0.0");
    assert.equal(manifest.annotations["dev.atomix.key.runtime.build-version"], "node20");
    assert.equal(manifest.annotations["org.example.reviewed-by"], "ops");
    assert.equal(manifest.annotations["org.opencontainers.image.created"], pushed.createdAt);

    const blob = Buffer.from(await (await fetch(`${base}/blobs/${pushed.digest}`)).arrayBuffer());
    assert.deepEqual(blob, data);
    const ranged = await fetch(`${base}/blobs/${pushed.digest}`, { headers: { range: "bytes=99000-" } });
    assert.equal(ranged.status, 206);
    assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), data.subarray(99_000));
  });

  it("while the registry is down, serves the keys it holds, answers UNAVAILABLE naming the registry for the rest, and serves all again once it is back", async () => {
    const data = randomBytes(50_000);
    const key = keyOf("outage");
    await a.client.push(key, chunksOf(data), { size: data.byteLength });
    const heldData = randomBytes(70_000);
    const held = keyOf("outage-held");
    await a.client.push(held, chunksOf(heldData), { size: heldData.byteLength });
    await b.client.pull(held, { to: join(dataDir, "pulled-before-outage") });
    assert.equal(await checkHealth(a.address), "SERVING");
    await registry.stop();
    try {
      // Health follows the registry, so that a balancer or an orchestrator can
      // tell: builds and admin calls need it; pulls of held keys go on.
      assert.equal(
        await eventually(() => checkHealth(b.address, "atomix.runtime.v1.PluginCompiler"), "NOT_SERVING"),
        "NOT_SERVING",
      );
      assert.equal(await checkHealth(b.address, "atomix.runtime.v1.PluginRegistry"), "SERVING");
      assert.equal(await checkHealth(b.address), "SERVING");
      const during = join(dataDir, "pulled-during-outage");
      await b.client.pull(held, { to: during });
      assert.deepEqual(await readFile(during), heldData);
      const pull = await pullStatus(a.address, key);
      assert.equal(pull.code, Code.Unavailable, pull.details);
      assert.match(pull.details, new RegExp(`OCI registry http://${registry.address.replace(/\./g, "\\.")}`));
      assert.match(pull.details, /ECONNREFUSED/);
      const compile = await failure(b.client.compile(key));
      assert.equal(compile.code, Code.Unavailable, compile.message);
      const list = await failure(b.client.list());
      assert.equal(list.code, Code.Unavailable, list.message);
      const push = await failure(
        b.client.push(keyOf("outage", "2.0.0"), chunksOf(data), { size: data.byteLength }),
      );
      assert.equal(push.code, Code.Unavailable, push.message);
    } finally {
      await registry.start();
    }
    assert.equal(await eventually(() => checkHealth(a.address), "SERVING"), "SERVING");
    const to = join(dataDir, "pulled-outage");
    await a.client.pull(key, { to });
    assert.deepEqual(await readFile(to), data);
    assert.equal(
      (await b.client.push(keyOf("outage", "2.0.0"), chunksOf(data), { size: data.byteLength })).digest,
      sha256(data),
    );
    assert.equal(a.child.exitCode, null, "A kept running");
    assert.equal(b.child.exitCode, null, "B kept running");
  });
});
