import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { EXIT } from "../src/cli/cli-common.js";
import { EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { type CliRun, runCli } from "./helpers/run-cli.js";

/**
 * The mistakes a newcomer makes in their first twenty minutes, each
 * answered by the CLI, as a user runs it, with one line that says what
 * happened and what to change, the right code and the right exit code.
 */

const RUNTIME = ["-r", "1.0.0", "-b", "node20"];
const TLS_DIR = fileURLToPath(new URL("../../test/fixtures/tls/", import.meta.url));

/** One error line, `atomix-plugins: CODE: message`, and the exit code; returns the message. */
function oneLine(run: CliRun, exitCode: number, code: string): string {
  assert.equal(run.code, exitCode, `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
  const lines = run.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line: ${run.stderr}`);
  const prefix = `atomix-plugins: ${code}: `;
  assert.ok(lines[0]?.startsWith(prefix), `${prefix}...: ${run.stderr}`);
  return (lines[0] as string).slice(prefix.length);
}

/** Whatever the line says, it is not the socket's or OpenSSL's words. */
function noInternals(message: string): void {
  assert.doesNotMatch(
    message,
    /pending stream|ECONNREFUSED|ENOTFOUND|EISDIR|ENOENT|wrong version number|Protocol error|SSL routines|NaN/,
  );
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port));
  });
}

describe("a newcomer's mistakes, one line each", () => {
  let server: TestServer;
  let tlsServer: TestServer;
  let work: string;
  /** A port nothing listens on (it was taken, then let go). */
  let closedPort: number;
  /** Takes connections and never says a byte. */
  let silent: Server;
  let silentPort: number;
  const taken: Socket[] = [];
  let artifact: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-mistakes-"));
    server = await startTestServer({ config: { httpListen: "127.0.0.1:0" } });
    tlsServer = await startTestServer({
      config: { tlsCert: join(TLS_DIR, "server.pem"), tlsKey: join(TLS_DIR, "server-key.pem") },
    });
    const closed = createServer();
    closedPort = await listen(closed);
    await new Promise((resolve) => closed.close(resolve));
    silent = createServer((socket) => {
      taken.push(socket);
      socket.on("error", () => {});
    });
    silentPort = await listen(silent);
    artifact = join(work, "counter.mjs");
    await writeFile(artifact, "export const driver = {};\n");
    const push = await runCli(["push", "counter@1.0.0", artifact, ...RUNTIME, "-s", server.address]);
    assert.equal(push.code, 0, push.stderr);
  });
  after(async () => {
    for (const socket of taken) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
    await server.close();
    await tlsServer.close();
    await rm(work, { recursive: true, force: true });
  });

  describe("reaching the server", () => {
    it("no server at the address: UNAVAILABLE, says so and how to start one (ls and pull alike)", async () => {
      const address = `127.0.0.1:${closedPort}`;
      for (const args of [
        ["ls"],
        ["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "never.mjs"), "--retries", "0"],
      ]) {
        const message = oneLine(await runCli([...args, "-s", address]), EXIT.unavailable, "UNAVAILABLE");
        assert.match(
          message,
          new RegExp(`no server at ${address} \\(connection refused\\): is it running\\?`),
        );
        assert.match(message, /atomix-plugins serve.*--server/);
        noInternals(message);
      }
    });

    it("a host name that does not resolve: UNAVAILABLE, naming the name", async () => {
      const message = oneLine(
        await runCli(["ls", "-s", "no-such-host.invalid:5679"]),
        EXIT.unavailable,
        "UNAVAILABLE",
      );
      assert.match(
        message,
        /^no server at no-such-host\.invalid:5679: the name no-such-host\.invalid does not resolve/,
      );
      assert.match(message, /--server/);
      noInternals(message);
    });

    it("a server that takes the connection and says nothing: DEADLINE_EXCEEDED at --timeout, asking whether it is gRPC (ls and pull alike)", async () => {
      for (const args of [["ls"], ["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "never.mjs")]]) {
        const message = oneLine(
          await runCli([...args, "-s", `127.0.0.1:${silentPort}`, "--timeout", "1"]),
          EXIT.unavailable,
          "DEADLINE_EXCEEDED",
        );
        assert.match(
          message,
          /^127\.0\.0\.1:\d+ took the connection but said nothing in HTTP\/2 before the deadline: is it a gRPC server\?/,
        );
      }
    });

    it("a connection that is never accepted: DEADLINE_EXCEEDED at --timeout, saying it was still connecting", async () => {
      // A listening socket that never accepts, its queue full: the kernel drops further SYNs.
      const python: ChildProcess = spawn("python3", [
        "-c",
        "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(120)",
      ]);
      try {
        const port = await new Promise<number>((resolve, reject) => {
          python.stdout?.once("data", (data: Buffer) => resolve(Number(data.toString().trim())));
          python.once("error", reject);
        });
        // The one connection the queue holds.
        const filler = await new Promise<Socket>((resolve) => {
          const socket = connect(port, "127.0.0.1", () => resolve(socket));
        });
        try {
          const message = oneLine(
            await runCli(["ls", "-s", `127.0.0.1:${port}`, "--timeout", "1"]),
            EXIT.unavailable,
            "DEADLINE_EXCEEDED",
          );
          assert.match(message, new RegExp(`^no answer from 127\\.0\\.0\\.1:${port}: still connecting`));
          assert.match(message, /firewall/);
        } finally {
          filler.destroy();
        }
      } finally {
        python.kill();
      }
    });

    it("the catalog's HTTP port given as the gRPC port: says it answers HTTP/1.1 and names the gRPC port (ls and pull alike)", async () => {
      const http = server.service.http;
      for (const args of [["ls"], ["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "never.mjs")]]) {
        const message = oneLine(await runCli([...args, "-s", http]), EXIT.unavailable, "UNAVAILABLE");
        assert.equal(
          message,
          `${http} answers HTTP/1.1, not gRPC: it is the catalog page's port of a server whose gRPC port is ${server.address}; give that port with --server`,
        );
      }
    });

    it("another HTTP/1.1 server given as the gRPC one: says so, and where gRPC usually is", async () => {
      const other = createHttpServer((_request, response) => response.end("hello\n"));
      const port = await listen(other as unknown as Server);
      try {
        for (const args of [["ls"], ["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "never.mjs")]]) {
          const message = oneLine(
            await runCli([...args, "-s", `127.0.0.1:${port}`]),
            EXIT.unavailable,
            "UNAVAILABLE",
          );
          assert.match(
            message,
            new RegExp(
              `^127\\.0\\.0\\.1:${port} answers HTTP/1\\.1, not gRPC: is it the catalog page's port\\?`,
            ),
          );
          assert.match(
            message,
            /The gRPC port is another \(5679 unless the server's --listen says otherwise\)/,
          );
          noInternals(message);
        }
      } finally {
        other.closeAllConnections();
        await new Promise((resolve) => other.close(resolve));
      }
    });

    it("--tls against a plaintext server: says it speaks plaintext, drop --tls (ls and pull alike)", async () => {
      for (const args of [["ls"], ["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "never.mjs")]]) {
        const message = oneLine(
          await runCli([...args, "-s", server.address, "--tls"]),
          EXIT.unavailable,
          "UNAVAILABLE",
        );
        assert.match(message, /speaks plaintext, not TLS; drop --tls/);
        noInternals(message);
      }
    });

    it("plaintext against a TLS server: says it speaks TLS, add --tls (ls and pull alike)", async () => {
      for (const args of [["ls"], ["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "never.mjs")]]) {
        const message = oneLine(
          await runCli([...args, "-s", tlsServer.address]),
          EXIT.unavailable,
          "UNAVAILABLE",
        );
        assert.equal(
          message,
          `${tlsServer.address} speaks TLS, not plaintext; add --tls (and --ca if its certificate is not from a public CA)`,
        );
      }
    });
  });

  describe("local files", () => {
    it("push of a folder or a missing file: INVALID_ARGUMENT naming it, exit 2", async () => {
      const folder = oneLine(
        await runCli(["push", "counter@1.0.0", work, ...RUNTIME, "-s", server.address]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.equal(folder, `the artifact file "${work}" is a folder, not a file`);
      const missing = join(work, "nope.mjs");
      const absent = oneLine(
        await runCli(["push", "counter@1.0.0", missing, ...RUNTIME, "-s", server.address]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.equal(absent, `the artifact file "${missing}" does not exist`);
    });

    it("-o into a missing folder, onto a folder, --cache onto a file: INVALID_ARGUMENT naming it, and nothing is pulled", async () => {
      const into = join(work, "no-folder", "counter.mjs");
      const message = oneLine(
        await runCli(["pull", "counter@1.0.0", ...RUNTIME, "-o", into, "-s", server.address]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.equal(
        message,
        `-o "${into}": the folder "${join(work, "no-folder")}" does not exist; create it first`,
      );
      const onto = oneLine(
        await runCli(["pull", "counter@1.0.0", ...RUNTIME, "-o", work, "-s", server.address]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.match(onto, /is a folder: give the name of the file to write in it/);
      const cache = oneLine(
        await runCli([
          "pull",
          "counter@1.0.0",
          ...RUNTIME,
          "-o",
          join(work, "x.mjs"),
          "--cache",
          artifact,
          "-s",
          server.address,
        ]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.equal(cache, `--cache "${artifact}" is a file, not a folder`);
      assert.equal(server.pulls.length, 0, "nothing was asked of the server");
    });

    it("--trust-key, --ca, --cert and --token-file that are missing or folders: INVALID_ARGUMENT naming the flag", async () => {
      const missing = join(work, "missing.pem");
      const cases: [string[], string][] = [
        [["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "x.mjs"), "--trust-key"], "--trust-key"],
        [["ls", "--ca"], "--ca"],
        [["ls", "--key", join(TLS_DIR, "client-key.pem"), "--cert"], "--cert"],
        [["ls", "--token-file"], "--token-file"],
      ];
      for (const [args, flag] of cases) {
        for (const [path, problem] of [
          [missing, "does not exist"],
          [work, "is a folder, not a file"],
        ] as const) {
          const message = oneLine(
            await runCli([...args, path, "-s", server.address]),
            EXIT.usage,
            "INVALID_ARGUMENT",
          );
          assert.equal(message, `${flag} "${path}" ${problem}`);
        }
      }
    });
  });

  describe("runtime add", () => {
    it("a missing directory says it does not exist, not that its name is no version", async () => {
      const message = oneLine(
        await runCli(["runtime", "add", "./nope", "-s", server.address]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.equal(message, `the directory "./nope" does not exist`);
    });

    it("a directory without runtime.json says so", async () => {
      const dir = join(work, "2.5.0");
      await mkdir(dir, { recursive: true });
      const message = oneLine(
        await runCli(["runtime", "add", dir, "-s", server.address]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.match(message, new RegExp(`^"${dir}" holds no runtime\\.json: `));
    });

    it("a directory not named by a version asks for --runtime", async () => {
      const dir = join(work, "my-runtime");
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "runtime.json"), "{}");
      const message = oneLine(
        await runCli(["runtime", "add", dir, "-s", server.address]),
        EXIT.usage,
        "INVALID_ARGUMENT",
      );
      assert.match(
        message,
        /^the directory's name "my-runtime" is not a version: give the release's version with --runtime/,
      );
    });
  });

  describe("numeric options", () => {
    it("say what they take, exit 2: --chunk-size, --timeout, --limit, --retries, --max-bytes, --cache-max-bytes", async () => {
      const pull = ["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "x.mjs"), "-s", server.address];
      const cases: [string[], string][] = [
        [
          ["serve", "--chunk-size", "abc", "--listen", "127.0.0.1:0", "--http", "off"],
          "invalid configuration: --chunk-size: must be a positive number of bytes (such as 65536 or 64KiB), at most 4194240",
        ],
        [
          ["ls", "--timeout", "-1", "-s", server.address],
          '--timeout must be a positive number of seconds (such as 30 or 0.5), not "-1"',
        ],
        [["ls", "--limit", "x", "-s", server.address], '--limit must be a positive whole number, not "x"'],
        [
          [...pull, "--retries", "many"],
          '--retries must be a whole number, 0 or more, at most 9999, not "many"',
        ],
        [
          [...pull, "--max-bytes", "lots"],
          '--max-bytes must be a number of bytes, 0 or more (such as 65536 or 64KiB), not "lots"',
        ],
        [
          [...pull, "--cache", join(work, "cache"), "--cache-max-bytes", "1x"],
          '--cache-max-bytes must be a number of bytes, 0 or more (such as 65536 or 64KiB), not "1x"',
        ],
      ];
      for (const [args, expected] of cases) {
        assert.equal(oneLine(await runCli(args), EXIT.usage, "INVALID_ARGUMENT"), expected);
      }
    });

    it("a timeout takes a fraction of a second: --timeout 0.25 is no usage error", async () => {
      const ls = await runCli(["ls", "--timeout", "0.25", "-s", server.address]);
      // Answered within it, or not (a loaded machine): either way the flag was taken.
      assert.ok([EXIT.ok, EXIT.unavailable].includes(ls.code as 0 | 5), `exit ${ls.code}: ${ls.stderr}`);
    });

    it("a size takes a unit: --max-bytes 1KiB pulls, 1B refuses the artifact", async () => {
      const to = join(work, "sized.mjs");
      const ok = await runCli([
        "pull",
        "counter@1.0.0",
        ...RUNTIME,
        "-o",
        to,
        "-s",
        server.address,
        "--max-bytes",
        "1KiB",
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      const small = await runCli([
        "pull",
        "counter@1.0.0",
        ...RUNTIME,
        "-o",
        to,
        "-s",
        server.address,
        "--max-bytes",
        "1B",
      ]);
      assert.equal(small.code, EXIT.resourceExhausted, small.stderr);
    });
  });

  describe("an untrusted artifact (exit 9)", () => {
    let signing: TestServer;
    before(async () => {
      for (const name of ["signer", "stranger"]) {
        const keygen = await runCli(["keygen", "-o", join(work, name)]);
        assert.equal(keygen.code, 0, keygen.stderr);
      }
      signing = await startTestServer({
        adminToken: "mistakes-token",
        config: { signingKey: join(work, "signer.key") },
      });
      const push = await runCli(["push", "counter@1.0.0", artifact, ...RUNTIME, "-s", signing.address], {
        ATOMIX_PLUGINS_TOKEN: "mistakes-token",
      });
      assert.equal(push.code, 0, push.stderr);
    });
    after(() => signing.close());

    it("unsigned: UNTRUSTED, one short sentence saying what to do", async () => {
      const run = await runCli([
        "pull",
        "counter@1.0.0",
        ...RUNTIME,
        "-o",
        join(work, "unsigned.mjs"),
        "-s",
        server.address,
        "--trust-key",
        join(work, "signer.pub"),
      ]);
      const message = oneLine(run, EXIT.untrusted, "UNTRUSTED");
      assert.equal(
        message,
        "counter@1.0.0 for runtime 1.0.0/node20 carries no signed provenance (the server stored it unsigned: built without --signing-key, or pushed without an admin token); pull it from a server that signs (serve --signing-key), or without --trust-key to take it unverified",
      );
    });

    it("signed by another key: names the signer's key and how many were trusted", async () => {
      const run = await runCli([
        "pull",
        "counter@1.0.0",
        ...RUNTIME,
        "-o",
        join(work, "stranger.mjs"),
        "-s",
        signing.address,
        "--trust-key",
        join(work, "stranger.pub"),
      ]);
      const message = oneLine(run, EXIT.untrusted, "UNTRUSTED");
      assert.match(
        message,
        /^counter@1\.0\.0 for runtime 1\.0\.0\/node20: its provenance is signed by key [0-9a-f]{16}…, not by the 1 trusted key \([0-9a-f]{16}…\); pull from a server that signs with a trusted key, or trust its key with --trust-key$/,
      );
      assert.ok(message.length < 250, `short: ${message.length} characters`);
      const json = await runCli([
        ...["pull", "counter@1.0.0", ...RUNTIME, "-o", join(work, "stranger.mjs"), "--json"],
        ...["-s", signing.address, "--trust-key", join(work, "stranger.pub")],
      ]);
      assert.equal(json.code, EXIT.untrusted);
      assert.deepEqual(JSON.parse(json.stderr), {
        error: { code: "UNTRUSTED", message, exitCode: EXIT.untrusted },
      });
    });
  });

  describe("small things", () => {
    let building: TestServer;
    before(async () => {
      building = await startTestServer({
        config: { runtimes: [EXAMPLE_RUNTIMES_DIR], httpListen: "127.0.0.1:0" },
      });
    });
    after(() => building.close());

    it("counts are said in proper English: gave up after 1 attempt", async () => {
      const message = oneLine(
        await runCli([
          "pull",
          "counter@1.0.0",
          ...RUNTIME,
          "-o",
          join(work, "x.mjs"),
          "--retries",
          "0",
          "-s",
          `127.0.0.1:${closedPort}`,
        ]),
        EXIT.unavailable,
        "UNAVAILABLE",
      );
      assert.match(message, /: gave up after 1 attempt: no server at/);
    });

    it("logs reads as text: each step named, its report as words, no raw JSON", async () => {
      const compile = await runCli([
        "compile",
        "counter@1.0.0",
        "-r",
        "2.0.0",
        "-b",
        "node20",
        "-s",
        building.address,
      ]);
      assert.equal(compile.code, EXIT.failedPrecondition, compile.stderr);
      const logs = await runCli([
        "logs",
        "counter@1.0.0",
        "-r",
        "2.0.0",
        "-b",
        "node20",
        "-s",
        building.address,
      ]);
      assert.equal(logs.code, 0, logs.stderr);
      const output = logs.stdout.slice(logs.stdout.indexOf("\noutput:\n"));
      assert.match(output, /^\$ node unpack-step\.js \(exit 0\)$/m);
      assert.match(output, /^report: ok=true files=\d+ bytes=\d+ integrity=sha512-/m);
      assert.doesNotMatch(output, /^\{/m, "no raw JSON line");
      assert.doesNotMatch(output, /outside the module/);
    });

    it("a plugin no source has: NOT_FOUND naming the catalog it looked in", async () => {
      const message = oneLine(
        await runCli(["compile", "nowhere@1.0.0", ...RUNTIME, "-s", building.address]),
        EXIT.notFound,
        "NOT_FOUND",
      );
      assert.match(message, /looked in the source catalog "…\/examples\/plugins"/);
    });

    it("--token-file shows only where the admin token means something, and runtime --help has examples", async () => {
      for (const command of [["push"], ["rm"], ["gc"], ["runtime", "add"]]) {
        const help = await runCli([...command, "--help"]);
        assert.match(help.stdout, /--token-file/, command.join(" "));
      }
      for (const command of [["pull"], ["ls"], ["inspect"], ["compile"], ["logs"], ["runtime", "ls"]]) {
        const help = await runCli([...command, "--help"]);
        assert.doesNotMatch(help.stdout, /--token-file/, command.join(" "));
      }
      const runtime = await runCli(["runtime", "--help"]);
      assert.match(runtime.stdout, /Examples:\n {2}atomix-plugins runtime add /);
    });

    it("the catalog page links provenance only for an artifact that has some", async () => {
      const push = await runCli(["push", "unsigned@1.0.0", artifact, ...RUNTIME, "-s", building.address]);
      assert.equal(push.code, 0, push.stderr);
      const page = await (await fetch(`http://${building.service.http}/`)).text();
      const row = page.slice(page.indexOf("unsigned@1.0.0"));
      assert.match(row.slice(0, row.indexOf("</tr>")), /pushed · unsigned</);
      assert.doesNotMatch(page, /href="\/provenance\?plugin=unsigned/);
    });
  });
});
