import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { createFsStore } from "../src/store/fs-store.js";
import { parseOciLocation } from "../src/store/oci/oci-location.js";
import { createOciStore } from "../src/store/oci/oci-store.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

/**
 * Keys in the filesystem store: well past what a 1,024 descriptor limit
 * allowed to list at once, and seven ListPlugins pages. The benchmark's
 * index rows go to 100,000 (ATOMIX_SCALE_FS_KEYS raises this one).
 */
const FS_KEYS = Number(process.env.ATOMIX_SCALE_FS_KEYS ?? 6_500);
/**
 * Keys in the registry: two ListPlugins pages (1,000, 300) and two tag list
 * requests of 1,000 (Distribution 2.8 answers every tag to each; the store
 * keeps 1,000 of them a time).
 */
const OCI_KEYS = Number(process.env.ATOMIX_SCALE_OCI_KEYS ?? 1_300);
/** Keys removed before gc, each with a blob of its own: what gc must free. */
const REMOVED = 100;
/** systemd's default soft limit. */
const OPEN_FILES = 1024;

/** A few hundred plugins × releases × builds, as a fleet's store holds them. */
function keyAt(i: number): BuildKey {
  return {
    runtime: { version: `1.${i % 7}.0`, buildVersion: i % 2 ? "node20" : "go1.19.8" },
    plugin: { name: `plugin-${i % 300}`, version: `1.0.${i}` },
  };
}

/** Stores `count` keys through the store API, 16 at once; the last REMOVED have blobs of their own. */
async function seed(store: ArtifactStore, count: number): Promise<void> {
  const shared = Buffer.from("shared artifact bytes");
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) {
      await store.put(keyAt(i), [i >= count - REMOVED ? Buffer.from(`own artifact ${i}`) : shared]);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

const keyText = (m: {
  plugin: { name: string; version: string };
  runtime: { version: string; buildVersion: string };
}) => `${m.plugin.name}@${m.plugin.version}/${m.runtime.version}/${m.runtime.buildVersion}`;

async function softOpenFileLimit(server: ServerProcess): Promise<number> {
  const limits = await readFile(`/proc/${server.child.pid}/limits`, "utf8");
  const line = limits.split("\n").find((l) => l.startsWith("Max open files"));
  return Number(line?.split(/\s+/)[3]);
}

/** Lists with the CLI, the catalog page and gc against `server`, whose store holds `count` keys. */
async function listEverywhere(server: ServerProcess, count: number): Promise<void> {
  assert.equal(await softOpenFileLimit(server), OPEN_FILES);

  const all = await runCli(["ls", "--all", "--json", "--server", server.address]);
  assert.equal(all.code, 0, all.stderr);
  const listed = (JSON.parse(all.stdout) as Parameters<typeof keyText>[0][]).map(keyText);
  assert.equal(listed.length, count);
  assert.equal(new Set(listed).size, count, "every key listed once");

  const first = await runCli(["ls", "--limit", "500", "--server", server.address]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.trimEnd().split("\n").length, 501, "a header and 500 rows");
  const token = /--page-token (\S+)/.exec(first.stderr)?.[1];
  assert.ok(token, `ls names the next page: ${first.stderr}`);
  const second = await runCli([
    "ls",
    "--limit",
    "500",
    "--page-token",
    token,
    "--json",
    "--server",
    server.address,
  ]);
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(
    (JSON.parse(second.stdout) as Parameters<typeof keyText>[0][]).map(keyText),
    listed.slice(500, 1000),
  );

  const filtered = await runCli([
    "ls",
    "--all",
    "--json",
    "--plugin",
    "plugin-7",
    "--server",
    server.address,
  ]);
  assert.equal(filtered.code, 0, filtered.stderr);
  assert.equal(
    (JSON.parse(filtered.stdout) as unknown[]).length,
    listed.filter((k) => k.startsWith("plugin-7@")).length,
  );

  const home = await fetch(`http://${server.http}/`);
  assert.equal(home.status, 200);
  assert.equal(
    (await home.text()).match(/<td class="plugin">/g)?.length,
    100,
    "the page shows 100 by default",
  );
  let shown = 0;
  let pages = 0;
  for (let target: string | undefined = "/?limit=1000"; target; pages++) {
    const response = await fetch(`http://${server.http}${target}`);
    assert.equal(response.status, 200);
    const html = await response.text();
    const rows = html.match(/<td class="plugin">/g)?.length ?? 0;
    assert.ok(rows <= 1000, "a page never renders more than its limit");
    shown += rows;
    target = /<a class="next" rel="next" href="([^"]+)"/.exec(html)?.[1]?.replaceAll("&amp;", "&");
  }
  assert.equal(shown, count);
  assert.equal(pages, Math.ceil(count / 1000));
}

describe("the index at scale, under a 1,024 open-file limit", () => {
  it(`lists ${FS_KEYS} keys of the filesystem store with ls, the catalog page and gc`, async () => {
    const data = await tempDir("atomix-scale-");
    let server: ServerProcess | undefined;
    try {
      const store = await createFsStore({ dir: data.path });
      await seed(store, FS_KEYS);
      for (let i = FS_KEYS - REMOVED; i < FS_KEYS; i++) assert.equal(await store.remove(keyAt(i)), true);
      await store.close();
      server = await startServerProcess({ dataDir: data.path, openFileLimit: OPEN_FILES });

      await listEverywhere(server, FS_KEYS - REMOVED);

      const gc = await runCli(["gc", "--json", "--server", server.address]);
      assert.equal(gc.code, 0, gc.stderr);
      assert.equal((JSON.parse(gc.stdout) as { removedBlobs: number }).removedBlobs, REMOVED);
      const again = await runCli(["ls", "--all", "--json", "--server", server.address]);
      assert.equal((JSON.parse(again.stdout) as unknown[]).length, FS_KEYS - REMOVED, "gc kept every key");
      assert.equal(server.child.exitCode, null, "the server still runs");
    } finally {
      await server?.stop();
      await data.remove();
    }
  });

  describe("OCI registry store", () => {
    let registry: RegistryProcess;
    before(async () => {
      registry = await startRegistry();
    });
    after(async () => {
      await registry.dispose();
    });

    it(`lists ${OCI_KEYS} tags of a registry with ls, the catalog page and gc`, async () => {
      const url = registry.storeUrl("scale/plugins");
      const store = await createOciStore(parseOciLocation(url));
      await seed(store, OCI_KEYS);
      await store.close();
      const server = await startServerProcess({ args: ["--store", url], openFileLimit: OPEN_FILES });
      try {
        await listEverywhere(server, OCI_KEYS);
        // A registry store collects the blobs of the manifests this replica removed.
        const client = createPluginClient({ address: server.address });
        try {
          for (let i = OCI_KEYS - REMOVED; i < OCI_KEYS; i++)
            assert.equal(await client.remove(keyAt(i)), true);
        } finally {
          client.close();
        }
        const gc = await runCli(["gc", "--json", "--server", server.address]);
        assert.equal(gc.code, 0, gc.stderr);
        assert.equal((JSON.parse(gc.stdout) as { removedBlobs: number }).removedBlobs, REMOVED);
        const again = await runCli(["ls", "--all", "--json", "--server", server.address]);
        assert.equal((JSON.parse(again.stdout) as unknown[]).length, OCI_KEYS - REMOVED);
      } finally {
        await server.stop();
      }
    });
  });
});
