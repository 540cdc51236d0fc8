import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { createPluginClient } from "atomix-plugins-client";
import { PullPluginRequest } from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { REPO_ROOT } from "./helpers/go-fixtures.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";
import { assertSettled, serverState } from "./helpers/server-state.js";

/** Debian's python3-grpcio installs into the system interpreter, not into one a version manager puts first on PATH. */
const PYTHON = "/usr/bin/python3";
const SIZE = 2 * 1024 * 1024;
const PULLS = 10_000;

interface StressReport {
  pulls: number;
  whole: number;
  cancelled: number;
  cancelledAtOnce: number;
  endedBeforeCancel: number;
  refused: number;
  connections: number;
  codes: Record<string, number>;
  seconds: number;
  failures: { pull: number; plan: string; error: string; messages: number }[];
}

const key: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "grpcio", version: "1.0.0" },
};

/**
 * grpcio (gRPC C-core 1.51, Debian's python3-grpcio) pulls ten thousand
 * times through 50 channels that share one connection, as grpcio's channels
 * to one address do, and cancels nineteen pulls in twenty at a random point
 * (test/fixtures/grpcio-pull-stress.py). That is far past nghttp2's stream
 * reset budget (1000 at once, 33 a second): without the server retiring
 * such connections, nghttp2 ended each with GOAWAY(INTERNAL_ERROR) about
 * every 5 s and calls on it failed UNAVAILABLE "GOAWAY received".
 *
 * What C-core itself saw is read from its log: every GOAWAY moves a
 * transport's state with reason "got_goaway" (GRPC_TRACE=connectivity_state),
 * and one with an error code is also logged as "Got goaway [code]".
 */
describe("pull streams from grpcio (C-core) under cancellation", () => {
  let server: ServerProcess;

  before(async () => {
    // Small chunks: each pull is 128 messages, so a cancel falls inside it while the server still sends.
    server = await startServerProcess({ args: ["--pull-policy", "never", "--chunk-size", "16384"] });
    const pusher = createPluginClient({ address: server.address });
    try {
      await pusher.push(key, [randomBytes(SIZE)]);
    } finally {
      pusher.close();
    }
  });

  after(async () => {
    await server?.stop();
  });

  it("ends no connection with an error code, fails no call, and gives back descriptors and memory", {
    timeout: 180_000,
  }, async (t) => {
    const baseline = await serverState(server);
    const request = Buffer.from(PullPluginRequest.encode(key).finish()).toString("hex");
    const child = spawn(
      PYTHON,
      [
        `${REPO_ROOT}/test/fixtures/grpcio-pull-stress.py`,
        ...["--addr", server.address, "--request", request, "--size", String(SIZE)],
        ...["--pulls", String(PULLS), "--channels", "50", "--connections", "1", "--concurrency", "100"],
        ...["--messages", "16", "--whole-every", "20"],
      ],
      {
        env: { ...process.env, GRPC_VERBOSITY: "debug", GRPC_TRACE: "connectivity_state" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    let goaways = 0;
    const errorGoaways: string[] = [];
    const otherErrors: string[] = [];
    createInterface({ input: child.stderr }).on("line", (line) => {
      if (line.includes("(got_goaway")) goaways += 1;
      const code = /Got goaway \[(\d+)\]/.exec(line)?.[1];
      if (code !== undefined) errorGoaways.push(code);
      // Python's own errors (no grpc module, a traceback) are not C-core log lines.
      if (!/^[DIEW]\d{4} /.test(line)) otherErrors.push(line);
    });
    const [exitCode] = (await once(child, "exit")) as [number | null];
    assert.equal(exitCode, 0, `the grpcio client failed:\n${otherErrors.join("\n")}`);
    const report = JSON.parse(stdout) as StressReport;
    const { failures, ...counts } = report;
    t.diagnostic(JSON.stringify({ ...counts, failures: failures.length, goaways, errorGoaways }));

    // Every GOAWAY C-core received said NO_ERROR: none is logged with a code.
    assert.deepEqual(errorGoaways, [], "C-core received GOAWAYs with these error codes");
    // The budget was reached, and the server retired connections instead.
    const retired = server.logs.filter((l) => String(l.msg).startsWith("connection retired"));
    assert.ok(retired.length > 0, "no connection reached the reset budget: the test proves nothing");
    assert.ok(goaways >= retired.length, `${goaways} GOAWAYs seen for ${retired.length} retirements`);
    assert.equal(report.connections, 1, "the channels did not share one connection");
    assert.deepEqual(
      server.logs.filter((l) => l.msg === "connection failed"),
      [],
    );
    // No call ended with anything but CANCELLED (by the client) or OK with
    // the whole artifact. A call UNAVAILABLE before its first message raced a
    // retiring connection's GOAWAY and was never run: C-core 1.51 does not
    // always retry those itself, the client does (as runtimes do), and they
    // stay rare.
    assert.deepEqual(failures, [], "pulls failed");
    assert.equal(report.whole, PULLS / 20);
    assert.equal(report.whole + report.cancelled + report.endedBeforeCancel, PULLS);
    assert.ok(report.refused < 100, `${report.refused} pulls were refused`);

    assert.equal(await checkHealth(server.address), "SERVING");
    await assertSettled(server, baseline);
  });
});
