import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import { createBuildCompiler } from "../src/compiler/build-compiler.js";
import type { Toolchain } from "../src/compiler/toolchain.js";
import { parseServeConfig } from "../src/config.js";
import { loadRuntimeCatalog } from "../src/runtime-releases/runtime-catalog.js";
import { type RunningServer, startServer } from "../src/server/server.js";
import { serviceLog } from "../src/start-service.js";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { createFsStore } from "../src/store/fs-store.js";

/** A small real toolchain: the artifact is the key's text. */
const textToolchain: Toolchain = {
  name: "text",
  async build(job) {
    const artifactPath = join(job.workDir, "artifact.txt");
    await writeFile(artifactPath, formatBuildKey(job.key));
    return { artifactPath, mediaType: "text/plain", annotations: {} };
  },
};

const keyFor = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "text1" },
  plugin: { name, version: "1.0.0" },
});

/**
 * A pull of a key nobody built yet: with an OCI store every lookup is a
 * registry request, so the server's own lookup is the one that answers the
 * miss, and the compiler goes on to the build without asking again.
 */
describe("a pull that misses", () => {
  let root: string;
  let store: ArtifactStore;
  let server: RunningServer;
  let client: PluginClient;
  let compiler: ReturnType<typeof createBuildCompiler>;
  /** The keys the fs store was asked for, in order. */
  const lookups: string[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "atomix-pull-miss-"));
    await mkdir(join(root, "runtimes", "1.0.0"), { recursive: true });
    await writeFile(join(root, "runtimes", "1.0.0", "runtime.json"), JSON.stringify({ toolchain: "text" }));
    await mkdir(join(root, "work"));
    store = await createFsStore({ dir: join(root, "store") });
    const counted = new Proxy(store, {
      get(target, property, receiver) {
        if (property !== "get") return Reflect.get(target, property, receiver);
        const get: ArtifactStore["get"] = (key, options) => {
          lookups.push(formatBuildKey(key));
          return target.get(key, options);
        };
        return get;
      },
    });
    const config = parseServeConfig({
      listen: "127.0.0.1:0",
      httpListen: "off",
      dataDir: join(root, "data"),
      logLevel: "silent",
    });
    compiler = createBuildCompiler({
      store: counted,
      runtimes: await loadRuntimeCatalog([join(root, "runtimes")]),
      toolchains: [textToolchain],
      workRoot: join(root, "work"),
    });
    server = await startServer({ config, store: counted, compiler, log: serviceLog(config) });
    client = createPluginClient({ address: server.address });
  });

  after(async () => {
    client.close();
    await server.shutdown(0);
    await compiler.close();
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  it("is built after one store lookup, and the next pull of the key is answered by one lookup", async () => {
    const key = keyFor("counter");
    const to = join(root, "pulled.txt");
    lookups.length = 0;
    await client.pull(key, { to });
    assert.equal(await readFile(to, "utf8"), formatBuildKey(key));
    assert.deepEqual(lookups, [formatBuildKey(key)], "one lookup of the key before its build");

    lookups.length = 0;
    await client.pull(key, { to });
    assert.deepEqual(lookups, [formatBuildKey(key)]);
  });
});
