import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { runProcess } from "../src/compiler/run-process.js";
import type { BuildJob, BuildOutput, RuntimeDescriptor, Toolchain } from "../src/compiler/toolchain.js";
import { planAlignment } from "../src/compiler/toolchains/go/go-mod.js";
import { pathToPrefix } from "../src/compiler/toolchains/go/go-plugin-check.js";
import {
  createGoToolchain,
  GO_PLUGIN_MEDIA_TYPE,
  normalizeGoProxy,
} from "../src/compiler/toolchains/go/go-toolchain.js";
import {
  COUNTER,
  ECHO,
  EXAMPLE_GOPROXY,
  EXAMPLE_PLUGINS,
  exampleGoRuntime,
  GO_RELEASE,
  goKey,
  goTestDir,
  writeModule,
} from "./helpers/go-fixtures.js";
import { testSandbox } from "./helpers/sandbox.js";

const SDK = "example.com/atomix/sdk";

describe("Go toolchain", () => {
  let test: Awaited<ReturnType<typeof goTestDir>>;
  let toolchain: Toolchain;
  /** A catalog of modules written by the tests below. */
  let scratch: string;
  let scratchToolchain: Toolchain;

  before(async () => {
    test = await goTestDir();
    toolchain = createGoToolchain({
      sandbox: await testSandbox(),
      cacheDir: test.cacheDir,
      sources: [EXAMPLE_PLUGINS],
      proxy: EXAMPLE_GOPROXY,
    });
    scratch = join(test.dir, "catalog");
    scratchToolchain = createGoToolchain({
      sandbox: await testSandbox(),
      cacheDir: test.cacheDir,
      sources: [scratch],
      proxy: EXAMPLE_GOPROXY,
    });
  });
  after(() => test.remove());

  async function build(
    chain: Toolchain,
    key: BuildKey,
    runtime: RuntimeDescriptor = exampleGoRuntime(),
    signal = new AbortController().signal,
  ): Promise<BuildOutput & { sha256: string }> {
    const workDir = await mkdtemp(join(test.dir, "job-"));
    const job: BuildJob = { key, runtime, workDir, signal };
    const output = await chain.build(job);
    const sha256 = createHash("sha256")
      .update(await readFile(output.artifactPath))
      .digest("hex");
    return { ...output, sha256 };
  }

  async function buildError(
    chain: Toolchain,
    key: BuildKey,
    runtime?: RuntimeDescriptor,
  ): Promise<PluginError> {
    try {
      await build(chain, key, runtime);
    } catch (error) {
      assert.ok(error instanceof PluginError, `expected a PluginError, got ${String(error)}`);
      return error;
    }
    assert.fail(`${key.plugin.name}@${key.plugin.version} built, but should not have`);
  }

  it("builds a catalog driver with its requirements set to the runtime's versions", async () => {
    const catalogGoMod = join(EXAMPLE_PLUGINS, COUNTER, "v1.0.0", "go.mod");
    const before = await readFile(catalogGoMod, "utf8");
    const output = await build(toolchain, goKey(COUNTER, "v1.0.0"));

    assert.equal(output.mediaType, GO_PLUGIN_MEDIA_TYPE);
    const bytes = await readFile(output.artifactPath);
    assert.deepEqual([...bytes.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], "an ELF file");
    assert.equal(output.annotations["dev.atomix.toolchain"], "go");
    assert.equal(output.annotations["dev.atomix.toolchain.version"], GO_RELEASE);
    assert.match(output.annotations["dev.atomix.source"] ?? "", /^catalog:/);
    assert.match(output.annotations["dev.atomix.source.integrity"] ?? "", /^h1:[A-Za-z0-9+/]{43}=$/);
    assert.equal(output.annotations["dev.atomix.go.alignment"], `${SDK} v1.0.0=>v1.1.0`);

    // counter answers with sdk.Version, a constant compiled into the plugin:
    // the sdk it was built against is the runtime's v1.1.0, not its go.mod's v1.0.0.
    assert.ok(bytes.includes("v1.1.0"), "built against sdk v1.1.0");
    assert.ok(!bytes.includes("v1.0.0"), "not against sdk v1.0.0");
    assert.equal(await readFile(catalogGoMod, "utf8"), before, "the catalog's go.mod is untouched");
  });

  it("gives the same bytes for the same inputs, whatever the build directory", async () => {
    const first = await build(toolchain, goKey(COUNTER, "v1.0.0"));
    const second = await build(toolchain, goKey(COUNTER, "v1.0.0"));
    assert.equal(first.sha256, second.sha256);
  });

  it("fetches a module the catalog lacks through the configured GOPROXY", async () => {
    const output = await build(toolchain, goKey(ECHO, "v1.0.0"));
    assert.match(output.annotations["dev.atomix.source"] ?? "", /^goproxy:file:\/\//);
    // The proxy's go.sum hash of the module, as `go mod download` reports it.
    assert.match(output.annotations["dev.atomix.source.integrity"] ?? "", /^h1:/);
    assert.equal(output.annotations["dev.atomix.go.alignment"], "none");
  });

  it("answers NOT_FOUND for a module in neither the catalog nor the proxy, with the server's paths only in the log detail", async () => {
    const offline = createGoToolchain({
      sandbox: await testSandbox(),
      cacheDir: test.cacheDir,
      sources: [EXAMPLE_PLUGINS],
    });
    const noProxy = await buildError(offline, goKey(ECHO, "v1.0.0"));
    assert.equal(noProxy.code, Code.NotFound);
    assert.match(
      noProxy.message,
      /is not in the source catalog and no Go module proxy is configured \(GOPROXY=off\)/,
    );
    assert.ok(!noProxy.message.includes(EXAMPLE_PLUGINS), `no path in: ${noProxy.message}`);
    assert.ok(noProxy.detail?.includes(EXAMPLE_PLUGINS), "the log detail names the catalog");
    const unknown = await buildError(toolchain, goKey("example.com/atomix/drivers/missing", "v1.0.0"));
    assert.equal(unknown.code, Code.NotFound);
    assert.match(unknown.message, /is not in the source catalog nor available from the Go module proxy$/);
    for (const path of [EXAMPLE_PLUGINS, EXAMPLE_GOPROXY]) {
      assert.ok(!unknown.message.includes(path), `${path} not in: ${unknown.message}`);
      assert.ok(unknown.detail?.includes(path), `the log detail names ${path}`);
    }
  });

  it("selects the installation whose go version is the build_version, and lists the installed ones otherwise", async () => {
    const probe = await runProcess("go", ["env", "GOROOT"], {
      cwd: test.dir,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: test.dir },
    });
    const goroot = probe.stdout.trim();
    const chain = createGoToolchain({
      sandbox: await testSandbox(),
      cacheDir: test.cacheDir,
      sources: [EXAMPLE_PLUGINS],
      proxy: EXAMPLE_GOPROXY,
      installations: [join(test.dir, "no-such-goroot"), goroot],
    });
    const runtime = exampleGoRuntime({ goReleases: [GO_RELEASE, "go1.99.1"] });

    const output = await build(chain, goKey(COUNTER, "v1.0.0"), runtime);
    assert.equal(output.annotations["dev.atomix.toolchain.version"], GO_RELEASE);

    const missing = await buildError(chain, goKey(COUNTER, "v1.0.0", "go1.99.1"), runtime);
    assert.equal(missing.code, Code.FailedPrecondition);
    assert.match(missing.message, /no Go installation for go1\.99\.1/);
    assert.match(missing.message, new RegExp(`installed: ${GO_RELEASE.replaceAll(".", "\\.")}`));
    assert.match(missing.message, /no-such-goroot/);

    const notThisRuntime = await buildError(chain, goKey(COUNTER, "v1.0.0", "go1.20.3"));
    assert.equal(notThisRuntime.code, Code.FailedPrecondition);
    assert.match(notThisRuntime.message, /was built with go1\.19\.8, not go1\.20\.3/);

    const notGo = await buildError(chain, goKey(COUNTER, "v1.0.0", "node20"));
    assert.equal(notGo.code, Code.FailedPrecondition);
  });

  it("reports a requirement the runtime pins to a version the plugin cannot build with", async () => {
    // counter v1.1.0 calls sdk.Describe, new in sdk v1.2.0; runtime 3.0.0 pins v1.1.0.
    const error = await buildError(toolchain, goKey(COUNTER, "v1.1.0"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /example\.com\/atomix\/sdk v1\.2\.0=>v1\.1\.0/);
    assert.match(error.message, /main\.go:\d+:\d+: undefined: sdk\.Describe/);
  });

  it("returns the compiler's first lines for a plugin that does not compile", async () => {
    const module = "example.com/broken";
    await writeModule(scratch, module, "v0.1.0", {
      "go.mod": `module ${module}\n\ngo 1.19\n`,
      "main.go": 'package main\n\nvar Plugin int = "not an int"\n',
    });
    const error = await buildError(scratchToolchain, goKey(module, "v0.1.0"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /does not compile with go1\.19\.8/);
    assert.match(error.message, /main\.go:3:18: cannot use "not an int"/);
    assert.doesNotMatch(error.message, new RegExp(test.dir), "no build directory paths");
  });

  it("refuses a plugin that does not export the runtime's symbol", async () => {
    const module = "example.com/nosymbol";
    await writeModule(scratch, module, "v0.1.0", {
      "go.mod": `module ${module}\n\ngo 1.19\n`,
      "main.go": "package main\n\n// Driver is not the symbol runtime 3.0.0 looks up.\nvar Driver = 1\n",
    });
    // The symbol table, what a runtime that names no symbolType is checked by.
    const error = await buildError(
      scratchToolchain,
      goKey(module, "v0.1.0"),
      exampleGoRuntime({ symbolType: undefined }),
    );
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /builds but does not export Plugin/);
  });

  it("refuses a dependency graph that needs a newer version than the runtime pins", async () => {
    // The plugin asks for sdk v1.1.0 (the runtime's), but a module it uses needs v1.2.0.
    const module = "example.com/greedy";
    await writeModule(scratch, module, "v0.1.0", {
      "go.mod": [
        `module ${module}`,
        "go 1.19",
        `require (\n\t${SDK} v1.1.0\n\texample.com/helper v0.0.0\n)`,
        "replace example.com/helper => ./helper",
        "",
      ].join("\n\n"),
      "main.go": [
        "package main",
        `import (\n\t"${SDK}"\n\t"example.com/helper"\n)`,
        "var Plugin sdk.Driver = helper.Driver{}",
        "",
      ].join("\n\n"),
      "helper/go.mod": `module example.com/helper\n\ngo 1.19\n\nrequire ${SDK} v1.2.0\n`,
      "helper/helper.go":
        'package helper\n\ntype Driver struct{}\n\nfunc (Driver) Name() string { return "helper" }\n\nfunc (Driver) Handle(r string) (string, error) { return r, nil }\n',
    });
    const error = await buildError(scratchToolchain, goKey(module, "v0.1.0"));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /example\.com\/atomix\/sdk v1\.2\.0 \(runtime has v1\.1\.0\)/);
  });

  it("builds with the descriptor's extra build flags", async () => {
    // Plugin exists only when the runtime's build tag is set, as the runtime was built.
    const module = "example.com/tagged";
    await writeModule(scratch, module, "v0.1.0", {
      "go.mod": `module ${module}\n\ngo 1.19\n`,
      "main.go": "package main\n",
      "plugin.go": "//go:build atomix_extra\n\npackage main\n\nvar Plugin = 1\n",
    });
    // A runtime that checks the symbol's name only (go-symbol-type.test.ts checks types).
    const tagged = exampleGoRuntime({ buildFlags: ["-tags=atomix_extra"], symbolType: undefined });
    const output = await build(scratchToolchain, goKey(module, "v0.1.0"), tagged);
    assert.equal(
      output.annotations["dev.atomix.go.build-flags"],
      "-buildmode=plugin -trimpath -buildvcs=false -tags=atomix_extra",
    );
    const untagged = await buildError(
      scratchToolchain,
      goKey(module, "v0.1.0"),
      exampleGoRuntime({ symbolType: undefined }),
    );
    assert.match(untagged.message, /does not export Plugin/);
  });

  it("refuses an invalid runtime descriptor, naming the field", async () => {
    const error = await buildError(
      toolchain,
      goKey(COUNTER, "v1.0.0"),
      exampleGoRuntime({ symbol: "plugin" }),
    );
    assert.equal(error.code, Code.FailedPrecondition);
    assert.match(error.message, /symbol: expected an exported Go identifier/);
    const flags = await buildError(
      toolchain,
      goKey(COUNTER, "v1.0.0"),
      exampleGoRuntime({ buildFlags: ["-o=x"] }),
    );
    assert.match(flags.message, /buildFlags\.0: the toolchain sets -o/);
  });

  it("gives each plugin module a build cache of its own, seeded from a base no plugin wrote", async () => {
    const cacheOf = (module: string) =>
      join(test.cacheDir, "build-by-module", createHash("sha256").update(module).digest("hex").slice(0, 32));
    await build(toolchain, goKey(COUNTER, "v1.0.0"));
    // Whatever a build leaves in its cache (here: planted by hand) stays with its module.
    await writeFile(join(cacheOf(COUNTER), "planted"), "left by counter's build");
    const isolated = "example.com/isolated";
    await writeModule(scratch, isolated, "v0.1.0", {
      "go.mod": `module ${isolated}\n\ngo 1.19\n`,
      "main.go": "package main\n\nvar Plugin = 1\n",
    });
    await build(scratchToolchain, goKey(isolated, "v0.1.0"), exampleGoRuntime({ symbolType: undefined }));
    const entries = await readdir(cacheOf(isolated));
    assert.ok(!entries.includes("planted"), "another module's build never sees it");
    const bases = await readdir(join(test.cacheDir, "build-base"));
    assert.ok(bases.length >= 1);
    for (const base of bases) {
      const baseEntries = await readdir(join(test.cacheDir, "build-base", base));
      assert.ok(!baseEntries.includes("planted"), "nor does the base");
    }
    // The new module's cache started from the base: the standard library was not compiled again.
    const files = async (dir: string) =>
      (await readdir(dir, { recursive: true, withFileTypes: true }))
        .filter((entry) => entry.isFile())
        .map((entry) => join(entry.parentPath, entry.name).slice(dir.length));
    const moduleFiles = new Set(await files(cacheOf(isolated)));
    // One base per Go installation and build flags; this module's is the one its cache holds.
    const missing = await Promise.all(
      bases.map(async (base) => {
        const baseFiles = await files(join(test.cacheDir, "build-base", base));
        return {
          total: baseFiles.length,
          missing: baseFiles.filter((file) => !moduleFiles.has(file)).length,
        };
      }),
    );
    const seed = missing.sort((a, b) => a.missing - b.missing)[0];
    assert.ok(seed && seed.total > 100, `a base holds the standard library (${seed?.total} files)`);
    assert.ok(seed.missing <= 1, `the module's cache holds the base's entries (${seed.missing} missing)`);
  });

  it("answers FAILED_PRECONDITION, not a retryable UNAVAILABLE, for a malformed module zip", async () => {
    const proxy = join(test.dir, "broken-proxy");
    // Named as a proxy error would read: the code must not follow the name.
    const module = "example.com/malformed-502-bad-gateway";
    const at = join(proxy, module, "@v");
    await mkdir(at, { recursive: true });
    await writeFile(join(at, "list"), "v1.0.0\n");
    await writeFile(join(at, "v1.0.0.info"), '{"Version":"v1.0.0","Time":"2026-01-01T00:00:00Z"}\n');
    await writeFile(join(at, "v1.0.0.mod"), `module ${module}\n\ngo 1.19\n`);
    await writeFile(join(at, "v1.0.0.zip"), "this is not a zip file");
    const chain = createGoToolchain({ sandbox: await testSandbox(), cacheDir: test.cacheDir, proxy });
    const error = await buildError(chain, goKey(module, "v1.0.0"));
    assert.equal(error.code, Code.FailedPrecondition, error.message);
    assert.match(error.message, /zip/);
  });

  it("stops a build when its signal aborts", async () => {
    const controller = new AbortController();
    const running = build(toolchain, goKey(ECHO, "v1.0.0"), exampleGoRuntime(), controller.signal);
    setImmediate(() => controller.abort());
    await assert.rejects(
      running,
      (error: unknown) => error instanceof PluginError && error.code === Code.Cancelled,
    );
  });
});

describe("Go plugin alignment", () => {
  const runtime = {
    Module: { Path: "example.com/runtime" },
    Require: [
      { Path: "example.com/sdk", Version: "v1.1.0" },
      { Path: "example.com/older", Version: "v0.9.0" },
      { Path: "example.com/forked", Version: "v2.0.0" },
    ],
    Replace: [
      { Old: { Path: "example.com/forked" }, New: { Path: "../forks/forked" } },
      {
        Old: { Path: "example.com/mirrored", Version: "v1.0.0" },
        New: { Path: "mirror.example/m", Version: "v1.0.1" },
      },
    ],
  };

  it("sets shared requirements to the runtime's versions, up or down, and nothing else", () => {
    const plan = planAlignment(
      {
        Module: { Path: "example.com/plugin" },
        Require: [
          { Path: "example.com/sdk", Version: "v1.0.0" },
          { Path: "example.com/older", Version: "v1.2.0" },
          { Path: "example.com/own", Version: "v3.0.0" },
        ],
      },
      runtime,
      "/runtimes/3.0.0/go.mod",
    );
    assert.deepEqual(plan.changes, [
      { path: "example.com/sdk", from: "v1.0.0", to: "v1.1.0" },
      { path: "example.com/older", from: "v1.2.0", to: "v0.9.0" },
    ]);
    assert.deepEqual(plan.editArgs, [
      "-require=example.com/sdk@v1.1.0",
      "-require=example.com/older@v0.9.0",
      "-replace=example.com/forked=/runtimes/forks/forked",
      "-replace=example.com/mirrored@v1.0.0=mirror.example/m@v1.0.1",
    ]);
  });

  it("drops the plugin's own replacements of modules the runtime provides", () => {
    const plan = planAlignment(
      {
        Module: { Path: "example.com/plugin" },
        Require: [{ Path: "example.com/sdk", Version: "v1.1.0" }],
        Replace: [
          { Old: { Path: "example.com/sdk" }, New: { Path: "./my-sdk" } },
          { Old: { Path: "example.com/own" }, New: { Path: "./own" } },
        ],
      },
      runtime,
      "/runtimes/3.0.0/go.mod",
    );
    assert.deepEqual(plan.changes, []);
    assert.ok(plan.editArgs.includes("-dropreplace=example.com/sdk"));
    assert.ok(!plan.editArgs.some((arg) => arg.includes("example.com/own")));
  });

  it("turns proxy directories into file:// URLs and keeps URLs, off and direct", () => {
    assert.equal(
      normalizeGoProxy("/srv/goproxy,https://proxy.example|direct"),
      "file:///srv/goproxy,https://proxy.example|direct",
    );
    assert.equal(normalizeGoProxy("off"), "off");
  });

  it("names the driver symbol as the Go linker writes package paths", () => {
    assert.equal(pathToPrefix("example.com/atomix/drivers/counter"), "example.com/atomix/drivers/counter");
    assert.equal(pathToPrefix("example.com/drivers/v1.2"), "example.com/drivers/v1%2e2");
  });
});
