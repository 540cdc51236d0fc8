import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { RuntimeDescriptor, Toolchain } from "../src/compiler/toolchain.js";
import { createGoToolchain } from "../src/compiler/toolchains/go/go-toolchain.js";
import {
  COUNTER,
  ECHO,
  EXAMPLE_GOPROXY,
  EXAMPLE_PLUGINS,
  exampleGoRuntime,
  goKey,
  goTestDir,
  writeModule,
} from "./helpers/go-fixtures.js";
import { testSandbox } from "./helpers/sandbox.js";

const SDK = "example.com/atomix/sdk";
/** One module path for every case: its versions share one build cache. */
const MODULE = "example.com/symboltype";
const GO_MOD = `module ${MODULE}\n\ngo 1.19\n\nrequire ${SDK} v1.1.0\n`;
const ECHO_DRIVER = [
  "type echo struct{}",
  'func (echo) Name() string { return "echo" }',
  "func (echo) Handle(request string) (string, error) { return request, nil }",
].join("\n\n");
/** What every refusal of a symbol's type says the runtime wants, and how to get there. */
const WANTED =
  /but the runtime loads Plugin as a variable of type example\.com\/atomix\/sdk\.Driver \(its descriptor's symbolType: a runtime asserts the pointer plugin\.Lookup returns to be a \*Driver\): declare it in package main as `var Plugin <package>\.Driver = \.\.\.`, importing example\.com\/atomix\/sdk$/;

describe("Go plugin symbol type", () => {
  let test: Awaited<ReturnType<typeof goTestDir>>;
  let catalog: string;
  let toolchain: Toolchain;

  before(async () => {
    test = await goTestDir();
    catalog = join(test.dir, "catalog");
    toolchain = createGoToolchain({
      sandbox: await testSandbox(),
      cacheDir: test.cacheDir,
      sources: [catalog, EXAMPLE_PLUGINS],
      proxy: EXAMPLE_GOPROXY,
    });
  });
  after(() => test.remove());

  async function build(key: BuildKey, runtime: RuntimeDescriptor = exampleGoRuntime()): Promise<string> {
    const workDir = await mkdtemp(join(test.dir, "job-"));
    const output = await toolchain.build({ key, runtime, workDir, signal: new AbortController().signal });
    return createHash("sha256")
      .update(await readFile(output.artifactPath))
      .digest("hex");
  }

  /** Builds `MODULE@version` made of `files` (go.mod added) and returns why it was refused. */
  async function refusal(
    version: string,
    files: Record<string, string>,
    runtime?: RuntimeDescriptor,
  ): Promise<PluginError> {
    await writeModule(catalog, MODULE, version, { "go.mod": GO_MOD, ...files });
    try {
      await build(goKey(MODULE, version), runtime);
    } catch (error) {
      assert.ok(error instanceof PluginError, `expected a PluginError, got ${String(error)}`);
      assert.equal(error.code, Code.FailedPrecondition, error.message);
      assert.ok(!error.message.includes(test.dir), `no build directory in: ${error.message}`);
      return error;
    }
    assert.fail(`${MODULE}@${version} built, but should not have`);
  }

  const withSdk = (...declarations: string[]) =>
    ["package main", `import "${SDK}"`, ...declarations, ""].join("\n\n");

  it("builds the example drivers, whose Plugin is an sdk.Driver, to the same bytes as a name-only runtime does", async () => {
    const typed = await build(goKey(COUNTER, "v1.0.0"));
    const nameOnly = await build(goKey(COUNTER, "v1.0.0"), exampleGoRuntime({ symbolType: undefined }));
    assert.equal(typed, nameOnly, "the type check leaves nothing in the artifact");
    assert.equal(exampleGoRuntime().spec.symbolType, `${SDK}.Driver`, "runtime 3.0.0 names the type");
    await build(goKey(ECHO, "v1.0.0"));
  });

  it("refuses `var Plugin = 1`, naming the type found and the type wanted", async () => {
    // Nor does it depend on the sdk: what Plugin is comes from a second look.
    const error = await refusal("v0.1.0", {
      "go.mod": `module ${MODULE}\n\ngo 1.19\n`,
      "main.go": "package main\n\nvar Plugin = 1\n",
    });
    assert.match(
      error.message,
      /^example\.com\/symboltype@v0\.1\.0 for runtime .*: Plugin is a variable of type int, /,
    );
    assert.match(error.message, WANTED);
  });

  it("refuses a variable of a type that implements the wanted interface but is not it", async () => {
    // sym.(*sdk.Driver) fails on a *echo, although echo implements sdk.Driver.
    const error = await refusal("v0.2.0", {
      "main.go": withSdk("var _ sdk.Driver = echo{}", ECHO_DRIVER, "var Plugin = echo{}"),
    });
    assert.match(error.message, /: Plugin is a variable of type echo, /);
    assert.match(error.message, WANTED);
  });

  it("refuses a function where a variable is wanted", async () => {
    const error = await refusal("v0.3.0", {
      "main.go": withSdk(ECHO_DRIVER, "func Plugin() sdk.Driver { return echo{} }"),
    });
    assert.match(error.message, /: Plugin is a function \(func\(\) sdk\.Driver\), not a variable, /);
    assert.match(error.message, WANTED);
  });

  it("refuses a constant named like the symbol", async () => {
    const error = await refusal("v0.4.0", { "main.go": withSdk("var _ sdk.Driver", "const Plugin = 1") });
    assert.match(error.message, /: Plugin is a constant, not a variable, /);
    assert.match(error.message, WANTED);
  });

  it("refuses a type named like the symbol", async () => {
    const error = await refusal("v0.5.0", {
      "main.go": withSdk("var _ sdk.Driver", "type Plugin sdk.Driver"),
    });
    assert.match(error.message, /: Plugin is a type, not a variable, /);
    assert.match(error.message, WANTED);
  });

  it("refuses a Driver type of another package with the same name", async () => {
    const error = await refusal("v0.6.0", {
      "sdk/sdk.go":
        "package sdk\n\ntype Driver interface {\n\tName() string\n\tHandle(request string) (string, error)\n}\n",
      "main.go": [
        "package main",
        `import (\n\t_ "${SDK}"\n\n\t"${MODULE}/sdk"\n)`,
        ECHO_DRIVER,
        "var Plugin sdk.Driver = echo{}",
        "",
      ].join("\n\n"),
    });
    assert.match(error.message, /: Plugin is a variable of type "example\.com\/symboltype\/sdk"\.Driver, /);
    assert.match(error.message, WANTED);
  });

  it("refuses a symbol declared only in a _test.go file", async () => {
    const error = await refusal("v0.7.0", {
      "main.go": withSdk(ECHO_DRIVER, "var _ sdk.Driver = echo{}"),
      "plugin_test.go": withSdk("var Plugin sdk.Driver = echo{}"),
    });
    assert.match(
      error.message,
      /: the main package declares no Plugin \(files ending in _test\.go, and files its build constraints leave out, are not part of it\), /,
    );
    assert.match(error.message, WANTED);
  });

  it("checks the files the runtime's build tags select, as the build does", async () => {
    const files = {
      "main.go": withSdk(ECHO_DRIVER, "var _ sdk.Driver = echo{}"),
      "plugin.go": `//go:build atomix_extra\n\n${withSdk("var Plugin sdk.Driver = echo{}")}`,
      "other.go": "//go:build !atomix_extra\n\npackage main\n\nvar Plugin = 1\n",
    };
    const untagged = await refusal("v0.8.0", files);
    assert.match(untagged.message, /: Plugin is a variable of type int, /);
    await build(goKey(MODULE, "v0.8.0"), exampleGoRuntime({ buildFlags: ["-tags=atomix_extra"] }));
  });

  it("is not fooled by a plugin file named like the check file, or a declaration named like its import", async () => {
    // The check's file and import alias would be atomixsymboltype; a plugin that takes that
    // name (and the next one) must neither have its file replaced nor its declaration clash.
    await writeModule(catalog, MODULE, "v0.9.0", {
      "go.mod": GO_MOD,
      "atomixsymboltype.go": withSdk(ECHO_DRIVER, "var Plugin sdk.Driver = echo{}"),
      "main.go": "package main\n\nvar atomixsymboltype, atomixsymboltype1 = 1, 2\n",
    });
    await build(goKey(MODULE, "v0.9.0"));
    const wrong = await refusal("v0.9.1", {
      "AtomixSymbolType.go": "package main\n\nvar Plugin = 1\n",
      "main.go": "package main\n\ntype atomixsymboltype int\n",
    });
    assert.match(wrong.message, /: Plugin is a variable of type int, /);
  });

  it("refuses a descriptor that names a type its package does not have", async () => {
    const error = await refusal(
      "v0.10.0",
      { "main.go": withSdk(ECHO_DRIVER, "var Plugin sdk.Driver = echo{}") },
      exampleGoRuntime({ symbolType: `${SDK}.Nope` }),
    );
    assert.match(
      error.message,
      /package example\.com\/atomix\/sdk has no type Nope \(undefined: sdk\.Nope\)/,
    );
  });

  it("refuses a symbolType that is not a package path and an exported type name, naming the field", async () => {
    for (const symbolType of [
      "Driver",
      `*${SDK}.Driver`,
      `${SDK}.driver`,
      `${SDK}.Driver[int]`,
      `${SDK}"; import "os`,
      `../${SDK}.Driver`,
      "C.Driver",
    ]) {
      const error = await refusal("v0.1.0", {}, exampleGoRuntime({ symbolType }));
      assert.match(
        error.message,
        /symbolType: expected a package path and an exported type name in it, such as example\.com\/atomix\/sdk\.Driver/,
        symbolType,
      );
    }
  });
});
