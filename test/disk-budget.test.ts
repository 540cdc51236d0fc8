import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient, type PluginClient } from "atomix-plugins-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { treeBytes } from "../src/compiler/disk-cache.js";
import { createSourceUnpacker } from "../src/compiler/sources/source-unpacker.js";
import { type GoCommand, goCommand } from "../src/compiler/toolchains/go/go-command.js";
import {
  probeGoInstallations,
  selectGoInstallation,
} from "../src/compiler/toolchains/go/go-installations.js";
import { fetchGoModule } from "../src/compiler/toolchains/go/go-module-source.js";
import { normalizeGoProxy } from "../src/compiler/toolchains/go/go-toolchain.js";
import { EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { EXAMPLE_GOPROXY, EXAMPLE_PLUGINS, GO_RELEASE, writeModule } from "./helpers/go-fixtures.js";
import { testSandbox } from "./helpers/sandbox.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const MiB = 1024 * 1024;
/** Room for the base (the standard library in plugin mode, ~14 MiB) and one module's cache (~15 MiB), not two. */
const GO_CACHE_MAX = 36 * MiB;
const MAX_SOURCE_FILES = 50;
const MAX_SOURCE_BYTES = 4 * MiB;

const goKey = (name: string, version: string): BuildKey => ({
  runtime: { version: "3.0.0", buildVersion: GO_RELEASE },
  plugin: { name, version },
});
const nodeKey = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});
/** The folder of a module's build cache, as go-build-cache.ts names it. */
const cacheOf = (module: string) => createHash("sha256").update(module).digest("hex").slice(0, 32);

async function codeOf(call: Promise<unknown>, messages?: string[]): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (error) {
    if (!(error instanceof PluginError)) throw error;
    if (error.code !== Code.NotFound) messages?.push(error.message);
    return error.code;
  }
}

/** Calls `task` for every item, `parallel` at a time. */
async function inParallel<T>(items: readonly T[], parallel: number, task: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++] as T);
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

/** Adds `module@version` to a GOPROXY=file:// layout, its zip made by zip(1) from `files`. */
async function publish(
  proxy: string,
  module: string,
  version: string,
  files: Record<string, string | Buffer>,
) {
  const at = join(proxy, module, "@v");
  const tree = join(proxy, "..", "zip-trees", `${module}@${version}`);
  for (const [name, data] of Object.entries(files)) {
    await mkdir(dirname(join(tree, name)), { recursive: true });
    await writeFile(join(tree, name), data);
  }
  await mkdir(at, { recursive: true });
  await writeFile(join(at, `${version}.mod`), files["go.mod"] ?? "");
  await writeFile(
    join(at, `${version}.info`),
    JSON.stringify({ Version: version, Time: "2026-01-01T00:00:00Z" }),
  );
  await writeFile(join(at, "list"), `${version}\n`);
  const root = join(proxy, "..", "zip-trees");
  const names = Object.keys(files).map((name) => `${module}@${version}/${name}`);
  execFileSync("zip", ["-q", "-X", join(at, `${version}.zip`), ...names], { cwd: root });
}

describe("disk is a budget: what hostile callers leave on the server's disk", () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let server: ServerProcess;
  let client: PluginClient;
  let catalog: string;
  let goCache: string;

  before(async () => {
    work = await tempDir("atomix-disk-budget-");
    catalog = join(work.path, "plugins");
    await cp(EXAMPLE_PLUGINS, catalog, { recursive: true });
    const proxy = join(work.path, "goproxy");
    await cp(EXAMPLE_GOPROXY, proxy, { recursive: true });
    goCache = join(work.path, "go-cache");
    server = await startServerProcess({
      dataDir: join(work.path, "data"),
      openFileLimit: 1024,
      args: [
        ...["--runtimes", EXAMPLE_RUNTIMES_DIR, "--sources", catalog, "--go-proxy", proxy],
        ...["--go-cache", goCache, "--go-cache-max-bytes", String(GO_CACHE_MAX)],
        ...["--build-concurrency", "2", "--build-queue", "1000", "--build-records-max", "3"],
        // One client here stands for the many callers an attacker can be.
        ...["--builds-per-caller", "1000"],
      ],
    });
    client = createPluginClient({ address: server.address });
  });
  after(async () => {
    client?.close();
    await server?.stop();
    await work?.remove();
  });

  it("a thousand plugins and Go modules that exist nowhere leave no build cache and no build record", async () => {
    // Go lookups cost a `go` run each: ATOMIX_TEST_GO_NOWHERE raises their count (1,000 pass too).
    const goCalls = Number(process.env.ATOMIX_TEST_GO_NOWHERE ?? 250);
    const keys = [
      ...Array.from({ length: 1000 }, (_, i) => nodeKey(`nowhere-${i}`)),
      ...Array.from({ length: goCalls }, (_, i) => goKey(`example.com/nowhere/m${i}`, "v1.0.0")),
    ];
    const codes = new Map<Code | "ok", number>();
    const others: string[] = [];
    await inParallel(keys, 16, async (key) => {
      const code = await codeOf(client.compile(key), others);
      codes.set(code, (codes.get(code) ?? 0) + 1);
    });
    assert.deepEqual([...codes], [[Code.NotFound, keys.length]], others.slice(0, 3).join("\n"));
    assert.deepEqual(await readdir(join(server.dataDir, "build-records")), []);
    assert.deepEqual(await readdir(goCache).catch(() => [] as string[]), ["mod"]);
    assert.ok((await treeBytes(goCache)) < 64 * 1024, "the Go caches hold nothing of those calls");
  });

  it("a Go build that fails keeps nothing in its module's build cache; the next build starts from the base", async () => {
    // The example counter driver, renamed, with a package of its own that compiles before main fails.
    const module = "example.com/hostile/fails";
    const counter = join(EXAMPLE_PLUGINS, "example.com/atomix/drivers/counter/v1.0.0");
    const files = async (main: string) => ({
      "go.mod": (await readFile(join(counter, "go.mod"), "utf8")).replace(/^module .*$/m, `module ${module}`),
      "go.sum": await readFile(join(counter, "go.sum"), "utf8"),
      "lib/lib.go": "package lib\n\nfunc Answer() int { return 42 }\n",
      "main.go":
        (await readFile(join(counter, "main.go"), "utf8")).replace(
          '"example.com/atomix/sdk"\n',
          `"example.com/atomix/sdk"\n\t"${module}/lib"\n`,
        ) + main,
    });
    await writeModule(catalog, module, "v1.0.0", await files("\nvar _ = lib.Answer() + undefinedName\n"));
    assert.equal(await codeOf(client.compile(goKey(module, "v1.0.0"))), Code.FailedPrecondition);
    const byModule = await readdir(join(goCache, "build-by-module")).catch(() => [] as string[]);
    assert.ok(!byModule.includes(cacheOf(module)), "the failed build's objects are not kept");

    await writeModule(catalog, module, "v1.0.1", await files("\nvar _ = lib.Answer()\n"));
    assert.equal(await codeOf(client.compile(goKey(module, "v1.0.1"))), "ok");
    assert.ok((await readdir(join(goCache, "build-by-module"))).includes(cacheOf(module)));
  });

  it("keeps the Go caches within --go-cache-max-bytes, the least recently used module's cache removed first", async () => {
    const echo = "example.com/atomix/drivers/echo";
    const counter = "example.com/atomix/drivers/counter";
    assert.equal(await codeOf(client.compile(goKey(echo, "v1.0.0"))), "ok");
    assert.equal(await codeOf(client.compile(goKey(counter, "v1.0.0"))), "ok");
    const byModule = await readdir(join(goCache, "build-by-module"));
    assert.ok(byModule.includes(cacheOf(counter)), "the module built last keeps its cache");
    assert.ok(!byModule.includes(cacheOf(echo)), "the least recently used module's cache went");
    assert.ok((await treeBytes(goCache)) <= GO_CACHE_MAX, "the Go caches within their bound");

    const report = await client.collectGarbage();
    const goBuild = report.caches.find((cache) => cache.name === "go-build");
    assert.equal(goBuild?.entries, 1);
    assert.equal(goBuild?.maxBytes, GO_CACHE_MAX);
    assert.ok((goBuild?.bytes ?? 0) > 0 && (goBuild?.bytes ?? 0) <= GO_CACHE_MAX);
    const metrics = await (await fetch(`http://${server.http}/metrics`)).text();
    assert.match(metrics, /^atomix_plugins_build_cache_bytes\{cache="go-build"\} [1-9]\d*$/m);
    assert.match(
      metrics,
      new RegExp(`^atomix_plugins_build_cache_max_bytes\\{cache="go-build"\\} ${GO_CACHE_MAX}$`, "m"),
    );
  });

  it("keeps at most --build-records-max build records, the oldest removed first", async () => {
    // broken-types fails to type-check: each version a real build and a record.
    for (const version of ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"]) {
      if (version !== "1.0.0")
        await cp(join(catalog, "broken-types", "1.0.0"), join(catalog, "broken-types", version), {
          recursive: true,
        });
      const key = { ...nodeKey("broken-types"), plugin: { name: "broken-types", version } };
      assert.equal(await codeOf(client.compile(key)), Code.FailedPrecondition);
    }
    const records = await readdir(join(server.dataDir, "build-records"));
    assert.equal(records.length, 3);
    const report = await client.collectGarbage();
    const kept = report.caches.find((cache) => cache.name === "build-records");
    assert.equal(kept?.entries, 3);
    assert.equal(kept?.maxEntries, 3);
  });
});

describe("disk is a budget: module zips are held to the source limits before they are unpacked", () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let server: ServerProcess;
  let client: PluginClient;
  let goCache: string;

  before(async () => {
    work = await tempDir("atomix-disk-budget-zips-");
    const proxy = join(work.path, "goproxy");
    await cp(EXAMPLE_GOPROXY, proxy, { recursive: true });
    const goMod = (module: string) => `module ${module}\n\ngo 1.19\n`;
    // A few KiB as a zip; unpacked, one file twice --max-source-size and beyond --max-build-output.
    await publish(proxy, "example.com/hostile/bomb", "v1.0.0", {
      "go.mod": goMod("example.com/hostile/bomb"),
      "zeros.go": Buffer.concat([Buffer.from("package main\n\n/*"), Buffer.alloc(2 * MAX_SOURCE_BYTES, 32)]),
    });
    const swarm: Record<string, string> = { "go.mod": goMod("example.com/hostile/swarm") };
    for (let i = 0; i < 4 * MAX_SOURCE_FILES; i++) swarm[`f${i}.go`] = "package main\n";
    await publish(proxy, "example.com/hostile/swarm", "v1.0.0", swarm);
    goCache = join(work.path, "go-cache");
    server = await startServerProcess({
      dataDir: join(work.path, "data"),
      openFileLimit: 1024,
      args: [
        ...["--runtimes", EXAMPLE_RUNTIMES_DIR, "--sources", EXAMPLE_PLUGINS, "--go-proxy", proxy],
        ...["--go-cache", goCache, "--max-build-output", String(MAX_SOURCE_BYTES)],
        ...["--max-source-files", String(MAX_SOURCE_FILES), "--max-source-size", String(MAX_SOURCE_BYTES)],
      ],
    });
    client = createPluginClient({ address: server.address });
  });
  after(async () => {
    client?.close();
    await server?.stop();
    await work?.remove();
  });

  // Unpacking the bomb would write a file larger than any build step may: refused before, by its zip.
  const limits = [
    ["example.com/hostile/bomb", /refused: it unpacks to more than 4194304 bytes \(--max-source-size\)/],
    ["example.com/hostile/swarm", /refused: it holds more than 50 entries \(--max-source-files\)/],
  ] as const;
  for (const [name, message] of limits) {
    it(`refuses the module zip ${name}, over the source limits, by its zip before Go unpacks it`, async () => {
      await assert.rejects(client.compile(goKey(name, "v1.0.0")), (error: PluginError) => {
        assert.equal(error.code, Code.FailedPrecondition, error.message);
        assert.match(error.message, message);
        return true;
      });
    });
  }

  it("keeps the refused module zips out of the shared module cache", async () => {
    for (const [name] of limits) await assert.rejects(client.compile(goKey(name, "v1.0.0")));
    const shared = join(goCache, "mod");
    assert.deepEqual(
      (await readdir(shared, { recursive: true })).filter((path) => path.includes("hostile")),
      [],
      "nothing of the refused modules in the module cache",
    );
  });
});

describe("disk is a budget: Go stops between fetching a plugin module's zip and unpacking it", () => {
  it("a zip over the source limits is refused before any of it is unpacked", async () => {
    const work = await tempDir("atomix-disk-budget-unpack-");
    try {
      const proxy = join(work.path, "goproxy");
      const module = "example.com/hostile/bomb";
      await publish(proxy, module, "v1.0.0", {
        "go.mod": `module ${module}\n\ngo 1.19\n`,
        "zeros.go": Buffer.alloc(2 * MAX_SOURCE_BYTES, 32),
      });
      const sandbox = await testSandbox();
      const installation = selectGoInstallation(await probeGoInstallations(["go"]), GO_RELEASE);
      const workDir = join(work.path, "build");
      await mkdir(join(workDir, "home"), { recursive: true });
      await mkdir(join(workDir, "tmp"), { recursive: true });
      await mkdir(join(workDir, "go-cache"), { recursive: true });
      await mkdir(join(work.path, "mod"), { recursive: true });
      const go = goCommand({
        installation,
        sandbox,
        env: {
          installation,
          workDir,
          buildCache: join(workDir, "go-cache"),
          modCache: join(work.path, "mod"),
          proxy: normalizeGoProxy(proxy),
          sumdb: "off",
        },
      });
      // The real go, watched: after each download run, was the module unpacked?
      const unpackedAfterRuns: boolean[] = [];
      const watched = (command: GoCommand): GoCommand => ({
        ...command,
        withReadable: (paths) => watched(command.withReadable(paths)),
        withModuleCache: (dir) => {
          const inner = command.withModuleCache(dir);
          return {
            ...inner,
            async download(args, cwd) {
              const result = await inner.download(args, cwd);
              const unpacked = await readdir(join(dir, "example.com", "hostile"), { recursive: true }).then(
                (names) => names.some((name) => name.includes("zeros.go")),
                () => false,
              );
              unpackedAfterRuns.push(unpacked);
              return result;
            },
          };
        },
      });
      await assert.rejects(
        fetchGoModule({
          name: module,
          version: "v1.0.0",
          catalogs: [],
          proxy: normalizeGoProxy(proxy),
          go: watched(go),
          unpacker: createSourceUnpacker({
            sandbox,
            limits: { maxBytes: MAX_SOURCE_BYTES, maxFiles: MAX_SOURCE_FILES },
          }),
          workDir,
        }),
        /refused: it unpacks to more than 4194304 bytes \(--max-source-size\)/,
      );
      assert.deepEqual(unpackedAfterRuns, [false], "one run, which fetched the zip and unpacked nothing");
    } finally {
      await work.remove();
    }
  });
});
