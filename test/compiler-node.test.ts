import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import ssri from "ssri";
import { c as createTar } from "tar";
import { type BuildCompiler, createBuildCompiler } from "../src/compiler/build-compiler.js";
import { createCatalogSource } from "../src/compiler/sources/catalog-source.js";
import { createNpmRegistrySource } from "../src/compiler/sources/npm-registry-source.js";
import { createNodeToolchain } from "../src/compiler/toolchains/node/node-toolchain.js";
import { EXAMPLE_PLUGINS_DIR, EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { loadRuntimeCatalog } from "../src/runtime-releases/runtime-catalog.js";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { createFsStore } from "../src/store/fs-store.js";
import { testSandbox } from "./helpers/sandbox.js";

const PEER_ANY = { "@atomix/runtime-sdk": ">=1.0.0" };

async function writePackage(dir: string, files: Record<string, string | object>): Promise<void> {
  for (const [name, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(
      join(dir, name),
      typeof content === "string" ? content : JSON.stringify(content, null, 2),
    );
  }
}

function pkg(name: string, extra: object = {}): object {
  return { name, version: "1.0.0", type: "module", peerDependencies: PEER_ANY, ...extra };
}

function key(name: string, version = "1.0.0", runtime = "1.0.0", buildVersion = "node20"): BuildKey {
  return { runtime: { version: runtime, buildVersion }, plugin: { name, version } };
}

async function artifactText(store: ArtifactStore, manifest: ArtifactManifest): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of store.read(manifest, { chunkSize: 64 * 1024 })) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

describe("node toolchain", () => {
  let root: string;
  let catalog: string;
  let store: ArtifactStore;
  let compiler: BuildCompiler;
  let registry: Server;
  let registryUrl: string;
  const registryFiles = new Map<string, { type: string; body: Buffer }>();

  async function failure(call: BuildKey | Promise<unknown>): Promise<PluginError> {
    const k = "plugin" in call ? call : undefined;
    try {
      await (k ? compiler.compile(k) : call);
    } catch (error) {
      assert.ok(error instanceof PluginError);
      return error;
    }
    assert.fail(`expected ${k?.plugin.name ?? "the call"} to fail`);
  }

  /** Publishes a package to the test registry, with a deliberately wrong integrity when asked. */
  async function publish(
    name: string,
    files: Record<string, string | object>,
    options: { corrupt?: boolean } = {},
  ) {
    const dir = join(root, "publish", name);
    await writePackage(join(dir, "package"), files);
    const tgz = join(dir, "package.tgz");
    await createTar({ gzip: true, cwd: dir, file: tgz, portable: true }, ["package"]);
    const body = await readFile(tgz);
    const tarballPath = `/${name}/-/${name.split("/").pop()}-1.0.0.tgz`;
    const integrity = ssri.fromData(options.corrupt ? Buffer.from("other bytes") : body, {
      algorithms: ["sha512"],
    });
    registryFiles.set(tarballPath, { type: "application/octet-stream", body });
    const packument = {
      name,
      versions: {
        "1.0.0": {
          name,
          version: "1.0.0",
          dist: { tarball: `${registryUrl}${tarballPath}`, integrity: integrity.toString() },
        },
      },
    };
    registryFiles.set(`/${name.replace("/", "%2f")}`, {
      type: "application/json",
      body: Buffer.from(JSON.stringify(packument)),
    });
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "atomix-compiler-node-"));
    catalog = join(root, "catalog");
    registry = createServer((request, response) => {
      const file = registryFiles.get(request.url ?? "");
      if (!file) {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { "content-type": file.type }).end(file.body);
    });
    await new Promise<void>((resolve) => registry.listen(0, "127.0.0.1", resolve));
    registryUrl = `http://127.0.0.1:${(registry.address() as AddressInfo).port}`;
    store = await createFsStore({ dir: join(root, "store") });
    compiler = createBuildCompiler({
      store,
      runtimes: await loadRuntimeCatalog([EXAMPLE_RUNTIMES_DIR]),
      toolchains: [
        createNodeToolchain({
          sources: [
            createCatalogSource(EXAMPLE_PLUGINS_DIR),
            createCatalogSource(catalog),
            createNpmRegistrySource({ url: registryUrl }),
          ],
          sandbox: await testSandbox(),
        }),
      ],
      workRoot: root,
    });
  });

  after(async () => {
    await compiler.close();
    await store.close();
    await new Promise((resolve) => registry.close(resolve));
    await rm(root, { recursive: true, force: true });
  });

  it("builds a plugin for two runtimes, leaving the runtime's SDK out of the bundle", async () => {
    for (const runtime of ["1.0.0", "2.0.0"]) {
      const manifest = await compiler.compile(key("@atomix/echo", "1.0.0", runtime));
      assert.equal(manifest.mediaType, "text/javascript");
      assert.equal(manifest.annotations["dev.atomix.toolchain"], "node");
      assert.match(
        manifest.annotations["dev.atomix.toolchain.version"] ?? "",
        /^typescript 7\.\d+\.\d+, esbuild \d+\.\d+\.\d+, target node20/,
      );
      assert.match(manifest.annotations["dev.atomix.source"] ?? "", /^catalog:@atomix\/echo\/1\.0\.0$/);
      assert.match(manifest.annotations["dev.atomix.source.integrity"] ?? "", /^sha512-/);
      const code = await artifactText(store, manifest);
      assert.match(code, /from "@atomix\/runtime-sdk"/);
      assert.doesNotMatch(code, /SDK_VERSION = /);
    }
  });

  it("produces the same bytes for the same inputs", async () => {
    const other = await createFsStore({ dir: join(root, "store-determinism") });
    const second = createBuildCompiler({
      store: other,
      runtimes: await loadRuntimeCatalog([EXAMPLE_RUNTIMES_DIR]),
      toolchains: [
        createNodeToolchain({
          sources: [createCatalogSource(EXAMPLE_PLUGINS_DIR)],
          sandbox: await testSandbox(),
        }),
      ],
      workRoot: root,
    });
    try {
      const a = await compiler.compile(key("counter"));
      const b = await second.compile(key("counter"));
      assert.equal(a.digest, b.digest);
      assert.equal(await artifactText(store, a), await artifactText(other, b));
    } finally {
      await second.close();
      await other.close();
    }
  });

  it("rejects a plugin whose SDK range the runtime does not satisfy, naming module, range and runtime", async () => {
    const error = await failure(key("counter", "1.0.0", "2.0.0"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(
      error.message,
      /^counter@1\.0\.0 needs @atomix\/runtime-sdk \^1\.0\.0 \(peer dependency\), but runtime 2\.0\.0 supplies @atomix\/runtime-sdk 2\.0\.0/,
    );
  });

  it("rejects a plugin that does not type-check, with file:line diagnostics", async () => {
    const error = await failure(key("broken-types"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(
      error.message,
      /^broken-types@1\.0\.0 does not type-check against runtime 1\.0\.0: src\/index\.ts:5: Type /,
    );
  });

  it("rejects a TypeScript export that is not the runtime's Driver type", async () => {
    await writePackage(join(catalog, "wrong-type", "1.0.0"), {
      "package.json": pkg("wrong-type"),
      "src/index.ts": 'export const driver = { name: "wrong-type", handle: 42 };\n',
    });
    const error = await failure(key("wrong-type"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /export "driver" is not a Driver of @atomix\/runtime-sdk@1\.0\.0: /);
  });

  it("rejects a bundle that lacks the required export", async () => {
    const error = await failure(key("no-export"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.equal(
      error.message,
      'no-export@1.0.0 fails verification for runtime 1.0.0: it has no export "driver" (its exports: plugin)',
    );
  });

  it("rejects an export of the wrong shape found only by loading it", async () => {
    await writePackage(join(catalog, "bad-shape", "1.0.0"), {
      "package.json": pkg("bad-shape", { main: "index.js" }),
      // Built at run time, so only loading it shows what it is.
      "index.js": 'export const driver = JSON.parse(\'{"name":"bad-shape"}\');\n',
    });
    const error = await failure(key("bad-shape"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /its export "driver" lacks handle \(function, found undefined\)/);
  });

  it("loads plugins without file-write or child-process permission", async () => {
    const marker = join(root, "written-by-plugin");
    await writePackage(join(catalog, "sneaky", "1.0.0"), {
      "package.json": pkg("sneaky", { main: "index.js" }),
      "index.js": [
        'import { writeFileSync } from "node:fs";',
        `writeFileSync(${JSON.stringify(marker)}, "x");`,
        'export const driver = { name: "sneaky", handle: () => "" };',
        "",
      ].join("\n"),
    });
    const error = await failure(key("sneaky"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /loading it threw Error: Access to this API has been restricted/);
    await assert.rejects(stat(marker), { code: "ENOENT" });

    await writePackage(join(catalog, "spawner", "1.0.0"), {
      "package.json": pkg("spawner", { main: "index.js" }),
      "index.js":
        'import { execSync } from "node:child_process";\nexecSync("true");\nexport const driver = { name: "spawner", handle: () => "" };\n',
    });
    assert.match((await failure(key("spawner"))).message, /Access to this API has been restricted/);
  });

  it("stops a plugin that never finishes loading", async () => {
    await writePackage(join(catalog, "endless", "1.0.0"), {
      "package.json": pkg("endless", { main: "index.js" }),
      "index.js": 'for (;;) {}\nexport const driver = { name: "endless", handle: () => "" };\n',
    });
    const impatient = createBuildCompiler({
      store,
      runtimes: await loadRuntimeCatalog([EXAMPLE_RUNTIMES_DIR]),
      toolchains: [
        createNodeToolchain({
          sources: [createCatalogSource(catalog)],
          verifyTimeoutMs: 1000,
          sandbox: await testSandbox(),
        }),
      ],
      workRoot: root,
    });
    try {
      const error = await failure(impatient.compile(key("endless")));
      assert.equal(error.code, Code.FailedPrecondition);
      assert.match(error.message, /did not finish loading within 1000 ms/);
    } finally {
      await impatient.close();
    }
  });

  it("answers DEADLINE_EXCEEDED naming the plugin when its type check or bundle runs out of time", async () => {
    const hasty = createBuildCompiler({
      // A store of its own: the key is built elsewhere in this file.
      store: await createFsStore({ dir: join(root, "store-hasty") }),
      runtimes: await loadRuntimeCatalog([EXAMPLE_RUNTIMES_DIR]),
      toolchains: [
        createNodeToolchain({
          sources: [createCatalogSource(EXAMPLE_PLUGINS_DIR)],
          stepTimeoutMs: 1,
          sandbox: await testSandbox(),
        }),
      ],
      workRoot: root,
    });
    try {
      const error = await failure(hasty.compile(key("@atomix/echo", "1.0.0", "1.0.0")));
      assert.equal(error.code, Code.DeadlineExceeded, error.message);
      assert.match(error.message, /^(type-checking|bundling) @atomix\/echo@1\.0\.0 took longer than 1 ms/);
    } finally {
      await hasty.close();
    }
  });

  it("stops a build that passes its time limit and leaves nothing behind", async () => {
    const workRoot = await mkdtemp(join(root, "deadline-"));
    const hurried = createBuildCompiler({
      store: await createFsStore({ dir: join(root, "store-hurried") }),
      runtimes: await loadRuntimeCatalog([EXAMPLE_RUNTIMES_DIR]),
      toolchains: [
        createNodeToolchain({
          sources: [createCatalogSource(EXAMPLE_PLUGINS_DIR)],
          sandbox: await testSandbox(),
        }),
      ],
      workRoot,
      timeoutMs: 100,
    });
    try {
      const error = await failure(hurried.compile(key("@atomix/echo", "1.0.0", "1.0.0")));
      assert.equal(error.code, Code.DeadlineExceeded);
      while (hurried.stats().running > 0) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(await readdir(workRoot), []);
    } finally {
      await hurried.close();
    }
  });

  it("answers FAILED_PRECONDITION for a build_version the runtime does not list", async () => {
    const error = await failure(key("counter", "1.0.0", "1.0.0", "node18"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /^runtime 1\.0\.0 does not run on node18; it runs on node20 /);
  });

  it("answers NOT_FOUND for a plugin no source has, naming the kinds of source looked in and leaving their paths to the log", async () => {
    const error = await failure(key("nowhere"));
    assert.equal(error.code, Code.NotFound);
    assert.match(
      error.message,
      /^plugin nowhere@1\.0\.0 was found in no source \(looked in the source catalog "…\/examples\/plugins"; the source catalog "…\/[^/"]+\/catalog"; the npm registry\)/,
    );
    assert.doesNotMatch(error.message, /(^|[\s(])\/\w|127\.0\.0\.1/, "no server path or URL");
    assert.match(error.detail ?? "", /^looked in catalog \/.*; npm registry http:\/\/127\.0\.0\.1:\d+$/);
  });

  it("builds from a .tgz in a catalog and records its integrity", async () => {
    const dir = join(root, "tgz-src");
    await writePackage(join(dir, "package"), {
      "package.json": pkg("packed"),
      "src/index.ts": 'export const driver = { name: "packed", handle: (r: { key: string }) => r.key };\n',
    });
    const tgz = join(catalog, "packed", "1.0.0", "packed-1.0.0.tgz");
    await mkdir(dirname(tgz), { recursive: true });
    await createTar({ gzip: true, cwd: dir, file: tgz, portable: true }, ["package"]);
    const manifest = await compiler.compile(key("packed"));
    assert.equal(manifest.annotations["dev.atomix.source"], "catalog:packed/1.0.0/packed-1.0.0.tgz");
    assert.equal(
      manifest.annotations["dev.atomix.source.integrity"],
      ssri.fromData(await readFile(tgz), { algorithms: ["sha512"] }).toString(),
    );
  });

  it("bundles dependencies the package ships and refuses ones it does not", async () => {
    await writePackage(join(catalog, "with-dep", "1.0.0"), {
      "package.json": pkg("with-dep", { dependencies: { shout: "^1.0.0" }, bundleDependencies: ["shout"] }),
      "src/index.ts":
        'import { shout } from "shout";\nexport const driver = { name: "with-dep", handle: (r: { key: string }) => shout(r.key) };\n',
      "node_modules/shout/package.json": {
        name: "shout",
        version: "1.0.0",
        type: "module",
        main: "index.js",
      },
      "node_modules/shout/index.js": "export const shout = (text) => text.toUpperCase();\n",
      "node_modules/shout/index.d.ts": "export declare const shout: (text: string) => string;\n",
    });
    const manifest = await compiler.compile(key("with-dep"));
    assert.match(await artifactText(store, manifest), /toUpperCase/);

    await writePackage(join(catalog, "missing-dep", "1.0.0"), {
      "package.json": pkg("missing-dep", { dependencies: { "left-pad": "^1.3.0" } }),
      "src/index.ts": "export const driver = {};\n",
    });
    const error = await failure(key("missing-dep"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(
      error.message,
      /depends on left-pad \^1\.3\.0, which runtime 1\.0\.0 does not supply and the package does not ship/,
    );
  });

  it("refuses a source whose package.json names another package", async () => {
    await writePackage(join(catalog, "misfiled", "1.0.0"), { "package.json": pkg("someone-else") });
    const error = await failure(key("misfiled"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /holds a package\.json for someone-else@1\.0\.0/);
  });

  it("builds from the npm registry after checking the tarball's integrity, without running its scripts", async () => {
    const marker = join(root, "install-script-ran");
    await publish("@acme/from-registry", {
      "package.json": pkg("@acme/from-registry", {
        scripts: { postinstall: `touch ${marker}`, install: `touch ${marker}` },
      }),
      "src/index.ts":
        'export const driver = { name: "from-registry", handle: (r: { key: string }) => r.key };\n',
    });
    const manifest = await compiler.compile(key("@acme/from-registry"));
    assert.equal(
      manifest.annotations["dev.atomix.source"],
      `npm:${registryUrl}/@acme/from-registry/-/from-registry-1.0.0.tgz`,
    );
    assert.match(manifest.annotations["dev.atomix.source.integrity"] ?? "", /^sha512-/);
    await assert.rejects(stat(marker), { code: "ENOENT" });
  });

  it("refuses a registry tarball that does not match its integrity", async () => {
    await publish(
      "tampered",
      { "package.json": pkg("tampered"), "src/index.ts": "export const driver = {};\n" },
      { corrupt: true },
    );
    const error = await failure(key("tampered"));
    assert.equal(error.code, Code.DataLoss);
    assert.match(error.message, /does not match the registry's integrity sha512-/);
  });
});
