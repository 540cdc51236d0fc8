import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { runCli, runCliOnTerminal } from "./helpers/run-cli.js";

const RUNTIME = ["--runtime", "1.0.0", "--build", "node20"];
const ESCAPE = "\x1b";

describe("progress output", () => {
  let server: TestServer;
  let work: string;
  let file: string;
  const env = () => ({ ATOMIX_PLUGINS_SERVER: server.address });

  before(async () => {
    server = await startTestServer();
    work = await mkdtemp(join(tmpdir(), "atomix-progress-"));
    file = join(work, "big.bin");
    await writeFile(file, randomBytes(8 * 1024 * 1024));
  });
  after(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  it("on a terminal: a bar with bytes, rate and ETA for push and pull, a spinner for compile", async () => {
    const push = await runCliOnTerminal(["push", "big@1.0.0", file, ...RUNTIME], env());
    assert.equal(push.code, 0, push.stdout);
    assert.ok(push.stdout.includes(ESCAPE), "terminal control sequences");
    assert.match(
      push.stdout,
      /push big@1\.0\.0 .*\d+% \| [\d.]+ (B|KiB|MiB)\/8\.0 MiB \| [\d.]+ (B|KiB|MiB)\/s \| ETA /,
    );
    assert.match(push.stdout, /pushed big@1\.0\.0 for runtime 1\.0\.0\/node20: sha256:/);

    const pull = await runCliOnTerminal(
      ["pull", "big@1.0.0", ...RUNTIME, "-o", join(work, "tty.bin")],
      env(),
    );
    assert.equal(pull.code, 0, pull.stdout);
    assert.match(
      pull.stdout,
      /pull big@1\.0\.0 .*\d+% \| [\d.]+ (B|KiB|MiB)\/8\.0 MiB \| [\d.]+ (B|KiB|MiB)\/s \| ETA /,
    );

    const compile = await runCliOnTerminal(["compile", "big@1.0.0", ...RUNTIME], env());
    assert.equal(compile.code, 0, compile.stdout);
    // The spinner redraws its line: carriage return, erase line, frame, label, elapsed time.
    assert.ok(compile.stdout.includes(`\r${ESCAPE}[K`), JSON.stringify(compile.stdout));
    assert.match(compile.stdout, /. compiling big@1\.0\.0 for runtime 1\.0\.0\/node20 \d+\.\ds/);
    assert.match(compile.stdout, /compiled big@1\.0\.0 for runtime 1\.0\.0\/node20 in \d+\.\ds/);
    assert.match(compile.stdout, /^atomix-plugin:\/\/1\.0\.0\/node20\/big@1\.0\.0@sha256:[0-9a-f]{64}\r?$/m);
  });

  it("not on a terminal: no bar, no spinner, no control characters", async () => {
    const push = await runCli(["push", "big@2.0.0", file, ...RUNTIME], env());
    const pull = await runCli(["pull", "big@2.0.0", ...RUNTIME, "-o", join(work, "pipe.bin")], env());
    const compile = await runCli(["compile", "big@2.0.0", ...RUNTIME], env());
    for (const run of [push, pull, compile]) {
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stderr, "");
      assert.ok(!run.stdout.includes(ESCAPE) && !run.stdout.includes("\r"), JSON.stringify(run.stdout));
      assert.equal(run.stdout.trimEnd().split("\n").length, 1);
    }
    assert.match(compile.stdout, /^atomix-plugin:\/\/1\.0\.0\/node20\/big@2\.0\.0@sha256:[0-9a-f]{64}\n$/);
  });
});
