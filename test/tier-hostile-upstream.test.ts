import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { credentials } from "@grpc/grpc-js";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { createUpstreamCompiler } from "../src/compiler/upstream-compiler.js";
import { createUpstreamServerStore } from "../src/store/upstream-server-store.js";
import { failure } from "./helpers/failure.js";
import { PluginRegistryClient } from "./helpers/grpc-js-clients.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { type HostileUpstream, sha256, startHostileUpstream } from "./helpers/hostile-upstream.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

/**
 * A tier (`--upstream`, a real server process) in front of a gRPC server
 * that answers what a compromised or broken atomix-plugins server could:
 * each hostile answer is refused with a clear code, nothing of it is
 * cached, and the tier keeps serving.
 */
describe("a tier in front of a hostile upstream server", () => {
  let hostile: HostileUpstream;
  let tier: ServerProcess;
  let client: PluginClient;
  let work: { path: string; remove: () => Promise<void> };
  const honest = randomBytes(300_000);

  before(async () => {
    work = await tempDir("atomix-hostile-upstream-");
    hostile = await startHostileUpstream();
    hostile.answers.set("honest", {
      manifest: { digest: sha256(honest), size: honest.byteLength },
      body: (offset) => honest.subarray(offset),
    });
    tier = await startServerProcess({ args: ["--upstream", hostile.address] });
    client = createPluginClient({ address: tier.address });
  });
  after(async () => {
    client?.close();
    await tier?.kill();
    await hostile?.close();
    await work?.remove();
  });

  /** The tier still answers, and serves an honest artifact whole. */
  async function stillServing(): Promise<void> {
    assert.equal(await checkHealth(tier.address), "SERVING");
    const to = join(work.path, `honest-${Math.random()}`);
    await client.pull(key("honest"), { to });
    assert.equal(sha256(await readFile(to)), sha256(honest));
  }

  /** A counter's value in the tier's /metrics. */
  async function metric(name: string): Promise<number> {
    const text = await (await fetch(`http://${tier.http}/metrics`)).text();
    return Number(new RegExp(`^atomix_plugins_${name} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
  }

  /** A pull over grpc-js, which checks nothing: the status the tier ends it with, and the bytes. */
  function rawPull(name: string): Promise<{ code: number; bytes: number; details: string }> {
    const raw = new PluginRegistryClient(tier.address, credentials.createInsecure());
    return new Promise((resolve) => {
      let bytes = 0;
      const call = raw.pullPlugin({ runtime: key(name).runtime, plugin: key(name).plugin });
      call.on("data", (message: { data: Buffer }) => {
        bytes += message.data.byteLength;
      });
      call.on("error", (error: { code: number; details: string }) => {
        raw.close();
        resolve({ code: error.code, bytes, details: error.details });
      });
      call.on("end", () => {
        raw.close();
        resolve({ code: Code.Ok, bytes, details: "" });
      });
    });
  }

  /** Blob files and partial files in the tier's content cache. */
  const cached = async () => (await readdir(join(tier.dataDir, "content-cache", "sha256"))).sort();

  it("refuses an upstream that streams more bytes than the size it announced, and keeps serving", async () => {
    const data = randomBytes(200_000);
    hostile.answers.set("long", {
      manifest: { digest: sha256(data), size: data.byteLength },
      // The artifact, then as much again.
      body: (offset) => Buffer.concat([data.subarray(offset), randomBytes(data.byteLength)]),
    });
    const refused = await failure(client.pull(key("long"), { to: join(work.path, "long") }));
    assert.equal(refused.code, Code.DataLoss, refused.message);
    assert.match(refused.message, /more than|bytes/);
    assert.ok(!(await cached()).some((name) => name.startsWith(sha256(data).slice(7))));
    await stillServing();
  });

  /** A pull of `name` the tier refuses with `code`, naming its upstream, caching nothing of `data`, and serving on. */
  async function refusedFromUpstream(name: string, code: Code, data: Buffer): Promise<void> {
    const refused = await failure(client.pull(key(name), { to: join(work.path, name) }));
    assert.equal(refused.code, code, `${name}: ${refused.message}`);
    assert.match(refused.message, new RegExp(`${hostile.address}|upstream`), refused.message);
    assert.ok(!(await cached()).some((file) => file.startsWith(sha256(data).slice(7))));
    await stillServing();
  }

  it("refuses a manifest naming another key than the one asked for with DATA_LOSS", async () => {
    const data = randomBytes(100_000);
    hostile.answers.set("renamed", {
      manifest: { digest: sha256(data), size: data.byteLength, plugin: { name: "other", version: "1.0.0" } },
      body: (offset) => data.subarray(offset),
    });
    await refusedFromUpstream("renamed", Code.DataLoss, data);
  });

  it("refuses a manifest announcing a huge size with RESOURCE_EXHAUSTED", async () => {
    const data = randomBytes(100_000);
    hostile.answers.set("huge", {
      manifest: { digest: sha256(data), size: Number.MAX_SAFE_INTEGER },
      body: (offset) => data.subarray(offset),
    });
    await refusedFromUpstream("huge", Code.ResourceExhausted, data);
  });

  it("refuses a manifest with a malformed digest (a path) with DATA_LOSS", async () => {
    const data = randomBytes(100_000);
    hostile.answers.set("malformed", {
      manifest: { digest: "sha256:../../etc/passwd", size: data.byteLength },
      body: (offset) => data.subarray(offset),
    });
    await refusedFromUpstream("malformed", Code.DataLoss, data);
  });

  it("refuses bytes that change when the fill resumes with DATA_LOSS", async () => {
    // Half the artifact and an OK; the ranged read that resumes gets another artifact's half.
    const large = randomBytes(600_000);
    const changed = randomBytes(600_000);
    hostile.answers.set("shifting", {
      manifest: { digest: sha256(large), size: large.byteLength },
      body: (offset) => (offset === 0 ? large.subarray(0, 300_000) : changed.subarray(offset)),
    });
    await refusedFromUpstream("shifting", Code.DataLoss, large);
    assert.ok((hostile.pulls.get("shifting") ?? 0) >= 2, "the fill resumed with a ranged read");
  });

  it("a key whose manifest gives a digest being fetched another size ends no pull well on part of it", async () => {
    const data = randomBytes(3 * 1024 * 1024);
    let open = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    hostile.answers.set("sized-right", {
      manifest: { digest: sha256(data), size: data.byteLength },
      body: (offset) => data.subarray(offset),
      // Past the transport's 1 MiB receive buffer, so that the fill holds more than the short size.
      gate: { after: 2 * 1024 * 1024, open: gate },
    });
    hostile.answers.set("sized-short", {
      manifest: { digest: sha256(data), size: 300_000 },
      body: (offset) => data.subarray(offset, 300_000),
    });
    const before = await metric("cache_upstream_bytes_total");
    const whole = rawPull("sized-right");
    try {
      while ((await metric("cache_upstream_bytes_total")) < before + 300_000) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const short = await rawPull("sized-short");
      assert.equal(
        short.code,
        Code.DataLoss,
        `the tier ended a pull of ${short.bytes} bytes with ${short.code}`,
      );
    } finally {
      open();
    }
    const right = await whole;
    assert.equal(right.code, Code.Ok, right.details);
    assert.equal(right.bytes, data.byteLength);
    await stillServing();
  });

  it("a key lookup the upstream takes and never answers ends with UNAVAILABLE", async () => {
    hostile.answers.set("silent", {
      manifest: { digest: sha256(honest), size: honest.byteLength },
      body: (offset) => honest.subarray(offset),
      silent: true,
    });
    const store = createUpstreamServerStore({
      connection: { address: hostile.address },
      maxArtifactBytes: 1 << 30,
      lookupTimeoutMs: 300,
    });
    try {
      const refused = await failure(store.get(key("silent")));
      assert.equal(refused.code, Code.Unavailable, refused.message);
      assert.match(refused.message, /did not answer/);
      assert.equal((await store.get(key("honest")))?.digest, sha256(honest));
    } finally {
      await store.close();
    }
  });

  it("a build forwarded to an upstream that never answers ends with UNAVAILABLE, and the next call forwards again", async () => {
    const store = createUpstreamServerStore({
      connection: { address: hostile.address },
      maxArtifactBytes: 1 << 30,
    });
    const compiler = createUpstreamCompiler({
      connection: { address: hostile.address },
      store,
      compileTimeoutMs: 300,
    });
    try {
      const before = hostile.compiles;
      for (let call = 1; call <= 2; call += 1) {
        const refused = await failure(compiler.compile(key("never-built")));
        assert.equal(refused.code, Code.Unavailable, refused.message);
        assert.match(refused.message, /did not answer/);
        assert.equal(hostile.compiles, before + call);
      }
    } finally {
      await compiler.close();
      await store.close();
    }
  });

  it("a listing naming an artifact with a key that is not valid is DATA_LOSS, not the caller's INVALID_ARGUMENT", async () => {
    const manifest = {
      digest: sha256(honest),
      size: honest.byteLength,
      mediaType: "application/octet-stream",
      createdAt: "2026-01-01T00:00:00Z",
      annotations: {},
      heldHere: true,
    };
    hostile.listing.push(
      { ...manifest, ...key("honest") },
      {
        ...manifest,
        runtime: { version: "1.0.0", buildVersion: "node20" },
        plugin: { name: "../../x", version: "1.0.0" },
      },
    );
    try {
      const refused = await failure(client.list());
      assert.equal(refused.code, Code.DataLoss, refused.message);
      assert.match(refused.message, /listed an artifact whose key is not valid/);
    } finally {
      hostile.listing.length = 0;
    }
    await stillServing();
  });
});
