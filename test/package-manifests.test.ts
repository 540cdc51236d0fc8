import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import semver from "semver";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

interface Manifest {
  name?: string;
  version?: string;
  license?: string;
  engines?: { node?: string };
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const readJson = async <T>(path: string): Promise<T> => JSON.parse(await readFile(ROOT + path, "utf8")) as T;

describe("package manifests", () => {
  it("every locked package runs on each Node.js release package.json accepts (npm ci prints no EBADENGINE)", async () => {
    const server = await readJson<Manifest>("package.json");
    const lock = await readJson<{ packages: Record<string, Manifest> }>("package-lock.json");
    const accepted = server.engines?.node;
    assert.ok(accepted, "package.json names the Node.js releases it runs on");
    const refusing = Object.entries(lock.packages).flatMap(([path, entry]) => {
      const wanted = entry.engines?.node;
      return wanted !== undefined && !semver.subset(accepted, wanted) ? [`${path} wants ${wanted}`] : [];
    });
    assert.deepEqual(refusing, [], `package.json accepts Node.js ${accepted}`);
  });

  it("the client package has the server's version, engines, license and dependency ranges", async () => {
    const server = await readJson<Manifest>("package.json");
    const client = await readJson<Manifest>("packages/client/package.json");
    assert.equal(client.name, "atomix-plugins-client");
    // One release: `npm version <v> --workspaces --include-workspace-root` sets both.
    assert.equal(client.version, server.version);
    assert.deepEqual(client.engines, server.engines);
    assert.equal(client.license, server.license);
    // The client is compiled from this repository's source against the
    // server's installed dependencies: the ranges it promises are those.
    for (const [name, range] of Object.entries(client.dependencies ?? {})) {
      assert.equal(range, server.dependencies?.[name], `${name} in packages/client/package.json`);
    }
  });
});
