import assert from "node:assert/strict";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import ssri from "ssri";
import { c as createTar } from "tar";
import { EXIT } from "../src/cli/cli-common.js";
import { EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { REPO_ROOT } from "./helpers/go-fixtures.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

/**
 * `runtime rm` while a build for that release is under way: the build's
 * artifact would record a release nobody can inspect or build again. The
 * build is held at its source's download (an npm registry over real HTTP
 * that answers the tarball only when told) so that the removal comes in
 * the middle of it, every time.
 */
describe("runtime rm during a build for the release", () => {
  let work: string;
  let registry: Server;
  let server: ServerProcess;
  let tarballAsked!: () => void;
  const asked = new Promise<void>((resolve) => {
    tarballAsked = resolve;
  });
  let releaseTarball!: () => void;
  const released = new Promise<void>((resolve) => {
    releaseTarball = resolve;
  });
  const env = () => ({ ATOMIX_PLUGINS_SERVER: server.address });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-rm-race-"));
    // The example counter 2.0.0, published to the registry as "gated".
    const pkg = join(work, "publish", "package");
    await mkdir(pkg, { recursive: true });
    await cp(join(REPO_ROOT, "examples", "plugins", "counter", "2.0.0"), pkg, { recursive: true });
    const manifest = JSON.parse(await readFile(join(pkg, "package.json"), "utf8"));
    await writeFile(join(pkg, "package.json"), JSON.stringify({ ...manifest, name: "gated" }));
    const file = join(work, "gated.tgz");
    await createTar({ gzip: true, cwd: join(work, "publish"), file, portable: true }, ["package"]);
    const tarball = await readFile(file);
    const integrity = ssri.fromData(tarball, { algorithms: ["sha512"] }).toString();

    registry = createServer((request, response) => {
      const origin = `http://127.0.0.1:${(registry.address() as AddressInfo).port}`;
      if (request.url === "/gated") {
        const dist = { tarball: `${origin}/gated.tgz`, integrity };
        response.writeHead(200, { "content-type": "application/json" });
        response.end(
          JSON.stringify({ name: "gated", versions: { "2.0.0": { name: "gated", version: "2.0.0", dist } } }),
        );
      } else if (request.url === "/gated.tgz") {
        tarballAsked();
        void released.then(() => response.writeHead(200).end(tarball));
      } else {
        response.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => registry.listen(0, "127.0.0.1", resolve));
    const origin = `http://127.0.0.1:${(registry.address() as AddressInfo).port}`;
    server = await startServerProcess({
      listen: "127.0.0.1:0",
      args: ["--npm-registry", origin, "--prewarm", "off"],
    });
    await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(work, "2.7.0"), { recursive: true });
  });

  after(async () => {
    releaseTarball();
    await server?.stop();
    registry?.closeAllConnections();
    await new Promise((resolve) => registry?.close(resolve));
    await rm(work, { recursive: true, force: true });
  });

  it("is refused while the build runs, and the release stays for the artifact the build stores", async () => {
    const added = await runCli(["runtime", "add", join(work, "2.7.0")], env());
    assert.equal(added.code, EXIT.ok, added.stderr);
    const key = ["gated@2.0.0", "-r", "2.7.0", "-b", "node20"];
    const compiled = runCli(["compile", ...key], env());
    await asked;

    const during = await runCli(["runtime", "rm", "2.7.0"], env());
    releaseTarball();
    const built = await compiled;
    assert.equal(built.code, EXIT.ok, built.stderr);

    assert.equal(
      during.code,
      EXIT.failedPrecondition,
      `runtime rm during the build: ${during.stdout}${during.stderr}`,
    );
    assert.match(during.stderr, /a build for runtime 2\.7\.0 is under way/);
    const inspected = await runCli(["runtime", "inspect", "2.7.0"], env());
    assert.equal(inspected.code, EXIT.ok, "the release the stored artifact records is still registered");
    const after = await runCli(["runtime", "rm", "2.7.0"], env());
    assert.equal(after.code, EXIT.failedPrecondition, after.stderr);
    assert.match(after.stderr, /recorded by 1 stored artifact/);
  });
});
