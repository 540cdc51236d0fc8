import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { cp, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { runProcess } from "../src/compiler/run-process.js";
import { goTestDir, REPO_ROOT } from "./helpers/go-fixtures.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

/** Where Debian's golang-*-dev packages put Go sources (grpc-go among them), in GOPATH layout. */
const DEBIAN_GOPATH = "/usr/share/gocode";

interface StressReport {
  pulls: number;
  whole: number;
  cancelled: number;
  refused: number;
  bytes: number;
  seconds: number;
  failures: { pull: number; name: string; error: string; received: number }[];
}

const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

/**
 * A grpc-go client (Debian's grpc-go, test/fixtures/go-pull-stress) pulls
 * tens of thousands of times over two connections and cancels every other
 * pull at a random moment. Clients that cancel that much spend nghttp2's
 * stream reset budget (1000 at once, 33 a second), and nghttp2 then ends the
 * connection with GOAWAY(INTERNAL_ERROR): grpc-go reported the streams on it
 * INTERNAL "unexpected EOF" or RST_STREAM INTERNAL_ERROR, grpcio logged the
 * GOAWAY. The server closes such connections gracefully before that.
 */
describe("pull streams from grpc-go under cancellation", () => {
  let test: Awaited<ReturnType<typeof goTestDir>>;
  let client: string;
  let server: ServerProcess;

  before(async () => {
    test = await goTestDir();
    const gopath = join(test.dir, "gopath");
    const pkg = join(gopath, "src/gopullstress");
    await mkdir(pkg, { recursive: true });
    await cp(join(REPO_ROOT, "test/fixtures/go-pull-stress/main.go"), join(pkg, "main.go"));
    client = join(test.dir, "go-pull-stress");
    const built = await runProcess("go", ["build", "-o", client, "."], {
      cwd: pkg,
      env: {
        PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
        HOME: test.dir,
        GOCACHE: join(test.cacheDir, "build"),
        GOPATH: `${gopath}:${DEBIAN_GOPATH}`,
        GO111MODULE: "off",
        GOFLAGS: "",
        GOPROXY: "off",
        GOENV: "off",
        GOTOOLCHAIN: "local",
      },
    });
    assert.equal(built.exitCode, 0, `building the grpc-go client failed:\n${built.stderr}`);

    // Small chunks: every pull is several messages, so a cut can fall inside one.
    server = await startServerProcess({ args: ["--pull-policy", "never", "--chunk-size", "16384"] });
    const pusher = createPluginClient({ address: server.address });
    try {
      await pusher.push(key("tiny"), [randomBytes(100)]);
      await pusher.push(key("small"), [randomBytes(40_000)]);
      await pusher.push(key("medium"), [randomBytes(262_147)]);
    } finally {
      pusher.close();
    }
  });

  after(async () => {
    await server?.stop();
    await test?.remove();
  });

  it("ends every pull it did not cancel whole, and keeps its connections", async (t) => {
    const run = await runProcess(
      client,
      [
        ...["-addr", server.address],
        ...["-name", "small", "-name", "medium", "-name", "tiny"],
        ...["-pulls", "20000", "-conns", "2", "-concurrency", "48"],
        ...["-cancel-every", "2", "-cancel-within", "3ms"],
      ],
      { cwd: test.dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, timeoutMs: 120_000 },
    );
    assert.equal(run.exitCode, 0, run.stderr);
    const report = JSON.parse(run.stdout) as StressReport;
    const { failures, ...counts } = report;
    t.diagnostic(JSON.stringify({ ...counts, failures: failures.length }));
    const kinds = new Map<string, number>();
    for (const failure of failures) kinds.set(failure.error, (kinds.get(failure.error) ?? 0) + 1);
    assert.equal(failures.length, 0, `pulls failed: ${JSON.stringify(Object.fromEntries(kinds))}`);
    assert.equal(report.whole + report.cancelled, 20_000);
    assert.ok(report.whole >= 10_000, `only ${report.whole} pulls were not cancelled`);
    assert.ok(report.cancelled >= 2_000, `only ${report.cancelled} pulls were cancelled in time`);
    // Cancelling that fast spends nghttp2's budget: the server must have
    // closed connections gracefully, and never failed one.
    const recycled = server.logs.filter((l) => String(l.msg).startsWith("connection retired"));
    assert.ok(recycled.length > 0, "no connection reached the reset budget: the test proves nothing");
    assert.deepEqual(
      server.logs.filter((l) => l.msg === "connection failed"),
      [],
    );
    // Refused: UNAVAILABLE before any byte, a new stream that raced a
    // retiring connection's GOAWAY; the client retried them, as runtimes do.
    assert.ok(report.refused < 1_000, `${report.refused} pulls were refused`);
  });
});
