import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { credentials } from "@grpc/grpc-js";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { failure } from "./helpers/failure.js";
import { PluginRegistryClient } from "./helpers/grpc-js-clients.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { startRegistry } from "./helpers/registry-process.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const sha256 = (data: Uint8Array) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const key = (name: string, version = "1.0.0"): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version },
});

/** Pulls `pulled` `count` times at once over a few grpc-js channels; the digest of each stream. */
async function pullMany(address: string, pulled: BuildKey, count: number): Promise<string[]> {
  const clients = Array.from(
    { length: 4 },
    () => new PluginRegistryClient(address, credentials.createInsecure()),
  );
  try {
    return await Promise.all(
      Array.from({ length: count }, (_, index) => {
        const hash = createHash("sha256");
        return new Promise<string>((resolve, reject) => {
          const call = (clients[index % clients.length] as PluginRegistryClient).pullPlugin({
            runtime: pulled.runtime,
            plugin: pulled.plugin,
          });
          call.on("data", (message: { data: Buffer }) => hash.update(message.data));
          call.on("error", reject);
          call.on("end", () => resolve(`sha256:${hash.digest("hex")}`));
        });
      }),
    );
  } finally {
    for (const client of clients) client.close();
  }
}

/** A counter's value in a server's /metrics (0 when absent). */
async function metric(server: ServerProcess, line: RegExp): Promise<number> {
  const text = await (await fetch(`http://${server.http}/metrics`)).text();
  const match = new RegExp(`^${line.source} (\\d+(?:\\.\\d+)?)$`, "m").exec(text);
  return match ? Number(match[1]) : 0;
}

const OK_PULLS = /atomix_plugins_pulls_total\{code="OK"\}/;
const FETCHES = /atomix_plugins_cache_upstream_fetches_total/;

/**
 * Tiers of real server processes: central (the builds and the store),
 * a site mirror whose store is central, and a node-local cache whose store
 * is the site; and a replica over a registry mirror (Distribution in proxy
 * mode) that forwards its builds to central.
 */
describe("mirrors in tiers", () => {
  const servers: ServerProcess[] = [];
  const removals: (() => Promise<void>)[] = [];
  let central: ServerProcess;
  let site: ServerProcess;
  let edge: ServerProcess;
  let keys: string;

  before(async () => {
    const dir = await tempDir("atomix-tiers-");
    removals.push(dir.remove);
    keys = dir.path;
    const made = await runCli(["keygen", "-o", join(keys, "central")]);
    assert.equal(made.code, 0, made.stderr);
    await runCli(["keygen", "-o", join(keys, "stranger")]);
    await writeFile(join(keys, "token"), "central-admin-token");
    central = await startServerProcess({
      args: [
        "--signing-key",
        join(keys, "central.key"),
        "--admin-token-file",
        join(keys, "token"),
        "--prewarm",
        "off",
      ],
    });
    servers.push(central);
    site = await startServerProcess({
      args: ["--upstream", central.address, "--upstream-trust-key", join(keys, "central.pub")],
    });
    servers.push(site);
    edge = await startServerProcess({ args: ["--upstream", site.address] });
    servers.push(edge);
  });
  after(async () => {
    for (const server of servers) await server.kill().catch(() => {});
    for (const remove of removals) await remove();
  });

  it("500 pulls at the edge of a chain of three make one fetch per tier", async () => {
    const data = randomBytes(1024 * 1024 + 5);
    const pusher = createPluginClient({ address: central.address, token: "central-admin-token" });
    try {
      await pusher.push(key("tiered"), [data]);
    } finally {
      pusher.close();
    }
    const digests = await pullMany(edge.address, key("tiered"), 500);
    assert.ok(digests.every((d) => d === sha256(data)));
    assert.equal(await metric(central, OK_PULLS), 1, "central served one pull");
    assert.equal(await metric(site, OK_PULLS), 1, "the site served one pull");
    assert.equal(await metric(site, FETCHES), 1);
    assert.equal(await metric(edge, FETCHES), 1);
    assert.equal(await metric(edge, OK_PULLS), 500);

    // What the edge holds itself, as ls, inspect and the catalog page say it.
    const pusher2 = createPluginClient({ address: central.address, token: "central-admin-token" });
    try {
      await pusher2.push(key("not-pulled"), [randomBytes(1000)]);
    } finally {
      pusher2.close();
    }
    const atEdge = createPluginClient({ address: edge.address });
    try {
      assert.equal((await atEdge.inspect(key("tiered"))).heldHere, true);
      assert.equal((await atEdge.inspect(key("not-pulled"))).heldHere, false);
      const listed = await atEdge.list();
      assert.deepEqual(listed.map((m) => [m.plugin?.name, m.heldHere]).sort(), [
        ["not-pulled", false],
        ["tiered", true],
      ]);
    } finally {
      atEdge.close();
    }
    const ls = await runCli(["ls", "--server", edge.address]);
    assert.match(ls.stdout, /^tiered@1\.0\.0\s.*\syes$/m);
    assert.match(ls.stdout, /^not-pulled@1\.0\.0\s.*\sno$/m);
    const page = await (await fetch(`http://${edge.http}/`)).text();
    assert.match(page, /content cache: 1 artifact held here/);
    assert.match(page, /<td class="here">held here<\/td>/);
    assert.match(page, /<td class="here">upstream<\/td>/);
  });

  it("a compile at the edge is built once, by central, and pulled through the chain", async () => {
    const client = createPluginClient({ address: edge.address });
    try {
      const reference = await client.compile(key("counter", "1.0.0"));
      const direct = createPluginClient({ address: central.address });
      try {
        assert.equal((await direct.inspect(key("counter", "1.0.0"))).digest, reference.digest);
      } finally {
        direct.close();
      }
      const to = join(keys, "counter.mjs");
      await client.pull(key("counter", "1.0.0"), { to });
      assert.equal(sha256(await readFile(to)), reference.digest);
      // What central refuses is refused at the edge with central's code and reason.
      const refused = await failure(client.compile(key("counter", "2.0.0")));
      assert.equal(refused.code, Code.FailedPrecondition, refused.message);
      // A mirror takes no pushes: they go where the store is.
      const pushed = await failure(client.push(key("counter", "9.0.0"), [Buffer.from("x")]));
      assert.equal(pushed.code, Code.FailedPrecondition, pushed.message);
      assert.match(pushed.message, /mirrors/);
    } finally {
      client.close();
    }
  });

  it("a tier that trusts another key refuses central's artifacts and caches none of them", async () => {
    const wary = await startServerProcess({
      args: ["--upstream", central.address, "--upstream-trust-key", join(keys, "stranger.pub")],
    });
    servers.push(wary);
    const client = createPluginClient({ address: wary.address });
    try {
      const refused = await failure(client.pull(key("tiered"), { to: join(keys, "refused.bin") }));
      assert.notEqual(refused.code, Code.Ok);
      assert.match(refused.message, /provenance|trusted|signed/i);
      assert.equal(await metric(wary, /atomix_plugins_cache_blobs/), 0);
    } finally {
      client.close();
    }
  });

  it("a tier that trusts central's key serves no key without provenance for it, even when it holds the bytes", async () => {
    const dir = await tempDir("atomix-tiers-twin-");
    removals.push(dir.remove);
    const data = randomBytes(200_000);
    const token = ["--admin-token-file", join(keys, "token"), "--prewarm", "off"];
    const push = async (server: ServerProcess, name: string) => {
      const pusher = createPluginClient({ address: server.address, token: "central-admin-token" });
      try {
        await pusher.push(key(name), [data]);
      } finally {
        pusher.close();
      }
    };
    // Stored while the server signed nothing: these bytes have no provenance for this key.
    const unsigned = await startServerProcess({ dataDir: dir.path, args: token });
    await push(unsigned, "unsigned-twin");
    await unsigned.stop();
    const signer = await startServerProcess({
      dataDir: dir.path,
      args: [...token, "--signing-key", join(keys, "central.key")],
    });
    servers.push(signer);
    await push(signer, "signed-twin");
    const tier = await startServerProcess({
      args: ["--upstream", signer.address, "--upstream-trust-key", join(keys, "central.pub")],
    });
    servers.push(tier);
    const client = createPluginClient({ address: tier.address });
    try {
      await client.pull(key("signed-twin"), { to: join(keys, "signed-twin.bin") });
      assert.equal(sha256(await readFile(join(keys, "signed-twin.bin"))), sha256(data));
      // The same digest, now held by the tier, under a key central never signed.
      const refused = await failure(client.pull(key("unsigned-twin"), { to: join(keys, "twin.bin") }));
      assert.equal(refused.code, Code.FailedPrecondition, refused.message);
      assert.match(refused.message, /provenance/);
    } finally {
      client.close();
    }
  });

  it("a replica over a registry mirror serves what the mirror finds and forwards its builds", async () => {
    const registry = await startRegistry();
    removals.push(() => registry.dispose());
    const mirror = await startRegistry({ mirrorOf: `http://${registry.address}` });
    removals.push(() => mirror.dispose());
    const writer = await startServerProcess({
      args: ["--store", registry.storeUrl("central/plugins"), "--prewarm", "off"],
    });
    servers.push(writer);
    const replica = await startServerProcess({
      args: ["--store", mirror.storeUrl("central/plugins"), "--upstream", writer.address, "--prewarm", "off"],
    });
    servers.push(replica);
    assert.ok(
      replica.logs.some((line) => String(line.msg).includes("takes no writes")),
      "the replica says at start that its store is a mirror",
    );
    assert.equal(await checkHealth(replica.address), "SERVING");
    const client = createPluginClient({ address: replica.address });
    try {
      const reference = await client.compile(key("counter", "1.0.0"));
      const to = join(keys, "mirrored.mjs");
      await client.pull(key("counter", "1.0.0"), { to });
      assert.equal(sha256(await readFile(to)), reference.digest);
    } finally {
      client.close();
    }
  });
});
