import assert from "node:assert/strict";
import { createHash, createPublicKey } from "node:crypto";
import { cp, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { createPluginClient, type PluginClient } from "atomix-plugins-client";
import { buildKeyId } from "atomix-plugins-core/model/build-key";
import { keyId } from "atomix-plugins-core/model/provenance";
import { runProcess } from "../src/compiler/run-process.js";
import { generateSigningKey, type KeyAlgorithm } from "../src/provenance/signing-key.js";
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

const ADMIN_TOKEN = "go-runtime-test-token";

interface RuntimeReport {
  runtime: string;
  buildVersion: string;
  sdk: string;
  digest: string;
  size: number;
  path: string;
  verifiedBy: string;
  transferred: number;
  driver: string;
  results: string[];
}

/** The CLI's exit code for an artifact refused by its provenance, which the runtime shares. */
const EXIT_UNTRUSTED = 9;

interface KeyFiles {
  /** PEM private key, for serve --signing-key. */
  key: string;
  /** PEM public key, for the runtime's -trust-key. */
  pub: string;
  /** The hint bundles name the key by. */
  id: string;
}

/** A regular expression matching `text` literally. */
const literally = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A key pair as `atomix-plugins keygen -o <prefix>` writes it. */
async function keyFiles(prefix: string, algorithm: KeyAlgorithm): Promise<KeyFiles> {
  const pair = generateSigningKey(algorithm);
  await writeFile(`${prefix}.key`, pair.privateKeyPem, { mode: 0o600 });
  await writeFile(`${prefix}.pub`, pair.publicKeyPem);
  return { key: `${prefix}.key`, pub: `${prefix}.pub`, id: keyId(createPublicKey(pair.publicKeyPem)) };
}

/**
 * The proof that Go plugins built by the service load: the example runtime
 * (examples/go-runtime, a Go program with its own gRPC client) pulls a driver
 * from a real `atomix-plugins serve` process, checks x-plugin-digest,
 * plugin.Open()s it, looks up its symbol and calls it. The server signs
 * provenance, which the runtime checks with -trust-key.
 */
describe("Go runtime end to end", () => {
  let test: Awaited<ReturnType<typeof goTestDir>>;
  let goEnv: Record<string, string>;
  let runtimeBinary: string;
  let server: ServerProcess | undefined;
  let address: string;
  let client: PluginClient;
  let runs = 0;
  /** The server's signing key (ECDSA P-256) and one it does not hold (Ed25519). */
  let signer: KeyFiles;
  let stranger: KeyFiles;
  /** Drivers the runtime pulled and loaded, for pushing elsewhere. */
  const loaded = new Map<string, string>();

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
    // In the workspace of its go.work, which brings in the client package (clients/go).
    const built = await runProcess("go", ["build", "-trimpath", "-o", runtimeBinary, "."], {
      cwd: EXAMPLE_GO_RUNTIME,
      env: { ...goEnv, GOWORK: join(EXAMPLE_GO_RUNTIME, "go.work") },
    });
    assert.equal(built.exitCode, 0, `building the example runtime failed:\n${built.stderr}`);

    signer = await keyFiles(join(test.dir, "signing"), "ecdsa-p256");
    stranger = await keyFiles(join(test.dir, "stranger"), "ed25519");
    // A relative --data, as `npm start` gives: every path the Go toolchain
    // checks against the release's folder is compared resolved.
    server = await startServerProcess({
      cwd: test.dir,
      dataDir: "data",
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
        "--signing-key",
        signer.key,
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

  async function runtime(
    plugin: string,
    calls: string[],
    { build = GO_RELEASE, trust = [] as string[], at = address, parallel = 1 } = {},
  ) {
    const dir = join(test.dir, "pulled", String(++runs));
    await mkdir(dir, { recursive: true });
    const args = ["-server", at, "-version", "3.0.0", "-build", build, "-plugin", plugin, "-dir", dir];
    for (const call of calls) args.push("-call", call);
    for (const key of trust) args.push("-trust-key", key);
    if (parallel > 1) args.push("-parallel", String(parallel));
    const ran = await runProcess(runtimeBinary, args, { cwd: test.dir, env: { PATH: goEnv.PATH ?? "" } });
    if (ran.exitCode === 0) {
      const report = JSON.parse(ran.stdout) as RuntimeReport;
      loaded.set(report.driver, report.path);
    }
    return { ...ran, dir };
  }

  /** The runtime names the driver, its digest and the check that failed; nothing is left behind. */
  async function assertRefused(ran: Awaited<ReturnType<typeof runtime>>, plugin: string, reason: string) {
    assert.equal(ran.exitCode, EXIT_UNTRUSTED, ran.stderr);
    const what = literally(`runtime: refusing ${plugin} for runtime 3.0.0/${GO_RELEASE} (`);
    assert.match(ran.stderr, new RegExp(`^${what}sha256:[0-9a-f]{64}\\): ${literally(reason)}`));
    assert.equal(ran.stdout, "", "nothing was loaded");
    assert.deepEqual(await readdir(ran.dir), [], "the refused driver is not left in -dir");
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

  it("verifies the signed provenance of what it loads with -trust-key, several keys at once for rotation", async () => {
    const ran = await runtime(`${COUNTER}@v1.0.0`, ["4"], { trust: [stranger.pub, signer.pub] });
    assert.equal(ran.exitCode, 0, ran.stderr);
    const report = JSON.parse(ran.stdout) as RuntimeReport;
    assert.deepEqual(report.results, ["total=4 sdk=v1.1.0"]);
    assert.equal(report.digest, (await client.compile(goKey(COUNTER, "v1.0.0"))).digest);
  });

  it("refuses a driver whose provenance is signed by a key it does not trust, exit 9, and leaves no file", async () => {
    const ran = await runtime(`${COUNTER}@v1.0.0`, ["1"], { trust: [stranger.pub] });
    await assertRefused(
      ran,
      `${COUNTER}@v1.0.0`,
      `its provenance is signed by key ${signer.id}, which is not trusted (trusted: ${stranger.id})`,
    );
  });

  it("loads a driver that came through the Go module proxy, from 100 goroutines with one transfer", async () => {
    const ran = await runtime(`${ECHO}@v1.0.0`, ["hello"], { parallel: 100 });
    assert.equal(ran.exitCode, 0, ran.stderr);
    const report = JSON.parse(ran.stdout) as RuntimeReport;
    assert.deepEqual(report.results, ["hello"]);
    assert.equal(report.verifiedBy, "server");
    assert.ok(report.size > 0);
    assert.equal(report.transferred, report.size, "the 100 loads shared one transfer");
  });

  /** Builds the counter driver as a plugin with `flags`, pushes it as `version`, and has the runtime load it. */
  async function loadBuiltWith(version: string, flags: string[], alignSdk: boolean) {
    const module = join(test.dir, `counter-${version}`);
    await cp(join(EXAMPLE_PLUGINS, COUNTER, "v1.0.0"), module, { recursive: true });
    if (alignSdk) {
      const aligned = await runProcess("go", ["mod", "edit", "-require=example.com/atomix/sdk@v1.1.0"], {
        cwd: module,
        env: goEnv,
      });
      assert.equal(aligned.exitCode, 0, aligned.stderr);
    }
    const file = join(test.dir, `counter-${version}.so`);
    const built = await runProcess(
      "go",
      ["build", "-buildmode=plugin", "-buildvcs=false", ...flags, "-o", file, "."],
      { cwd: module, env: { ...goEnv, GOFLAGS: "-mod=mod" } },
    );
    assert.equal(built.exitCode, 0, built.stderr);
    await client.pushFile(goKey(COUNTER, version), file);
    return runtime(`${COUNTER}@${version}`, ["1"]);
  }

  /** The client package's gate refused the plugin, naming the field, before plugin.Open. */
  function assertIncompatible(
    ran: Awaited<ReturnType<typeof runtime>>,
    field: string,
    got: string,
    want: string,
  ) {
    assert.equal(ran.exitCode, 1, ran.stderr);
    assert.match(
      ran.stderr,
      new RegExp(
        `cannot load into this host: ${literally(field)} is "${got}", the host's is "${want}"; plugin\\.Open was not called`,
      ),
    );
    assert.doesNotMatch(ran.stderr, /different version of package/);
  }

  it("refuses the same driver built against its own go.mod before plugin.Open: alignment is what makes it load", async () => {
    // What a build without alignment produces: sdk v1.0.0 inside the plugin,
    // which plugin.Open would refuse with "plugin was built with a different
    // version of package example.com/atomix/sdk" (and refuse for good).
    const ran = await loadBuiltWith("v1.0.0-unaligned", ["-trimpath"], false);
    assertIncompatible(
      ran,
      "module example.com/atomix/sdk",
      "another version or build \\(package example\\.com/atomix/sdk differs: [0-9a-f]{16}, the host's [0-9a-f]{16}\\)",
      'v1\\.1\\.0 h1:[^"]+',
    );
  });

  it("refuses a driver built without -trimpath or with other compiler flags, naming the setting, before plugin.Open", async () => {
    assertIncompatible(await loadBuiltWith("v1.0.0-untrimmed", [], true), "-trimpath", "false", "true");
    const debug = await loadBuiltWith("v1.0.0-debug", ["-trimpath", "-gcflags=all=-N -l"], true);
    assertIncompatible(debug, "-gcflags", '[^"]*-l[^"]*', "regabi");
  });

  it("refuses a driver whose symbol is not of the type the runtime asks for", async () => {
    const module = join(test.dir, "wrongtype");
    await mkdir(module, { recursive: true });
    await writeFile(join(module, "go.mod"), "module example.com/atomix/drivers/wrongtype\n\ngo 1.19\n");
    await writeFile(
      join(module, "main.go"),
      "package main\n\n// Plugin builds and passes a check by name.\nvar Plugin = 1\n",
    );
    const file = join(test.dir, "wrongtype.so");
    const built = await runProcess(
      "go",
      ["build", "-buildmode=plugin", "-buildvcs=false", "-trimpath", "-o", file, "."],
      { cwd: module, env: goEnv },
    );
    assert.equal(built.exitCode, 0, built.stderr);
    await client.pushFile(goKey("example.com/atomix/drivers/wrongtype", "v1.0.0"), file);
    const ran = await runtime("example.com/atomix/drivers/wrongtype@v1.0.0", ["1"]);
    assert.equal(ran.exitCode, 1, ran.stderr);
    assert.match(ran.stderr, /: symbol Plugin is a \*int, not a sdk\.Driver \(nor a \*sdk\.Driver\)\n$/);
  });

  it("reports a driver that cannot build for the runtime with the compiler's error", async () => {
    const ran = await runtime(`${COUNTER}@v1.1.0`, ["1"]);
    assert.equal(ran.exitCode, 1);
    assert.match(ran.stderr, /: FailedPrecondition: /);
    assert.match(ran.stderr, /undefined: sdk\.Describe/);
  });

  /**
   * A second store, served first by a server that signs with an Ed25519 key,
   * then by one without a key, with the store forged in between by someone
   * who can write to it: bytes and manifest together, with the genuine
   * bundle copied under the new digest, or with its statement rewritten to
   * name the new bytes under the old signature.
   */
  describe("against another server's store", () => {
    let edKey: KeyFiles;
    let dataDir: string;
    let other: ServerProcess | undefined;
    const SIGNED = goKey(COUNTER, "v1.0.0-ed25519");
    const REWRITTEN = goKey(COUNTER, "v1.0.0-rewritten");
    // With an admin token: a signing server signs only what a known credential pushes.
    const serve = (args: string[] = []) =>
      startServerProcess({
        dataDir,
        args: ["--runtimes", join(EXAMPLES, "runtimes"), ...args],
        env: { ATOMIX_PLUGINS_ADMIN_TOKEN: ADMIN_TOKEN },
      });
    /** Replaces the artifact of `key` in the stopped server's store with `bytes`; returns the old digest. */
    const forge = async (key: ReturnType<typeof goKey>, bytes: Buffer, rewriteStatement: boolean) => {
      const hex = createHash("sha256").update(bytes).digest("hex");
      const id = buildKeyId(key);
      const index = join(dataDir, "index", id.slice(0, 2), `${id}.json`);
      const manifest = JSON.parse(await readFile(index, "utf8")) as { digest: string };
      await mkdir(join(dataDir, "blobs", "sha256", hex.slice(0, 2)), { recursive: true });
      await writeFile(join(dataDir, "blobs", "sha256", hex.slice(0, 2), hex), bytes);
      const genuine = join(dataDir, "provenance", id, `${manifest.digest.slice(7)}.json`);
      const bundle = JSON.parse(await readFile(genuine, "utf8")) as { dsseEnvelope: { payload: string } };
      if (rewriteStatement) {
        const payload = Buffer.from(bundle.dsseEnvelope.payload, "base64").toString();
        bundle.dsseEnvelope.payload = Buffer.from(payload.replace(manifest.digest.slice(7), hex)).toString(
          "base64",
        );
      }
      await writeFile(join(dataDir, "provenance", id, `${hex}.json`), JSON.stringify(bundle));
      await writeFile(
        index,
        JSON.stringify({ ...manifest, digest: `sha256:${hex}`, size: bytes.byteLength }),
      );
      return manifest.digest;
    };
    const push = async (key: ReturnType<typeof goKey>, file: string | undefined) => {
      assert.ok(file, "the driver was pulled by an earlier test");
      const pusher = createPluginClient({ address: other?.address ?? "", token: ADMIN_TOKEN });
      try {
        return await pusher.pushFile(key, file);
      } finally {
        pusher.close();
      }
    };

    before(async () => {
      edKey = await keyFiles(join(test.dir, "ed25519"), "ed25519");
      dataDir = join(test.dir, "other-data");
      other = await serve(["--signing-key", edKey.key]);
    });

    after(async () => {
      await other?.stop();
    });

    it("loads a pushed driver signed with an Ed25519 key", async () => {
      await push(SIGNED, loaded.get("counter"));
      await push(REWRITTEN, loaded.get("counter"));
      const ran = await runtime(`${COUNTER}@v1.0.0-ed25519`, ["7"], {
        at: other?.address,
        trust: [edKey.pub],
      });
      assert.equal(ran.exitCode, 0, ran.stderr);
      assert.deepEqual((JSON.parse(ran.stdout) as RuntimeReport).results, ["total=7 sdk=v1.1.0"]);
    });

    it("refuses a driver replaced in the store, which it loads when it verifies nothing", async () => {
      await other?.stop();
      const echo = loaded.get("echo");
      assert.ok(echo, "the echo driver was pulled by an earlier test");
      const bytes = await readFile(echo);
      const hex = createHash("sha256").update(bytes).digest("hex");
      const genuine = await forge(SIGNED, bytes, false);
      await forge(REWRITTEN, bytes, true);
      // The server caches manifests it has read: it starts again on the forged
      // store, from now on without a signing key (the next test pushes unsigned).
      other = await serve();

      const naive = await runtime(`${COUNTER}@v1.0.0-ed25519`, ["forged"], { at: other.address });
      assert.equal(naive.exitCode, 0, naive.stderr);
      assert.equal((JSON.parse(naive.stdout) as RuntimeReport).driver, "echo", "the forgery loads unchecked");

      const ran = await runtime(`${COUNTER}@v1.0.0-ed25519`, ["forged"], {
        at: other.address,
        trust: [edKey.pub],
      });
      await assertRefused(
        ran,
        `${COUNTER}@v1.0.0-ed25519`,
        `its provenance was signed for bytes with digest ${genuine}, and these bytes hash to sha256:${hex}`,
      );

      const rewritten = await runtime(`${COUNTER}@v1.0.0-rewritten`, ["forged"], {
        at: other.address,
        trust: [edKey.pub],
      });
      await assertRefused(
        rewritten,
        `${COUNTER}@v1.0.0-rewritten`,
        `the signature of its provenance does not verify with trusted key ${edKey.id}`,
      );
    });

    it("refuses a driver pushed to a server without a signing key", async () => {
      await push(goKey(COUNTER, "v1.0.0-unsigned"), loaded.get("counter"));
      const ran = await runtime(`${COUNTER}@v1.0.0-unsigned`, ["1"], {
        at: other?.address,
        trust: [edKey.pub, signer.pub],
      });
      await assertRefused(ran, `${COUNTER}@v1.0.0-unsigned`, "the server has no signed provenance for it: ");
    });
  });
});
