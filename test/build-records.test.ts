import assert from "node:assert/strict";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { EXIT } from "../src/cli/cli-common.js";
import { EXAMPLE_PLUGINS_DIR, EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { type CliRun, runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

const BROKEN = ["broken-types@1.0.0", "-r", "1.0.0", "-b", "node20"];

function expectExit(run: CliRun, code: number): void {
  assert.equal(run.code, code, `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
}

/** Log lines of `server` with message `msg` about a build key that starts with `plugin`. */
const logged = (server: ServerProcess, msg: string, plugin: string) =>
  server.logs.filter((line) => line.msg === msg && String(line.key).startsWith(plugin)).length;

for (const kind of ["fs", "oci"] as const) {
  describe(`build records over the ${kind} store`, () => {
    let work: string;
    let registry: RegistryProcess | undefined;
    let server: ServerProcess;
    const env = () => ({ ATOMIX_PLUGINS_SERVER: server.address });
    const args = () => [
      ...(registry ? ["--store", registry.storeUrl("atomix/records")] : []),
      ...["--sources", join(work, "plugins"), "--runtimes", EXAMPLE_RUNTIMES_DIR, "--build-concurrency", "1"],
    ];

    before(async () => {
      work = await mkdtemp(join(tmpdir(), "atomix-records-"));
      // A catalog of its own: one test fixes a plugin in it.
      await cp(EXAMPLE_PLUGINS_DIR, join(work, "plugins"), { recursive: true });
      if (kind === "oci") registry = await startRegistry();
      server = await startServerProcess({ dataDir: join(work, "data-a"), args: args() });
    });
    after(async () => {
      await server?.stop();
      await registry?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    it("a failing build asked twice runs the toolchain once, and both answers carry the same code and message", async () => {
      const first = await runCli(["compile", ...BROKEN], env());
      expectExit(first, EXIT.failedPrecondition);
      assert.match(first.stderr, /FAILED_PRECONDITION: broken-types@1\.0\.0 does not type-check/);
      const second = await runCli(["compile", ...BROKEN], env());
      expectExit(second, EXIT.failedPrecondition);
      assert.equal(second.stderr, first.stderr);
      assert.equal(logged(server, "build failed", "broken-types@1.0.0"), 1);
      assert.equal(logged(server, "answered with the remembered build failure", "broken-types@1.0.0"), 1);
    });

    it("logs prints the last build's record and the toolchain's output, naming no host path", async () => {
      const run = await runCli(["logs", ...BROKEN, "--json"], env());
      expectExit(run, EXIT.ok);
      const record = JSON.parse(run.stdout);
      assert.equal(record.outcome, "failure");
      assert.equal(record.code, "FAILED_PRECONDITION");
      assert.match(record.message, /^broken-types@1\.0\.0 does not type-check against runtime 1\.0\.0/);
      assert.match(record.runtimeDigest, /^sha256:[0-9a-f]{64}$/);
      assert.ok(record.durationMs > 0);
      assert.match(record.output, /\$ node tsc .*\(exit 1\)/);
      assert.match(record.output, /src\/index\.ts\(\d+,\d+\): error TS2322/);
      for (const hostPath of [work, process.cwd(), tmpdir()]) {
        assert.ok(!record.output.includes(hostPath), `the output names ${hostPath}:\n${record.output}`);
      }
      const text = await runCli(["logs", ...BROKEN], env());
      expectExit(text, EXIT.ok);
      assert.match(text.stdout, /outcome: +failure \(FAILED_PRECONDITION\)/);
      assert.match(text.stdout, /^output:$/m);

      const never = await runCli(["logs", "@atomix/echo@1.0.0", "-r", "2.0.0", "-b", "node22"], env());
      expectExit(never, EXIT.notFound);
    });

    it("builds again once the plugin's source changed, despite the remembered failure", async () => {
      const source = join(work, "plugins", "broken-types", "1.0.0", "src", "index.ts");
      await writeFile(
        source,
        'import type { Driver } from "@atomix/runtime-sdk";\n\nexport const driver: Driver = {\n  name: "broken-types",\n  handle(request) {\n    return String(request.key.length);\n  },\n};\n',
      );
      expectExit(await runCli(["compile", ...BROKEN], env()), EXIT.ok);
      const record = JSON.parse((await runCli(["logs", ...BROKEN, "--json"], env())).stdout);
      assert.equal(record.outcome, "success");
      assert.equal(record.code, "OK");
      assert.match(record.artifactDigest, /^sha256:[0-9a-f]{64}$/);
      assert.match(record.toolchain["dev.atomix.toolchain.version"], /typescript/);
    });

    it("the catalog page lists recent builds, each linked to its log, and the runtime releases", async () => {
      const page = await (await fetch(`http://${server.http}/`)).text();
      assert.match(page, /<h2 id="runtimes">Runtime releases<\/h2>/);
      assert.match(page, /<h2 id="builds">Recent builds<\/h2>/);
      const link = /href="(\/build-log\?[^"]*plugin=broken-types[^"]*)"/.exec(page)?.[1];
      assert.ok(link, page);
      const log = await fetch(`http://${server.http}${link.replaceAll("&amp;", "&")}`);
      assert.equal(log.status, 200);
      const body = await log.text();
      assert.match(body, /broken-types@1\.0\.0 for runtime 1\.0\.0\/node20/);
      assert.match(body, /success \(OK\)/);
    });

    it("records outlive the server that wrote them", async () => {
      await server.stop();
      // The embedded store: the same data directory. The OCI store: another replica, nothing on its disk.
      server = await startServerProcess({
        dataDir: join(work, kind === "fs" ? "data-a" : "data-b"),
        args: args(),
      });
      const record = JSON.parse((await runCli(["logs", ...BROKEN, "--json"], env())).stdout);
      assert.equal(record.outcome, "success");
    });
  });
}
