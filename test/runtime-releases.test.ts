import assert from "node:assert/strict";
import { cp, lstat, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { Code, type PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { RegisterRuntimeRequest } from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { ANNOTATIONS } from "atomix-plugins-core/model/annotations";
import { EXIT } from "../src/cli/cli-common.js";
import { EXAMPLE_RUNTIMES_DIR } from "../src/config.js";
import { runtimeReleaseTag } from "../src/store/oci/oci-runtime-release-store.js";
import { createGrpcClients, fromServiceError } from "./helpers/grpc-js-clients.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { type CliRun, runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

const TOKEN = "release-manager-token";

function expectExit(run: CliRun, code: number): void {
  assert.equal(run.code, code, `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
}

/** A RegisterRuntime call made of raw messages, as a hostile client would send them; its error. */
async function rawRegister(address: string, messages: RegisterRuntimeRequest[]): Promise<PluginError> {
  const clients = createGrpcClients({ address, token: TOKEN });
  try {
    return await new Promise<PluginError>((resolve, reject) => {
      const call = clients.admin.registerRuntime(new Metadata(), (error) => {
        if (error) resolve(fromServiceError(error));
        else reject(new Error("the upload was accepted"));
      });
      for (const message of messages) call.write(message);
      call.end();
    });
  } finally {
    clients.close();
  }
}

const header = (version: string): RegisterRuntimeRequest => ({
  part: { $case: "header", value: { version } },
});
const file = (path: string, size: number): RegisterRuntimeRequest => ({
  part: { $case: "file", value: { path, size, executable: false } },
});
const data = (bytes: string | Buffer): RegisterRuntimeRequest => ({
  part: { $case: "data", value: Buffer.from(bytes) },
});
const json = (value: unknown) => Buffer.from(JSON.stringify(value));

/** Every file below `dir` with its bytes, paths relative to it. */
async function filesOf(dir: string): Promise<[string, Buffer][]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files: [string, Buffer][] = [];
  for (const entry of entries.filter((e) => e.isFile())) {
    const full = join(entry.parentPath, entry.name);
    files.push([relative(dir, full), await readFile(full)]);
  }
  return files.sort(([a], [b]) => (a < b ? -1 : 1));
}

/** What a folder holds, to compare before and after: paths, sizes and change times. */
async function folderState(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const state = await Promise.all(
    entries.map(async (entry) => {
      const full = join(entry.parentPath, entry.name);
      const info = await lstat(full);
      return `${relative(dir, full)} ${info.size} ${info.mtimeMs} ${info.ino}`;
    }),
  );
  return state.sort();
}

/** Asks `probe` until it is true or 10 s pass. */
async function eventually(probe: () => Promise<boolean>): Promise<boolean> {
  const until = Date.now() + 10_000;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

for (const kind of ["fs", "oci"] as const) {
  describe(`runtime releases over the ${kind} store`, () => {
    let work: string;
    let registry: RegistryProcess | undefined;
    let server: ServerProcess;
    let tokenFile: string;
    const env = () => ({ ATOMIX_PLUGINS_SERVER: server.address, ATOMIX_PLUGINS_TOKEN: TOKEN });
    const storeArgs = () => (registry ? ["--store", registry.storeUrl("atomix/releases")] : []);
    const serverArgs = () => [
      ...storeArgs(),
      ...["--admin-token-file", tokenFile, "--build-concurrency", "1", "--store-probe-interval", "200"],
      // Pre-warm has its own test; here it would only add builds.
      ...["--prewarm", "off"],
    ];

    before(async () => {
      work = await mkdtemp(join(tmpdir(), "atomix-releases-"));
      tokenFile = join(work, "token");
      await writeFile(tokenFile, TOKEN);
      if (kind === "oci") registry = await startRegistry();
      server = await startServerProcess({ dataDir: join(work, "data-a"), args: serverArgs() });
      // A new release of the example runtime 2.0.0, as an operator would ship it.
      await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(work, "2.1.0"), { recursive: true });
    });
    after(async () => {
      await server?.stop();
      await registry?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    it("registers a release at run time, lists it, and builds for it at once; the artifact records the release's digest", async () => {
      const added = await runCli(["runtime", "add", join(work, "2.1.0"), "--json"], env());
      expectExit(added, EXIT.ok);
      const release = JSON.parse(added.stdout);
      assert.equal(release.created, true);
      assert.equal(release.version, "2.1.0");
      assert.equal(release.toolchain, "node");
      assert.deepEqual(release.buildVersions, ["node20", "node22"]);
      assert.match(release.digest, /^sha256:[0-9a-f]{64}$/);

      const listed = await runCli(["runtime", "ls", "--json"], env());
      expectExit(listed, EXIT.ok);
      // The --runtimes directories were registered at start, beside it.
      assert.deepEqual(
        JSON.parse(listed.stdout).map((r: { version: string }) => r.version),
        ["1.0.0", "2.0.0", "2.1.0", "3.0.0"],
      );
      const inspected = await runCli(["runtime", "inspect", "2.1.0", "--json"], env());
      expectExit(inspected, EXIT.ok);
      assert.equal(JSON.parse(inspected.stdout).digest, release.digest);
      assert.equal(JSON.parse(inspected.stdout).prewarm.state, "off");
      const text = await runCli(["runtime", "inspect", "2.1.0"], env());
      assert.match(text.stdout, new RegExp(`digest: +${release.digest}`));

      const compiled = await runCli(["compile", "counter@2.0.0", "-r", "2.1.0", "-b", "node20"], env());
      expectExit(compiled, EXIT.ok);
      const manifest = JSON.parse(
        (await runCli(["inspect", "counter@2.0.0", "-r", "2.1.0", "-b", "node20", "--json"], env())).stdout,
      );
      assert.equal(manifest.annotations[ANNOTATIONS.runtimeDigest], release.digest);
      assert.equal(ANNOTATIONS.runtimeDigest, "dev.atomix.runtime.digest");

      const unknown = await runCli(["runtime", "inspect", "9.9.9"], env());
      expectExit(unknown, EXIT.notFound);
      assert.match(unknown.stderr, /runtime 9\.9\.9 is unknown.*2\.1\.0/);
    });

    it("keeps a release immutable: the same content again changes nothing, other content is ALREADY_EXISTS naming both digests", async () => {
      const first = JSON.parse((await runCli(["runtime", "inspect", "2.1.0", "--json"], env())).stdout);
      const again = await runCli(["runtime", "add", join(work, "2.1.0"), "--json"], env());
      expectExit(again, EXIT.ok);
      assert.equal(JSON.parse(again.stdout).created, false);
      assert.equal(JSON.parse(again.stdout).digest, first.digest);

      await cp(join(work, "2.1.0"), join(work, "changed", "2.1.0"), { recursive: true });
      await writeFile(join(work, "changed", "2.1.0", "sdk", "runtime-sdk", "CHANGES"), "patched in place\n");
      const changed = await runCli(["runtime", "add", join(work, "changed", "2.1.0")], env());
      expectExit(changed, EXIT.failedPrecondition);
      assert.match(changed.stderr, /ALREADY_EXISTS: runtime 2\.1\.0 is registered as sha256:[0-9a-f]{64}/);
      assert.ok(changed.stderr.includes(first.digest), changed.stderr);
      const other = /this release is (sha256:[0-9a-f]{64})/.exec(changed.stderr)?.[1];
      assert.ok(other && other !== first.digest, changed.stderr);
    });

    it("registers only with the admin token", async () => {
      const run = await runCli(["runtime", "add", join(work, "2.1.0")], {
        ATOMIX_PLUGINS_SERVER: server.address,
      });
      expectExit(run, EXIT.denied);
      assert.match(run.stderr, /UNAUTHENTICATED/);
    });

    it("refuses hostile uploads with the code that fits, and registers none of them", async () => {
      const traversal = await rawRegister(server.address, [header("7.0.1"), file("../escape", 1), data("x")]);
      assert.equal(traversal.code, Code.InvalidArgument, traversal.message);
      assert.match(traversal.message, /"\.\.\/escape"/);

      const overlong = await rawRegister(server.address, [
        header("7.0.2"),
        file("runtime.json", 4),
        data("{}{}{}"),
      ]);
      assert.equal(overlong.code, Code.InvalidArgument, overlong.message);

      const twice = await rawRegister(server.address, [
        header("7.0.7"),
        ...[1, 2].flatMap(() => [file("runtime.json", 2), data("{}")]),
      ]);
      assert.equal(twice.code, Code.InvalidArgument, twice.message);
      assert.match(twice.message, /runtime\.json appears twice/);

      const huge = await rawRegister(server.address, [header("7.0.3"), file("runtime.json", 2 ** 40)]);
      assert.equal(huge.code, Code.ResourceExhausted, huge.message);

      const descriptor = json({
        toolchain: "node",
        node: ["20"],
        modules: { sdk: { version: "1.0.0", path: "../../../../etc" } },
        export: { name: "driver" },
      });
      const leaving = await rawRegister(server.address, [
        header("7.0.4"),
        file("runtime.json", descriptor.byteLength),
        data(descriptor),
      ]);
      assert.equal(leaving.code, Code.InvalidArgument, leaving.message);
      assert.match(leaving.message, /modules\.sdk\.path "\.\.\/\.\.\/\.\.\/\.\.\/etc" leaves the release/);

      const goDescriptor = json({
        toolchain: "go",
        goReleases: ["go1.19.8"],
        goMod: "go/go.mod",
        symbol: "Plugin",
      });
      const goMod = Buffer.from("module example.com/rt\n\ngo 1.19\n\nreplace example.com/x => /etc/ssl\n");
      const hostFolder = await rawRegister(server.address, [
        header("7.0.5"),
        file("runtime.json", goDescriptor.byteLength),
        data(goDescriptor),
        file("go/go.mod", goMod.byteLength),
        data(goMod),
      ]);
      assert.equal(hostFolder.code, Code.InvalidArgument, hostFolder.message);
      assert.match(hostFolder.message, /\/etc\/ssl; an absolute replacement folder must lie under \/usr/);

      // symbolType becomes part of a Go file every build compiles: nothing but a path and a type name.
      const plainGoMod = Buffer.from("module example.com/rt\n\ngo 1.19\n");
      for (const [index, symbolType] of [
        'example.com/sdk.Driver"\nimport "os',
        "*example.com/sdk.Driver",
        "Driver",
      ].entries()) {
        const typed = json({
          toolchain: "go",
          goReleases: ["go1.19.8"],
          goMod: "go/go.mod",
          symbol: "Plugin",
          symbolType,
        });
        const refused = await rawRegister(server.address, [
          header(`7.2.${index}`),
          file("runtime.json", typed.byteLength),
          data(typed),
          file("go/go.mod", plainGoMod.byteLength),
          data(plainGoMod),
        ]);
        assert.equal(refused.code, Code.FailedPrecondition, `${symbolType}: ${refused.message}`);
        assert.match(refused.message, /symbolType: expected a package path and an exported type name in it/);
      }

      // A module's name, not only its path, is where the server copies its files in every build.
      const victim = join(work, "victim");
      await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0", "sdk"), victim, { recursive: true });
      const before = await folderState(victim);
      const sdk = join(EXAMPLE_RUNTIMES_DIR, "2.0.0", "sdk", "runtime-sdk");
      const sdkFiles = await filesOf(sdk);
      for (const [index, name] of [
        `../../../../../../../..${victim}`,
        "..",
        ".hidden",
        "a/b/c",
        "@x/../../y",
      ].entries()) {
        const named = json({
          toolchain: "node",
          node: ["20"],
          modules: { [name]: { version: "2.0.0", path: "modules/sdk" } },
          export: { name: "driver" },
        });
        const refused = await rawRegister(server.address, [
          header(`7.1.${index}`),
          file("runtime.json", named.byteLength),
          data(named),
          ...sdkFiles.flatMap(([path, bytes]) => [
            file(`modules/sdk/${path}`, bytes.byteLength),
            data(bytes),
          ]),
        ]);
        assert.equal(refused.code, Code.InvalidArgument, `${name}: ${refused.message}`);
        assert.match(refused.message, /is not an npm package name/);
      }
      assert.deepEqual(await folderState(victim), before);

      const noDescriptor = await rawRegister(server.address, [header("7.0.6"), file("a/b", 1), data("x")]);
      assert.equal(noDescriptor.code, Code.InvalidArgument, noDescriptor.message);

      const listed = JSON.parse((await runCli(["runtime", "ls", "--json"], env())).stdout) as {
        version: string;
      }[];
      assert.ok(!listed.some((release) => release.version.startsWith("7.")), JSON.stringify(listed));
    });

    it("runtime add follows no link out of a module folder", async () => {
      const dir = join(work, "linked", "2.2.0");
      await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), dir, { recursive: true });
      await symlink("/etc/hostname", join(dir, "sdk", "runtime-sdk", "host"));
      const run = await runCli(["runtime", "add", dir], env());
      expectExit(run, EXIT.failedPrecondition);
      assert.match(
        run.stderr,
        /is a link to .*a runtime release may hold links only to files inside the folder/,
      );
    });

    it("refuses a release whose files every build would fail on, naming what is missing", async () => {
      const broken = async (version: string, change: (dir: string) => Promise<void>) => {
        const dir = join(work, "broken", version);
        await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), dir, { recursive: true });
        await change(dir);
        const run = await runCli(["runtime", "add", dir], env());
        expectExit(run, EXIT.failedPrecondition);
        return run.stderr;
      };
      // The SDK's code, which every plugin's verification load imports, is not shipped.
      const noCode = await broken("2.7.0", (dir) => rm(join(dir, "sdk", "runtime-sdk", "index.js")));
      assert.match(
        noCode,
        /module @atomix\/runtime-sdk names \.\/index\.js in its package\.json, which the release does not hold/,
      );
      // The declared type comes from a module the runtime does not supply.
      const noTypeSource = await broken("2.7.1", async (dir) => {
        const descriptor = JSON.parse(await readFile(join(dir, "runtime.json"), "utf8"));
        descriptor.export.from = "@atomix/other-sdk";
        await writeFile(join(dir, "runtime.json"), JSON.stringify(descriptor));
      });
      assert.match(
        noTypeSource,
        /export\.from "@atomix\/other-sdk" is not one of the modules the runtime supplies/,
      );
      const listed = JSON.parse((await runCli(["runtime", "ls", "--json"], env())).stdout) as {
        version: string;
      }[];
      assert.ok(!listed.some((release) => release.version.startsWith("2.7.")), JSON.stringify(listed));
    });

    it("runtime rm removes a release no stored artifact records, and keeps one that artifacts record, saying how to remove them", async () => {
      await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(work, "2.4.0"), { recursive: true });
      expectExit(await runCli(["runtime", "add", join(work, "2.4.0")], env()), EXIT.ok);
      const key = ["counter@2.0.0", "-r", "2.4.0", "-b", "node20"];
      expectExit(await runCli(["compile", ...key], env()), EXIT.ok);

      const kept = await runCli(["runtime", "rm", "2.4.0"], env());
      expectExit(kept, EXIT.failedPrecondition);
      assert.match(kept.stderr, /runtime 2\.4\.0 is recorded by 1 stored artifact; remove it first/);
      assert.match(
        kept.stderr,
        /atomix-plugins ls --runtime 2\.4\.0 --all.*atomix-plugins rm NAME@VERSION -r 2\.4\.0 -b BUILD/,
      );
      expectExit(await runCli(["runtime", "inspect", "2.4.0"], env()), EXIT.ok);

      expectExit(await runCli(["rm", ...key], env()), EXIT.ok);
      const removed = await runCli(["runtime", "rm", "2.4.0", "--json"], env());
      expectExit(removed, EXIT.ok);
      assert.equal(JSON.parse(removed.stdout).version, "2.4.0");
      const listed = JSON.parse((await runCli(["runtime", "ls", "--json"], env())).stdout) as {
        version: string;
      }[];
      assert.ok(!listed.some((release) => release.version === "2.4.0"), JSON.stringify(listed));
      expectExit(await runCli(["runtime", "inspect", "2.4.0"], env()), EXIT.notFound);
      const compiled = await runCli(["compile", ...key], env());
      expectExit(compiled, EXIT.notFound);
      assert.match(compiled.stderr, /runtime 2\.4\.0 is unknown/);

      // The version is free again, for other content too.
      await writeFile(join(work, "2.4.0", "sdk", "runtime-sdk", "CHANGES"), "rebuilt\n");
      const again = await runCli(["runtime", "add", join(work, "2.4.0"), "--json"], env());
      expectExit(again, EXIT.ok);
      assert.equal(JSON.parse(again.stdout).created, true);
      assert.notEqual(JSON.parse(again.stdout).digest, JSON.parse(removed.stdout).digest);
      expectExit(await runCli(["compile", ...key], env()), EXIT.ok);
    });

    it("runtime rm answers NOT_FOUND for an unknown version, refuses the server's --runtimes releases and callers without the token", async () => {
      const unknown = await runCli(["runtime", "rm", "9.9.9"], env());
      expectExit(unknown, EXIT.notFound);
      assert.match(unknown.stderr, /runtime 9\.9\.9 is unknown/);
      const installed = await runCli(["runtime", "rm", "1.0.0"], env());
      expectExit(installed, EXIT.failedPrecondition);
      assert.match(
        installed.stderr,
        /installed from this server's --runtimes folders.*remove its folder there/,
      );
      const anonymous = await runCli(["runtime", "rm", "2.1.0"], { ATOMIX_PLUGINS_SERVER: server.address });
      expectExit(anonymous, EXIT.denied);
      assert.match(anonymous.stderr, /UNAUTHENTICATED/);
      expectExit(await runCli(["runtime", "inspect", "1.0.0"], env()), EXIT.ok);
    });

    if (kind === "fs") {
      it("keeps registered releases across a restart", async () => {
        await server.stop();
        server = await startServerProcess({ dataDir: join(work, "data-a"), args: serverArgs() });
        const compiled = await runCli(
          ["compile", "@atomix/echo@1.0.0", "-r", "2.1.0", "-b", "node20"],
          env(),
        );
        expectExit(compiled, EXIT.ok);
      });

      it("a stored release whose descriptor was altered to name a host folder is refused at build, and the folder is untouched", async () => {
        await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(work, "2.3.0"), { recursive: true });
        const added = await runCli(["runtime", "add", join(work, "2.3.0"), "--json"], env());
        expectExit(added, EXIT.ok);
        const hex = (JSON.parse(added.stdout).digest as string).slice("sha256:".length);
        await server.stop();
        const victim = join(work, "victim-stored");
        await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0", "sdk"), victim, { recursive: true });
        const before = await folderState(victim);
        const descriptorFile = join(work, "data-a", "runtimes", "releases", hex, "runtime.json");
        const descriptor = JSON.parse(await readFile(descriptorFile, "utf8"));
        const [module] = Object.values(descriptor.modules) as object[];
        descriptor.modules = { [`../../../../../../../../../..${victim}`]: module };
        await writeFile(descriptorFile, JSON.stringify(descriptor));
        server = await startServerProcess({ dataDir: join(work, "data-a"), args: serverArgs() });
        const compiled = await runCli(["compile", "counter@2.0.0", "-r", "2.3.0", "-b", "node20"], env());
        expectExit(compiled, EXIT.failedPrecondition);
        assert.match(
          compiled.stderr,
          /runtime 2\.3\.0 as stored \(sha256:[0-9a-f]{64}\) cannot be built for/,
        );
        assert.match(compiled.stderr, /is not an npm package name/);
        assert.deepEqual(await folderState(victim), before);
      });
    }

    if (kind === "oci") {
      it("a release registered through one replica builds on another at once, which lists it within a probe interval", async () => {
        const other = await startServerProcess({ dataDir: join(work, "data-b"), args: serverArgs() });
        try {
          // A directory not named by its version: -r names it.
          await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(work, "next-release"), { recursive: true });
          const added = await runCli(
            ["runtime", "add", join(work, "next-release"), "-r", "2.3.0", "--json"],
            env(),
          );
          expectExit(added, EXIT.ok);
          const { digest } = JSON.parse(added.stdout);
          const onB = { ATOMIX_PLUGINS_SERVER: other.address };
          const listedOnB = async () =>
            (
              JSON.parse((await runCli(["runtime", "ls", "--json"], onB)).stdout) as { version: string }[]
            ).some((release) => release.version === "2.3.0");
          assert.ok(await eventually(listedOnB), "replica B lists 2.3.0");
          const compiled = await runCli(
            ["compile", "@atomix/echo@1.0.0", "-r", "2.3.0", "-b", "node20"],
            onB,
          );
          expectExit(compiled, EXIT.ok);
          const manifest = JSON.parse(
            (await runCli(["inspect", "@atomix/echo@1.0.0", "-r", "2.3.0", "-b", "node20", "--json"], onB))
              .stdout,
          );
          assert.equal(manifest.annotations[ANNOTATIONS.runtimeDigest], digest);
        } finally {
          await other.stop();
        }
      });

      it("a release removed through one replica is gone on another within a probe interval", async () => {
        const other = await startServerProcess({ dataDir: join(work, "data-d"), args: serverArgs() });
        try {
          await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(work, "2.6.0"), { recursive: true });
          expectExit(await runCli(["runtime", "add", join(work, "2.6.0")], env()), EXIT.ok);
          const onB = { ATOMIX_PLUGINS_SERVER: other.address, ATOMIX_PLUGINS_TOKEN: TOKEN };
          // Replica B knows it (it built for it) before it is removed through A.
          const key = ["@atomix/echo@1.0.0", "-r", "2.6.0", "-b", "node20"];
          expectExit(await runCli(["compile", ...key], onB), EXIT.ok);
          expectExit(await runCli(["rm", ...key], onB), EXIT.ok);
          expectExit(await runCli(["runtime", "rm", "2.6.0"], env()), EXIT.ok);
          const goneOnB = async () =>
            (await runCli(["compile", "counter@2.0.0", "-r", "2.6.0", "-b", "node20"], onB)).code ===
            EXIT.notFound;
          assert.ok(await eventually(goneOnB), "replica B answers NOT_FOUND for 2.6.0");
          const listed = JSON.parse((await runCli(["runtime", "ls", "--json"], onB)).stdout) as {
            version: string;
          }[];
          assert.ok(!listed.some((release) => release.version === "2.6.0"), JSON.stringify(listed));
        } finally {
          await other.stop();
        }
      });

      it("a replica that never listed a release finds it in the registry before answering NOT_FOUND", async () => {
        // No probe for a minute: only the lookup on a miss can find it.
        const other = await startServerProcess({
          dataDir: join(work, "data-c"),
          args: [...serverArgs(), "--store-probe-interval", "60000"],
        });
        try {
          await cp(join(EXAMPLE_RUNTIMES_DIR, "1.0.0"), join(work, "1.1.0"), { recursive: true });
          expectExit(await runCli(["runtime", "add", join(work, "1.1.0")], env()), EXIT.ok);
          const compiled = await runCli(["compile", "counter@1.0.0", "-r", "1.1.0", "-b", "node20"], {
            ATOMIX_PLUGINS_SERVER: other.address,
          });
          expectExit(compiled, EXIT.ok);
        } finally {
          await other.stop();
        }
      });

      it("stores a release as an OCI artifact of its own type that OCI tools can list and copy", async () => {
        const base = `http://${registry?.address}/v2/atomix/releases`;
        const tags = ((await (await fetch(`${base}/tags/list`)).json()) as { tags: string[] }).tags;
        const tag = runtimeReleaseTag("2.1.0");
        assert.ok(tags.includes(tag), tags.join(" "));
        const manifest = (await (
          await fetch(`${base}/manifests/${tag}`, {
            headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
          })
        ).json()) as {
          artifactType: string;
          config: { mediaType: string; digest: string };
          layers: { annotations: Record<string, string> }[];
        };
        assert.equal(manifest.artifactType, "application/vnd.atomix.runtime.v1");
        assert.equal(manifest.config.mediaType, "application/vnd.atomix.runtime.index.v1+json");
        const inspected = JSON.parse((await runCli(["runtime", "inspect", "2.1.0", "--json"], env())).stdout);
        assert.equal(manifest.config.digest, inspected.digest);
        const titles = manifest.layers.map((layer) => layer.annotations["org.opencontainers.image.title"]);
        assert.ok(titles.includes("runtime.json"), titles.join(" "));
        assert.ok(titles.includes("modules/@atomix/runtime-sdk/package.json"), titles.join(" "));
        // Artifact listings skip it.
        const ls = await runCli(["ls", "--json"], env());
        expectExit(ls, EXIT.ok);
      });
    }
  });
}
