import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gcCommand, inspectCommand, lsCommand, rmCommand } from "../src/cli/admin-commands.js";
import { EXIT } from "../src/cli/cli-common.js";
import { compileCommand } from "../src/cli/compile-command.js";
import { serveCommand } from "../src/cli/serve-command.js";
import { pullCommand, pushCommand } from "../src/cli/transfer-commands.js";
import { EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { type CliRun, runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

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
        heldHere: true,
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
    const report = JSON.parse(gc.stdout);
    assert.deepEqual(
      { removedBlobs: report.removedBlobs, freedBytes: report.freedBytes },
      { removedBlobs: 1, freedBytes: artifact.length },
    );
    assert.deepEqual(
      report.caches.map((cache: { name: string }) => cache.name),
      ["go-build", "go-modules", "build-records"],
    );
  });

  it("prints human tables and lines without --json", async () => {
    await runCli(["push", "@acme/driver@2.0.0", artifactFile, ...RUNTIME], env());
    const ls = await runCli(["ls"], env());
    expectExit(ls, EXIT.ok);
    const [header, row] = ls.stdout.trimEnd().split("\n");
    assert.match(header ?? "", /^PLUGIN\s+RUNTIME\s+BUILD\s+SIZE\s+DIGEST\s+CREATED\s+HERE$/);
    // The embedded store holds every artifact's bytes on the server's disk.
    assert.match(
      row ?? "",
      /^@acme\/driver@2\.0\.0\s+1\.0\.0\s+node20\s+293\.0 KiB\s+sha256:[0-9a-f]{12}….*\syes$/,
    );
    const inspect = await runCli(["inspect", "@acme/driver@2.0.0", ...RUNTIME], env());
    assert.match(inspect.stdout, new RegExp(`^digest:\\s+${digest}$`, "m"));
    assert.match(inspect.stdout, /^held here:\s+yes$/m);
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
      /^atomix-plugins: INVALID_ARGUMENT: --limit must be a positive whole number, not "0"/,
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

/** What a terminal acts on: C0 controls but newline and tab, DEL, C1 controls, bidirectional overrides. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is looked for
const ACTING = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

function assertInert(text: string, what: string): void {
  const found = ACTING.exec(text);
  assert.equal(
    found,
    null,
    `${what} holds U+${found?.[0].charCodeAt(0).toString(16)} raw:\n${JSON.stringify(text)}`,
  );
}

describe("the command line shows what a build or a push wrote as text, never as control", () => {
  // Clear the screen, set the clipboard (OSC 52), erase the line and back up, CSI as one C1 byte, a bidi override.
  const CLEAR = "\x1b[2J\x1b[H";
  const CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07";
  const HOSTILE = `evil${CLEAR}${CLIPBOARD}\x1b[2K\b\b\u009b31m\u202emod`;
  const SHOWN = [
    "\\x1b[2J\\x1b[H",
    "\\x1b]52;c;ZXZpbA==\\x07",
    "\\x1b[2K\\x08\\x08",
    "\\x9b31m",
    "\\u202emod",
  ];
  const PLUGIN = ["hostile-text@1.0.0", "-r", "1.0.0", "-b", "node20"];
  let work: string;
  let server: ServerProcess;
  const env = () => ({ ATOMIX_PLUGINS_SERVER: server.address });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-cli-text-"));
    const dir = join(work, "plugins", "hostile-text", "1.0.0");
    await mkdir(join(dir, "src"), { recursive: true });
    await writeFile(
      join(dir, "package.json"),
      JSON.stringify({
        name: "hostile-text",
        version: "1.0.0",
        type: "module",
        source: "src/index.ts",
        peerDependencies: { "@atomix/runtime-sdk": ">=1.0.0" },
      }),
    );
    // TypeScript quotes a type package it cannot find as it is written (esbuild, reading no comment, bundles):
    // the escape sequences reach the build's message raw.
    await writeFile(
      join(dir, "src", "index.ts"),
      `/// <reference types="${HOSTILE}" />\nimport type { Driver } from "@atomix/runtime-sdk";\n\nexport const driver: Driver = {\n  name: "hostile-text",\n  handle() {\n    return "ok";\n  },\n};\n`,
    );
    server = await startServerProcess({
      args: [
        "--sources",
        join(work, "plugins"),
        "--runtimes",
        EXAMPLE_RUNTIMES_DIR,
        "--build-concurrency",
        "1",
      ],
    });
  });
  after(async () => {
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("compile prints a build error's escape sequences escaped, and --json keeps them exact", async () => {
    const json = await runCli(["compile", ...PLUGIN, "--json"], env());
    expectExit(json, EXIT.failedPrecondition);
    assertInert(json.stderr, "compile --json");
    const error = JSON.parse(json.stderr).error;
    assert.equal(error.code, "FAILED_PRECONDITION");
    assert.ok(error.message.includes(HOSTILE), error.message);

    // The server's log quotes the message too: its JSON lines hold the same data, inert on a terminal.
    assertInert(server.stdout(), "the server's log");
    const logged = server.logs.find((line) => line.msg === "build failed");
    assert.ok(String(logged?.error).includes(HOSTILE), String(logged?.error));

    const text = await runCli(["compile", ...PLUGIN], env());
    expectExit(
      text,
      EXIT.failedPrecondition,
      /^atomix-plugins: FAILED_PRECONDITION: hostile-text@1\.0\.0 does not type-check/,
    );
    assertInert(text.stderr, "compile");
    for (const shown of SHOWN) assert.ok(text.stderr.includes(shown), `${shown} in ${text.stderr}`);
  });

  it("logs prints the build's message and output escaped, their lines kept, and --json keeps them exact", async () => {
    const json = await runCli(["logs", ...PLUGIN, "--json"], env());
    expectExit(json, EXIT.ok);
    assertInert(json.stdout, "logs --json");
    const record = JSON.parse(json.stdout);
    assert.ok(record.message.includes(HOSTILE), record.message);
    assert.ok(record.output.includes(HOSTILE), record.output);

    const text = await runCli(["logs", ...PLUGIN], env());
    expectExit(text, EXIT.ok);
    assertInert(text.stdout, "logs");
    assert.match(text.stdout, /^outcome: +failure \(FAILED_PRECONDITION\)$/m);
    assert.match(text.stdout, /^output:$/m);
    assert.match(text.stdout, /^\$ node tsc .*\(exit 1\)$/m, "the output's lines stay lines");
    for (const shown of SHOWN) assert.ok(text.stdout.includes(shown), `${shown} in ${text.stdout}`);
  });

  it("inspect prints a pushed annotation as one line of text, and --json keeps it exact", async () => {
    const file = join(work, "artifact.mjs");
    await writeFile(file, "export const driver = {};\n");
    const forged = `ok\nplugin:     forged@6.6.6\r\x1b[2K${CLIPBOARD}\u202e`;
    const runtime = ["-r", "1.0.0", "-b", "node22"];
    expectExit(
      await runCli(["push", "annotated@1.0.0", file, ...runtime, "--annotation", `note=${forged}`], env()),
      EXIT.ok,
    );

    const json = await runCli(["inspect", "annotated@1.0.0", ...runtime, "--json"], env());
    expectExit(json, EXIT.ok);
    assertInert(json.stdout, "inspect --json");
    assert.equal(JSON.parse(json.stdout).annotations.note, forged);

    const text = await runCli(["inspect", "annotated@1.0.0", ...runtime], env());
    expectExit(text, EXIT.ok);
    assertInert(text.stdout, "inspect");
    assert.doesNotMatch(text.stdout, /^plugin: +forged/m);
    assert.match(
      text.stdout,
      /^ {2}note {2}ok\\nplugin: {5}forged@6\.6\.6\\r\\x1b\[2K\\x1b\]52;c;ZXZpbA==\\x07\\u202e$/m,
    );
  });
});
