import assert from "node:assert/strict";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { EXIT } from "../src/cli/cli-common.js";
import { EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { type CliRun, runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

function expectExit(run: CliRun, code: number): void {
  assert.equal(run.code, code, `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
}

interface Prewarm {
  state: string;
  previousVersion: string;
  planned: number;
  built: number;
  skipped: number;
  failed: number;
  failures: { plugin: string; buildVersion: string; code: string; message: string }[];
}

for (const kind of ["fs", "oci"] as const) {
  describe(`pre-warm over the ${kind} store`, () => {
    let work: string;
    let registry: RegistryProcess | undefined;
    let server: ServerProcess;
    const env = () => ({ ATOMIX_PLUGINS_SERVER: server.address });

    before(async () => {
      work = await mkdtemp(join(tmpdir(), "atomix-prewarm-"));
      if (kind === "oci") registry = await startRegistry();
      server = await startServerProcess({
        dataDir: join(work, "data"),
        args: [
          ...(registry ? ["--store", registry.storeUrl("atomix/prewarm")] : []),
          // One slot for callers, one for pre-warm.
          ...["--build-concurrency", "2", "--prewarm-slots", "1"],
        ],
      });
    });
    after(async () => {
      await server?.stop();
      await registry?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    it("builds the previous release's plugins for a new release, and a caller asking meanwhile gets one build", async () => {
      // What the fleet runs today on release 2.0.0.
      expectExit(await runCli(["compile", "counter@2.0.0", "-r", "2.0.0", "-b", "node20"], env()), EXIT.ok);
      await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(work, "2.1.0"), { recursive: true });
      expectExit(await runCli(["runtime", "add", join(work, "2.1.0")], env()), EXIT.ok);
      // A runtime of the rollout, while pre-warm runs.
      expectExit(await runCli(["compile", "counter@2.0.0", "-r", "2.1.0", "-b", "node20"], env()), EXIT.ok);

      let prewarm: Prewarm | undefined;
      const until = Date.now() + 120_000;
      while (Date.now() < until) {
        const inspected = await runCli(["runtime", "inspect", "2.1.0", "--json"], env());
        prewarm = JSON.parse(inspected.stdout).prewarm as Prewarm;
        if (prewarm.state === "done") break;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      assert.equal(prewarm?.state, "done", JSON.stringify(prewarm));
      assert.equal(prewarm?.previousVersion, "2.0.0");
      // The plugin, for each of the release's two build versions.
      assert.equal(prewarm?.planned, 2);
      assert.equal(prewarm.built + prewarm.skipped + prewarm.failed, 2);
      assert.equal(prewarm.failures.length, prewarm.failed);
      for (const failure of prewarm.failures)
        assert.ok(failure.code && failure.message, JSON.stringify(failure));
      const listed = await runCli(["ls", "--runtime", "2.1.0", "--json"], env());
      const stored = (
        JSON.parse(listed.stdout) as { plugin: { name: string }; runtime: { buildVersion: string } }[]
      ).map((m) => `${m.plugin.name}/${m.runtime.buildVersion}`);
      assert.ok(stored.includes("counter/node20"), stored.join(" "));

      // The caller's key was built once, whoever asked first.
      const builtLines = server.logs.filter(
        (line) => line.msg === "built" && line.key === "counter@2.0.0 for runtime 2.1.0/node20",
      );
      assert.equal(builtLines.length, 1);

      const text = await runCli(["runtime", "inspect", "2.1.0"], env());
      assert.match(text.stdout, /prewarm: +done \(plugins of 2\.0\.0\): 2\/2 done/);
      const metrics = await (await fetch(`http://${server.http}/metrics`)).text();
      const counted = [
        ...metrics.matchAll(/^atomix_plugins_prewarm_builds_total\{outcome="(\w+)"\} (\d+)$/gm),
      ];
      assert.equal(
        counted.reduce((sum, match) => sum + Number(match[2]), 0),
        2,
        metrics
          .split("\n")
          .filter((line) => line.includes("prewarm"))
          .join("\n"),
      );
      const page = await (await fetch(`http://${server.http}/`)).text();
      assert.match(page, /done: 2\/2/);
    });
  });
}
