import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gcCommand, inspectCommand, lsCommand, rmCommand } from "../src/cli/admin-commands.js";
import { EXIT } from "../src/cli/cli-common.js";
import { compileCommand } from "../src/cli/compile-command.js";
import { serveCommand } from "../src/cli/serve-command.js";
import { pullCommand, pushCommand } from "../src/cli/transfer-commands.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { type CliRun, runCli } from "./helpers/run-cli.js";

const RUNTIME = ["--runtime", "1.0.0", "--build", "node20"];

function expectExit(run: CliRun, code: number, stderr?: RegExp): void {
  assert.equal(run.code, code, `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
  if (stderr) assert.match(run.stderr.trimEnd(), stderr);
  if (run.stderr.startsWith("atomix-plugins: ")) {
    assert.equal(run.stderr.trimEnd().split("\n").length, 1, `one error line: ${run.stderr}`);
  }
}

describe("the command line", () => {
  let server: TestServer;
  let work: string;
  let artifact: Buffer;
  let digest: string;
  let artifactFile: string;
  const env = () => ({ ATOMIX_PLUGINS_SERVER: server.address });

  before(async () => {
    server = await startTestServer();
    work = await mkdtemp(join(tmpdir(), "atomix-cli-"));
    artifact = randomBytes(300_000);
    digest = `sha256:${createHash("sha256").update(artifact).digest("hex")}`;
    artifactFile = join(work, "counter.mjs");
    await writeFile(artifactFile, artifact);
  });
  after(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  it("push, ls, inspect, compile, pull, rm and gc print JSON under --json", async () => {
    const push = await runCli(
      ["push", "counter@1.0.0", artifactFile, ...RUNTIME, "--annotation", "team=storage", "--json"],
      env(),
    );
    expectExit(push, EXIT.ok);
    const manifest = JSON.parse(push.stdout);
    assert.deepEqual(
      { ...manifest, createdAt: undefined },
      {
        plugin: { name: "counter", version: "1.0.0" },
        runtime: { version: "1.0.0", buildVersion: "node20" },
        digest,
        size: artifact.length,
        mediaType: "application/octet-stream",
        createdAt: undefined,
        annotations: { team: "storage" },
      },
    );
    assert.equal(push.stderr, "", "no progress when stderr is not a terminal");

    const ls = await runCli(["ls", "--json", "--server", server.address]);
    expectExit(ls, EXIT.ok);
    assert.deepEqual(JSON.parse(ls.stdout), [manifest]);

    const inspect = await runCli(["inspect", "counter@1.0.0", ...RUNTIME, "--json"], env());
    expectExit(inspect, EXIT.ok);
    assert.deepEqual(JSON.parse(inspect.stdout), manifest);

    const compile = await runCli(["compile", "counter@1.0.0", ...RUNTIME, "--json"], env());
    expectExit(compile, EXIT.ok);
    const compiled = JSON.parse(compile.stdout);
    assert.equal(compiled.reference, `atomix-plugin://1.0.0/node20/counter@1.0.0@${digest}`);
    assert.equal(compiled.digest, digest);

    const to = join(work, "pulled.mjs");
    const pull = await runCli(["pull", compiled.reference, "-o", to, "--json"], env());
    expectExit(pull, EXIT.ok);
    const pulled = JSON.parse(pull.stdout);
    assert.equal(pulled.digest, digest);
    assert.equal(pulled.size, artifact.length);
    assert.equal(pulled.fromCache, false);
    assert.deepEqual(pulled.attempts, [{ offset: 0, bytes: artifact.length }]);
    assert.deepEqual(await readFile(to), artifact);

    const removed = await runCli(["rm", "counter@1.0.0", ...RUNTIME, "--json"], env());
    expectExit(removed, EXIT.ok);
    assert.equal(JSON.parse(removed.stdout).removed, true);

    const gc = await runCli(["gc", "--json"], env());
    expectExit(gc, EXIT.ok);
    assert.deepEqual(JSON.parse(gc.stdout), { removedBlobs: 1, freedBytes: artifact.length });
  });

  it("prints human tables and lines without --json", async () => {
    await runCli(["push", "@acme/driver@2.0.0", artifactFile, ...RUNTIME], env());
    const ls = await runCli(["ls"], env());
    expectExit(ls, EXIT.ok);
    const [header, row] = ls.stdout.trimEnd().split("\n");
    assert.match(header ?? "", /^PLUGIN\s+RUNTIME\s+BUILD\s+SIZE\s+DIGEST\s+CREATED$/);
    assert.match(row ?? "", /^@acme\/driver@2\.0\.0\s+1\.0\.0\s+node20\s+293\.0 KiB\s+sha256:[0-9a-f]{12}…/);
    const inspect = await runCli(["inspect", "@acme/driver@2.0.0", ...RUNTIME], env());
    assert.match(inspect.stdout, new RegExp(`^digest:\\s+${digest}$`, "m"));
    const cache = join(work, "cache");
    const first = await runCli(
      ["pull", "@acme/driver@2.0.0", ...RUNTIME, "-o", join(work, "d1.mjs"), "--cache", cache],
      env(),
    );
    assert.match(
      first.stdout,
      /^pulled @acme\/driver@2\.0\.0 for runtime 1\.0\.0\/node20 to .*d1\.mjs: sha256:/,
    );
    const second = await runCli(["pull", "@acme/driver@2.0.0", ...RUNTIME, "-o", join(work, "d2.mjs")], {
      ...env(),
      ATOMIX_PLUGINS_CACHE: cache,
    });
    assert.match(second.stdout, /\(from cache\)$/m);
    const gc = await runCli(["gc"], env());
    assert.match(gc.stdout, /^removed 0 blobs, freed 0 B$/m);
  });

  it("exits with a code per class of failure, one line naming the gRPC code", async () => {
    await runCli(["push", "exits@1.0.0", artifactFile, ...RUNTIME], env());
    expectExit(
      await runCli(["pull", "--bogus"], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: .* \(run with --help for usage\)$/,
    );
    expectExit(
      await runCli(["ls", "--bogus"], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: unknown option '--bogus'/,
    );
    expectExit(
      await runCli(["ls", "--limit", "0"], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: --limit "0" must be a whole number of at least 1/,
    );
    expectExit(
      await runCli(["ls", "--page-token", "bm90LWEtdG9rZW4"], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: the page token is not one this server gave out/,
    );
    const usageJson = await runCli(["ls", "--bogus", "--json"], env());
    expectExit(usageJson, EXIT.usage);
    assert.deepEqual(JSON.parse(usageJson.stderr), {
      error: {
        code: "INVALID_ARGUMENT",
        message: "unknown option '--bogus' (run with --help for usage)",
        exitCode: 2,
      },
    });
    expectExit(
      await runCli(["frobnicate"], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: unknown command/,
    );
    expectExit(
      await runCli(["serve", "--chunk-size", "abc"], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: invalid configuration: --chunk-size: /,
    );
    expectExit(
      await runCli(
        ["serve", "--listen", server.address, "--http", "off", "--data", join(work, "second")],
        env(),
      ),
      EXIT.unavailable,
      /^atomix-plugins: UNAVAILABLE: cannot listen on 127\.0\.0\.1:\d+ \(gRPC\): the address is in use/,
    );
    // The targets the client library takes, the CLI takes too.
    expectExit(await runCli(["ls", "--server", `dns:${server.address}`]), EXIT.ok);
    expectExit(
      await runCli(["ls", "--server", `unix:${join(work, "nobody.sock")}`, "--timeout", "5"]),
      EXIT.unavailable,
      /UNAVAILABLE/,
    );
    expectExit(
      await runCli(["ls", "--server", "http://x"]),
      EXIT.usage,
      /must be host:port, dns:host:port or unix:\/path/,
    );
    const version = await runCli(["--version"], env());
    expectExit(version, EXIT.ok);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
    expectExit(
      await runCli(["pull", "exits@1.0.0", "-o", join(work, "x")], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: exits@1\.0\.0: --runtime and --build are required/,
    );
    expectExit(
      await runCli(["inspect", "exits@latest", ...RUNTIME], env()),
      EXIT.usage,
      /^atomix-plugins: INVALID_ARGUMENT: plugin\.version "latest" must be a semantic version/,
    );
    expectExit(
      await runCli(["inspect", "absent@1.0.0", ...RUNTIME], env()),
      EXIT.notFound,
      /^atomix-plugins: NOT_FOUND: no artifact stored for absent@1\.0\.0 for runtime 1\.0\.0\/node20$/,
    );
    expectExit(await runCli(["rm", "absent@1.0.0", ...RUNTIME], env()), EXIT.notFound, /NOT_FOUND/);
    expectExit(await runCli(["rm", "absent@1.0.0", ...RUNTIME, "--force"], env()), EXIT.ok);
    expectExit(
      await runCli(
        ["pull", "exits@1.0.0", ...RUNTIME, "-o", join(work, "x"), "--digest", `sha256:${"a".repeat(64)}`],
        env(),
      ),
      EXIT.failedPrecondition,
      /^atomix-plugins: FAILED_PRECONDITION: the server holds sha256:[0-9a-f]{64} for exits@1\.0\.0/,
    );
    expectExit(
      await runCli(["ls", "--server", "127.0.0.1:1"]),
      EXIT.unavailable,
      /^atomix-plugins: UNAVAILABLE: /,
    );
    expectExit(
      await runCli(["pull", "exits@1.0.0", ...RUNTIME, "-o", join(work, "x"), "--retries", "1"], {
        ATOMIX_PLUGINS_SERVER: "127.0.0.1:1",
      }),
      EXIT.unavailable,
      /^atomix-plugins: UNAVAILABLE: exits@1\.0\.0 for runtime 1\.0\.0\/node20: gave up after 2 attempts/,
    );
    const json = await runCli(["inspect", "absent@1.0.0", ...RUNTIME, "--json"], env());
    expectExit(json, EXIT.notFound);
    assert.equal(json.stdout, "");
    assert.deepEqual(JSON.parse(json.stderr), {
      error: {
        code: "NOT_FOUND",
        message: "no artifact stored for absent@1.0.0 for runtime 1.0.0/node20",
        exitCode: EXIT.notFound,
      },
    });
  });

  it("reports a tampered stored blob as DATA_LOSS and writes nothing", async () => {
    await runCli(["push", "tampered@1.0.0", artifactFile, ...RUNTIME], env());
    const hex = digest.slice("sha256:".length);
    const stored = join(server.dataDir, "blobs", "sha256", hex.slice(0, 2), hex);
    const tampered = Buffer.from(artifact);
    tampered[1234] = (tampered[1234] ?? 0) ^ 1;
    await writeFile(stored, tampered);
    const dir = await mkdtemp(join(work, "tampered-"));
    const run = await runCli(["pull", "tampered@1.0.0", ...RUNTIME, "-o", join(dir, "t.mjs")], env());
    expectExit(run, EXIT.dataLoss, new RegExp(`^atomix-plugins: DATA_LOSS: .*server announced ${digest}`));
    assert.deepEqual(await readdir(dir), []);
    await writeFile(stored, artifact);
  });

  it("sends the admin token from the environment or a file; without one push is UNAUTHENTICATED", async () => {
    const guarded = await startTestServer({ adminToken: "s3cret" });
    try {
      const push = ["push", "guarded@1.0.0", artifactFile, ...RUNTIME, "--server", guarded.address];
      expectExit(
        await runCli(push),
        EXIT.denied,
        /^atomix-plugins: UNAUTHENTICATED: the admin API needs a token/,
      );
      expectExit(await runCli(push, { ATOMIX_PLUGINS_TOKEN: "guess" }), EXIT.denied, /PERMISSION_DENIED/);
      expectExit(await runCli(push, { ATOMIX_PLUGINS_TOKEN: "s3cret" }), EXIT.ok);
      const tokenFile = join(work, "token");
      await writeFile(tokenFile, "s3cret\n");
      expectExit(await runCli(["gc", "--server", guarded.address, "--token-file", tokenFile]), EXIT.ok);
    } finally {
      await guarded.close();
    }
  });

  it("every command has --help with examples", async () => {
    const commands = [
      pullCommand(),
      compileCommand(),
      pushCommand(),
      lsCommand(),
      inspectCommand(),
      rmCommand(),
      gcCommand(),
      serveCommand(),
    ];
    for (const command of commands) {
      let help = "";
      command.configureOutput({ writeOut: (text) => (help += text) });
      command.outputHelp();
      assert.match(help, /Examples?:\n {2}atomix-plugins /, `${command.name()} --help`);
    }
    const top = await runCli(["--help"]);
    expectExit(top, EXIT.ok);
    for (const command of commands) {
      assert.match(top.stdout, new RegExp(`^ {2}${command.name()}\\b`, "m"));
    }
    expectExit(await runCli(["pull", "--help"]), EXIT.ok);
  });
});
