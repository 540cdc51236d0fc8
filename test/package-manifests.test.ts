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

  for (const [workspace, name] of [
    ["packages/core", "atomix-plugins-core"],
    ["packages/client", "atomix-plugins-client"],
  ] as const) {
    it(`${name} has the server's version, engines, license and dependency ranges`, async () => {
      const server = await readJson<Manifest>("package.json");
      const pkg = await readJson<Manifest>(`${workspace}/package.json`);
      assert.equal(pkg.name, name);
      // One release: `npm version <v> --workspaces --include-workspace-root` sets all three.
      assert.equal(pkg.version, server.version);
      assert.deepEqual(pkg.engines, server.engines);
      assert.equal(pkg.license, server.license);
      // The packages are built against the workspace's installed
      // dependencies: the ranges they promise are the server's.
      for (const [dependency, range] of Object.entries(pkg.dependencies ?? {})) {
        assert.equal(range, server.dependencies?.[dependency], `${dependency} in ${workspace}/package.json`);
      }
      assert.equal(
        server.dependencies?.[name],
        server.version,
        `the server depends on ${name} ${server.version}`,
      );
    });
  }
});
