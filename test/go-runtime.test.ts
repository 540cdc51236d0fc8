import assert from "node:assert/strict";
import { cp, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { createPluginClient, type PluginClient } from "../src/client/index.js";
import { runProcess } from "../src/compiler/run-process.js";
import {
  COUNTER,
  ECHO,
  EXAMPLE_GO_RUNTIME,
  EXAMPLE_GOPROXY,
  EXAMPLE_PLUGINS,
  EXAMPLES,
  GO_RELEASE,
  goKey,
  goTestDir,
} from "./helpers/go-fixtures.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

interface RuntimeReport {
  runtime: string;
  buildVersion: string;
  sdk: string;
  digest: string;
  size: number;
  driver: string;
  results: string[];
}

/**
 * The proof that Go plugins built by the service load: the example runtime
 * (examples/go-runtime, a Go program with its own gRPC client) pulls a driver
 * from a real `atomix-plugins serve` process, checks x-plugin-digest,
 * plugin.Open()s it, looks up its symbol and calls it.
 */
describe("Go runtime end to end", () => {
  let test: Awaited<ReturnType<typeof goTestDir>>;
  let goEnv: Record<string, string>;
  let runtimeBinary: string;
  let server: ServerProcess | undefined;
  let address: string;
  let client: PluginClient;
  let runs = 0;

  before(async () => {
    test = await goTestDir();
    goEnv = {
      PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
      HOME: test.dir,
      GOCACHE: join(test.cacheDir, "build"),
      GOMODCACHE: join(test.cacheDir, "mod"),
      GOPROXY: pathToFileURL(EXAMPLE_GOPROXY).href,
      GOSUMDB: "off",
      GOFLAGS: "-mod=readonly",
      GOENV: "off",
      GOWORK: "off",
      GOTOOLCHAIN: "local",
      CGO_ENABLED: "1",
    };
    // Built as the compiler builds plugins: the same Go, -trimpath.
    runtimeBinary = join(test.dir, "runtime");
    const built = await runProcess("go", ["build", "-trimpath", "-o", runtimeBinary, "."], {
      cwd: EXAMPLE_GO_RUNTIME,
      env: goEnv,
    });
    assert.equal(built.exitCode, 0, `building the example runtime failed:\n${built.stderr}`);

    server = await startServerProcess({
      dataDir: join(test.dir, "data"),
      args: [
        "--runtimes",
        join(EXAMPLES, "runtimes"),
        "--sources",
        EXAMPLE_PLUGINS,
        "--go-proxy",
        EXAMPLE_GOPROXY,
        "--go-cache",
        test.cacheDir,
        "--build-concurrency",
        "1",
      ],
    });
    address = server.address;
    client = createPluginClient({ address });
  });

  after(async () => {
    client?.close();
    await server?.stop();
    await test.remove();
  });

  async function runtime(plugin: string, calls: string[], build = GO_RELEASE) {
    const dir = join(test.dir, "pulled", String(++runs));
    await mkdir(dir, { recursive: true });
    const args = ["-server", address, "-version", "3.0.0", "-build", build, "-plugin", plugin, "-dir", dir];
    for (const call of calls) args.push("-call", call);
    return runProcess(runtimeBinary, args, { cwd: test.dir, env: { PATH: goEnv.PATH ?? "" } });
  }

  it("pulls, loads and calls a driver whose sdk requirement was aligned to the runtime's", async () => {
    // The pull misses, so the server builds it first (pull-through).
    const ran = await runtime(`${COUNTER}@v1.0.0`, ["2", "3"]);
    assert.equal(ran.exitCode, 0, ran.stderr);
    const report = JSON.parse(ran.stdout) as RuntimeReport;
    assert.equal(report.driver, "counter");
    assert.equal(report.buildVersion, GO_RELEASE);
    // The driver's go.mod asks for sdk v1.0.0; it runs on the runtime's v1.1.0.
    assert.deepEqual(report.results, ["total=2 sdk=v1.1.0", "total=5 sdk=v1.1.0"]);
    assert.equal(report.sdk, "v1.1.0");

    const reference = await client.compile(goKey(COUNTER, "v1.0.0"));
    assert.equal(report.digest, reference.digest, "the runtime checked the digest CompilePlugin names");
    const manifest = await client.inspect(goKey(COUNTER, "v1.0.0"));
    assert.equal(manifest.annotations["dev.atomix.go.alignment"], "example.com/atomix/sdk v1.0.0=>v1.1.0");
  });

  it("loads a driver that came through the Go module proxy", async () => {
    const ran = await runtime(`${ECHO}@v1.0.0`, ["hello"]);
    assert.equal(ran.exitCode, 0, ran.stderr);
    assert.deepEqual((JSON.parse(ran.stdout) as RuntimeReport).results, ["hello"]);
  });

  it("cannot load the same driver built against its own go.mod: alignment is what makes it load", async () => {
    // What a build without alignment produces: sdk v1.0.0 inside the plugin.
    const module = join(test.dir, "unaligned");
    await cp(join(EXAMPLE_PLUGINS, COUNTER, "v1.0.0"), module, { recursive: true });
    const unaligned = join(test.dir, "unaligned.so");
    const built = await runProcess(
      "go",
      ["build", "-buildmode=plugin", "-trimpath", "-buildvcs=false", "-o", unaligned, "."],
      { cwd: module, env: goEnv },
    );
    assert.equal(built.exitCode, 0, built.stderr);
    const key = goKey(COUNTER, "v1.0.0-unaligned");
    await client.pushFile(key, unaligned);

    const ran = await runtime(`${COUNTER}@v1.0.0-unaligned`, ["1"]);
    assert.equal(ran.exitCode, 1);
    assert.match(
      ran.stderr,
      /plugin was built with a different version of package example\.com\/atomix\/sdk/,
    );
  });

  it("reports a driver that cannot build for the runtime with the compiler's error", async () => {
    const ran = await runtime(`${COUNTER}@v1.1.0`, ["1"]);
    assert.equal(ran.exitCode, 1);
    assert.match(ran.stderr, /code = FailedPrecondition/);
    assert.match(ran.stderr, /undefined: sdk\.Describe/);
  });
});
