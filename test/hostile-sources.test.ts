import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code, codeName, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { create as createTar } from "tar";
import { createRuntimeAdminClient } from "../src/cli/runtime-admin-client.js";
import { EXAMPLE_PLUGINS_DIR } from "../src/config.js";
import { GO_RELEASE, goKey } from "./helpers/go-fixtures.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

/**
 * Plugin sources written by an attacker, compiled by a real server over
 * gRPC. Each tries to get a file of the server (a canary planted in its data
 * directory, in its admin token, beside it, in its environment) into an
 * artifact or a message, to reach the host, or to exhaust it. Each must be
 * refused with the right code, the canary must appear in no message and no
 * artifact, and the server must stay healthy and build the next plugin.
 */
/** Declarations of the server's own code, which a plugin must not be able to read either. */
const SERVER_DECLARATIONS = fileURLToPath(new URL("../src/compiler/build-defaults.d.ts", import.meta.url));

const canary = `CANARY${randomBytes(12).toString("hex")}`;

const nodeKey = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

const PEER = { "@atomix/runtime-sdk": ">=1.0.0" };
const DRIVER = 'export const driver = { name: "x", handle: (r: { key: string }) => r.key };\n';
const pkgJson = (name: string, extra: object = {}) =>
  JSON.stringify({ name, version: "1.0.0", type: "module", peerDependencies: PEER, ...extra });

interface HostileCase {
  readonly name: string;
  /** What it tries. */
  readonly attack: string;
  readonly code: Code;
  /** A part of the message that says which rule refused it. */
  readonly says?: RegExp;
  /** Its files, by path in the package; read once the paths they name exist. */
  readonly files: () => Record<string, string>;
  /** What files cannot say: a link, a FIFO, a tarball. */
  readonly prepare?: (root: string) => Promise<unknown> | undefined;
  /** Written once the server runs (it names the server's process). */
  readonly afterStart?: boolean;
}

describe("hostile plugin sources", { timeout: 600_000 }, () => {
  let dir: { path: string; remove: () => Promise<void> };
  let catalog: string;
  let dataDir: string;
  let secretFile: string;
  let secretTs: string;
  let tokenFile: string;
  let canaryServer: Server;
  let canaryUrl: string;
  let server: ServerProcess;
  let client: PluginClient;
  const cases: HostileCase[] = [];

  /**
   * Declares a case, so that each has a test of its own below; its files are
   * written in before(), once the paths they name exist (`afterStart`: once
   * the server runs), then `prepare` adds what files cannot (links, FIFOs,
   * tarballs).
   */
  function plant(
    name: string,
    files: () => Record<string, string>,
    attack: string,
    code: Code,
    says?: RegExp,
    extra: Pick<HostileCase, "prepare" | "afterStart"> = {},
  ): void {
    cases.push({ name, attack, code, ...(says ? { says } : {}), files, ...extra });
  }

  async function write(hostile: HostileCase): Promise<void> {
    const root = join(catalog, hostile.name, "1.0.0");
    for (const [file, content] of Object.entries(hostile.files())) {
      await mkdir(dirname(join(root, file)), { recursive: true });
      await writeFile(join(root, file), content);
    }
    await hostile.prepare?.(root);
  }

  const textImport = (path: string, type = "text") =>
    `// @ts-ignore\nimport secret from ${JSON.stringify(path)} with { type: "${type}" };\nexport const driver = { name: String(secret), handle: (r: { key: string }) => r.key };\n`;
  const repeated = Array.from({ length: 64 }, () => "E.M13").join(", ");

  plant(
    "abs-import",
    () => ({ "package.json": pkgJson("abs-import"), "src/index.ts": textImport(secretFile) }),
    "imports a server file by absolute path as text",
    Code.FailedPrecondition,
    /outside the package/,
  );
  plant(
    "relative-escape",
    () => ({
      "package.json": pkgJson("relative-escape"),
      "src/index.ts": textImport(`../../../../../../../../../..${secretFile}`),
    }),
    "climbs out of the package with ../",
    Code.FailedPrecondition,
    /outside the package/,
  );
  plant(
    "proc-environ",
    () => ({ "package.json": pkgJson("proc-environ"), "src/index.ts": textImport("/proc/self/environ") }),
    "reads the server's environment from /proc/self/environ",
    Code.FailedPrecondition,
  );
  plant(
    "token-file",
    () => ({
      "package.json": pkgJson("token-file"),
      "src/index.ts": textImport(tokenFile),
      "src/text.d.ts": 'declare module "*" { const text: string; export default text; }\n',
    }),
    "reads the admin token file, its type declared by a .d.ts",
    Code.FailedPrecondition,
  );
  plant(
    "data-dir",
    () => ({ "package.json": pkgJson("data-dir"), "src/index.ts": textImport(join(dataDir, "canary.txt")) }),
    "reads the server's data directory",
    Code.FailedPrecondition,
  );
  plant(
    "json-on-text",
    () => ({ "package.json": pkgJson("json-on-text"), "src/index.ts": textImport(secretFile, "json") }),
    "imports a text file as JSON, so that the parse error quotes it",
    Code.FailedPrecondition,
  );
  plant(
    "tsconfig-paths",
    () => ({
      "package.json": pkgJson("tsconfig-paths"),
      "tsconfig.json": JSON.stringify({ compilerOptions: { paths: { "secret-alias": [secretFile] } } }),
      "src/index.ts": textImport("secret-alias"),
    }),
    "maps an import to a server file with tsconfig paths",
    Code.FailedPrecondition,
    /tsconfig\.json: compilerOptions\.paths points outside the package/,
  );
  plant(
    "tsconfig-extends",
    () => ({
      "package.json": pkgJson("tsconfig-extends"),
      "tsconfig.json": JSON.stringify({ extends: secretFile }),
      "src/index.ts": DRIVER,
    }),
    "extends a server file from tsconfig.json, so that the parse error quotes it",
    Code.FailedPrecondition,
    /tsconfig\.json: extends points outside the package/,
  );
  plant(
    "plain-js",
    () => ({
      "package.json": pkgJson("plain-js", { main: "index.js" }),
      "index.js": `import secret from ${JSON.stringify(secretFile)} with { type: "text" };\nexport const driver = { name: secret, handle: (r) => r.key };\n`,
    }),
    "a JavaScript entry, which is not type-checked",
    Code.FailedPrecondition,
    /outside the package/,
  );
  plant(
    "type-leak",
    () => ({
      "package.json": pkgJson("type-leak"),
      "src/index.ts": `import type { Secret } from ${JSON.stringify(secretTs)};\nconst leak: number = "" as unknown as Secret;\n${DRIVER}export { leak };\n`,
    }),
    "a type-only import whose type error would quote the file",
    Code.FailedPrecondition,
    /outside the package/,
  );
  plant(
    "symlink-out",
    () => ({ "package.json": pkgJson("symlink-out"), "src/index.ts": textImport("./secret.txt") }),
    "a link in the catalog folder to a server file",
    Code.FailedPrecondition,
    /src\/secret\.txt is a link that leaves the package/,
    { prepare: (root) => symlink(secretFile, join(root, "src", "secret.txt")) },
  );
  plant(
    "symlink-ts",
    () => ({
      "package.json": pkgJson("symlink-ts"),
      "src/index.ts": `export * from "./secret.js";\n${DRIVER}`,
    }),
    "a link to a TypeScript file of the server",
    Code.FailedPrecondition,
    /link that leaves the package/,
    { prepare: (root) => symlink(secretTs, join(root, "src", "secret.ts")) },
  );
  plant(
    "fifo",
    () => ({ "package.json": pkgJson("fifo"), "src/index.ts": `import "./blocked.js";\n${DRIVER}` }),
    "a FIFO as a source file, which blocks whoever reads it",
    Code.FailedPrecondition,
    /src\/blocked\.ts is not a regular file or folder/,
    {
      prepare: (root) => {
        execFileSync("mkfifo", [join(root, "src", "blocked.ts")]);
      },
    },
  );
  plant(
    "verify-fetch",
    () => ({
      "package.json": pkgJson("verify-fetch"),
      "src/index.ts": `// @ts-nocheck\nconst answer = await fetch(${JSON.stringify(canaryUrl)}).then((r) => r.text(), (e: Error) => "fetch failed: " + String((e as { cause?: unknown }).cause));\nthrow new Error("got " + answer);\n${DRIVER}`,
    }),
    "fetches a loopback service while it is loaded, and puts the answer in its error",
    Code.FailedPrecondition,
    /fails verification.*fetch failed/,
  );
  plant(
    "verify-memory",
    () => ({
      "package.json": pkgJson("verify-memory"),
      "src/index.ts": `// @ts-nocheck\nconst kept: Uint8Array[] = [];\nfor (let i = 0; i < 32; i++) kept.push(new Uint8Array(64 * 1024 * 1024).fill(1));\n${DRIVER}`,
    }),
    "holds 2 GiB of buffers while it is loaded (outside the JavaScript heap)",
    Code.FailedPrecondition,
    /fails verification/,
  );
  plant(
    "verify-spawn",
    () => ({
      "package.json": pkgJson("verify-spawn"),
      "src/index.ts": `// @ts-nocheck\nimport { execSync } from "node:child_process";\nexecSync("cat ${secretFile}");\n${DRIVER}`,
    }),
    "starts a process while it is loaded",
    Code.FailedPrecondition,
    /fails verification/,
  );
  plant(
    "fake-report",
    () => ({
      "package.json": pkgJson("fake-report"),
      "src/index.ts":
        '// @ts-nocheck\nconst stringify = JSON.stringify;\nJSON.stringify = (v, ...rest) => stringify(v && typeof v === "object" && "nonce" in v ? { ok: true, nonce: v.nonce } : v, ...rest);\nconst write = process.stdout.write.bind(process.stdout);\nprocess.stdout.write = (chunk, ...rest) => write(String(chunk).replace(/"problem":"[^"]*"/, \'"ok":true\'), ...rest);\nexport const notADriver = 1;\n',
    }),
    "rewrites the checker's JSON.stringify and stdout to pass verification without the export",
    Code.FailedPrecondition,
    /it has no export "driver" \(its exports: notADriver\)/,
  );
  plant(
    "heap-thief",
    () => ({
      "package.json": pkgJson("heap-thief", { main: "index.js" }),
      "index.js":
        'import { getHeapSnapshot } from "node:v8";\nimport { writeSync } from "node:fs";\nlet text = "";\ntry { const chunks = []; for await (const c of getHeapSnapshot()) chunks.push(c); text = Buffer.concat(chunks).toString(); } catch {}\nfor (const nonce of new Set(text.match(/"[0-9a-f]{32}"/g) || [])) writeSync(1, "\\n{\\"ok\\":true,\\"nonce\\":" + nonce + "}\\n");\nexport const notADriver = 1;\n',
    }),
    "reads the checker's nonce from a heap snapshot to forge its report",
    Code.FailedPrecondition,
    /fails verification/,
  );
  plant(
    "huge-tsconfig",
    () => ({
      "package.json": pkgJson("huge-tsconfig"),
      "tsconfig.json": `{${" ".repeat(4 * 1024 * 1024)}}`,
      "src/index.ts": DRIVER,
    }),
    "a 4 MiB tsconfig.json, parsed in the server's own process",
    Code.FailedPrecondition,
    /tsconfig\.json is larger than 1048576 bytes/,
  );
  plant(
    "huge-package-json",
    () => ({
      "package.json": `{"name":"huge-package-json","version":"1.0.0","x":${"[".repeat(4 * 1024 * 1024)}`,
      "src/index.ts": DRIVER,
    }),
    "a 4 MiB package.json, parsed in the server's own process",
    Code.FailedPrecondition,
    /package\.json of \d+ bytes, over 1048576/,
  );
  plant(
    "amplifier",
    () => ({
      "package.json": pkgJson("amplifier"),
      "src/index.ts": `const enum E { A = "0123456789abcdef", ${Array.from({ length: 14 }, (_, i) => `M${i} = ${i === 0 ? "A + A" : `M${i - 1} + M${i - 1}`}`).join(", ")} }\nexport function big() { return [${repeated}]; }\n${DRIVER}`,
    }),
    "4 KB of source that folds into a 16 MiB bundle",
    Code.FailedPrecondition,
    /over the limit of 1048576 \(--max-build-output\)/,
  );
  plant(
    "server-types",
    () => ({
      "package.json": pkgJson("server-types"),
      "src/index.ts": `import type { DEFAULT_BUILD_QUEUE } from ${JSON.stringify(SERVER_DECLARATIONS)};\nconst leak: "x" = null as unknown as typeof DEFAULT_BUILD_QUEUE;\n${DRIVER}export { leak };\n`,
    }),
    "quotes the server's own declarations through a type error",
    Code.FailedPrecondition,
    /outside the package/,
  );
  plant(
    "dependency-path",
    () => ({
      "package.json": pkgJson("dependency-path", {
        dependencies: { "../../../../../../../../etc": "1.0.0" },
      }),
      "src/index.ts": DRIVER,
    }),
    "probes server folders through a dependency name",
    Code.FailedPrecondition,
    /not a valid npm package name/,
  );
  plant(
    "null-package",
    () => ({ "package.json": "null", "src/index.ts": DRIVER }),
    "a package.json that is not an object",
    Code.FailedPrecondition,
  );
  plant(
    "null-tsconfig",
    () => ({ "package.json": pkgJson("null-tsconfig"), "tsconfig.json": "null", "src/index.ts": DRIVER }),
    "a tsconfig.json that is not an object",
    Code.FailedPrecondition,
    /tsconfig\.json is not a JSON object/,
  );
  plant(
    "file-node-modules",
    () => ({
      "package.json": pkgJson("file-node-modules"),
      node_modules: "not a folder",
      "src/index.ts": DRIVER,
    }),
    "node_modules as a file, where the runtime's modules go",
    Code.FailedPrecondition,
    /node_modules must be a folder/,
  );
  plant(
    "reserved-name",
    () => ({
      "package.json": pkgJson("reserved-name"),
      "__atomix_export_check__.ts/x.ts": "",
      "src/index.ts": DRIVER,
    }),
    "a folder where the build writes its own check",
    Code.FailedPrecondition,
    /reserved for the build/,
  );
  // The tarball cases: a bomb (small, unpacking to far more than the limit) and a swarm of files.
  plant(
    "bomb",
    () => ({}),
    "a tarball that unpacks to 64 MiB",
    Code.FailedPrecondition,
    /more than 8388608 bytes \(--max-source-size\)/,
    {
      prepare: async (root) => {
        await mkdir(join(dir.path, "bomb", "package"), { recursive: true });
        await writeFile(join(dir.path, "bomb", "package", "package.json"), pkgJson("bomb"));
        await writeFile(join(dir.path, "bomb", "package", "zeros.bin"), Buffer.alloc(64 * 1024 * 1024));
        await mkdir(root, { recursive: true });
        await createTar({ gzip: true, cwd: join(dir.path, "bomb"), file: join(root, "bomb.tgz") }, [
          "package",
        ]);
      },
    },
  );
  plant(
    "swarm",
    () => ({}),
    "a tarball of 3,000 files",
    Code.FailedPrecondition,
    /more than 2000 entries \(--max-source-files\)/,
    {
      prepare: async (root) => {
        await mkdir(join(dir.path, "swarm", "package"), { recursive: true });
        await writeFile(join(dir.path, "swarm", "package", "package.json"), pkgJson("swarm"));
        for (let i = 0; i < 3000; i++) await writeFile(join(dir.path, "swarm", "package", `f${i}.txt`), "");
        await mkdir(root, { recursive: true });
        await createTar({ gzip: true, cwd: join(dir.path, "swarm"), file: join(root, "swarm.tgz") }, [
          "package",
        ]);
      },
    },
  );
  // The one that kills: it needs the server's PID.
  plant(
    "verify-kill",
    () => ({
      "package.json": pkgJson("verify-kill"),
      "src/index.ts": `// @ts-nocheck\nconst tried = [${server.child.pid}, 1, process.ppid].map((pid) => { try { process.kill(pid, "SIGKILL"); return "killed " + pid; } catch (e) { return e.code; } });\nthrow new Error(tried.join(", "));\n${DRIVER}`,
    }),
    "kills the server from inside its verification load",
    Code.FailedPrecondition,
    undefined,
    { afterStart: true },
  );

  before(async () => {
    dir = await tempDir("atomix-hostile-");
    catalog = join(dir.path, "catalog");
    dataDir = join(dir.path, "data");
    await mkdir(join(dir.path, "secret"), { recursive: true });
    await mkdir(dataDir, { recursive: true });
    secretFile = join(dir.path, "secret", "canary.txt");
    secretTs = join(dir.path, "secret", "secret.ts");
    tokenFile = join(dir.path, "secret", "admin-token");
    await writeFile(secretFile, canary);
    await writeFile(join(dataDir, "canary.txt"), canary);
    await writeFile(secretTs, `export const ${canary} = "${canary}";\nexport type Secret = "${canary}";\n`);
    await writeFile(tokenFile, `${canary}\n`);
    canaryServer = createServer((_request, response) => response.end(canary));
    await new Promise<void>((resolve) => canaryServer.listen(0, "127.0.0.1", resolve));
    canaryUrl = `http://127.0.0.1:${(canaryServer.address() as AddressInfo).port}/`;

    for (const hostile of cases) if (!hostile.afterStart) await write(hostile);
    server = await startServerProcess({
      dataDir,
      args: [
        ...["--sources", catalog, "--sources", EXAMPLE_PLUGINS_DIR],
        ...["--admin-token-file", tokenFile],
        ...["--max-source-size", String(8 * 1024 * 1024), "--max-source-files", "2000"],
        ...["--max-build-output", String(1024 * 1024)],
      ],
      env: { ATOMIX_HOSTILE_CANARY: canary },
    });
    client = createPluginClient({ address: server.address });
    for (const hostile of cases) if (hostile.afterStart) await write(hostile);
  });

  after(async () => {
    client?.close();
    await server?.stop();
    canaryServer?.close();
    await dir?.remove();
  });

  /**
   * The build's record as `logs` shows it to anyone (message and the
   * toolchain's output): it must hold nothing of the server either.
   */
  async function assertLogClean(address: string, key: BuildKey, what: string): Promise<void> {
    const records = createRuntimeAdminClient({ address });
    try {
      const record = await records.buildLog(key).catch((error: unknown) => {
        if (error instanceof PluginError && error.code === Code.NotFound) return undefined; // refused before building
        throw error;
      });
      assert.ok(!JSON.stringify(record ?? {}).includes(canary), `${what}: the build log holds the canary`);
    } finally {
      records.close();
    }
  }

  async function compileFailure(key: BuildKey): Promise<PluginError> {
    try {
      const reference = await client.compile(key);
      // Built after all: then at least nothing of the server may be in it.
      const to = join(dir.path, `${key.plugin.name}.out`);
      await client.pull(key, { to });
      assert.ok(!(await readFile(to)).includes(canary), `${key.plugin.name}: the artifact holds the canary`);
      assert.fail(`${key.plugin.name} built (${reference.digest}) but should have been refused`);
    } catch (error) {
      if (!(error instanceof PluginError)) throw error;
      return error;
    }
  }

  for (const hostile of cases) {
    it(`refuses ${hostile.name} (${hostile.attack}) with ${codeName(hostile.code)}, quoting nothing of the server`, async (t) => {
      const error = await compileFailure(nodeKey(hostile.name));
      const line = `${hostile.name} (${hostile.attack}): ${codeName(error.code)}: ${error.message}`;
      t.diagnostic(line);
      assert.equal(error.code, hostile.code, line);
      if (hostile.says) assert.match(error.message, hostile.says, line);
      assert.ok(!error.message.includes(canary), `${line}\nquotes the canary`);
      await assertLogClean(server.address, nodeKey(hostile.name), line);
      assert.equal(await checkHealth(server.address), "SERVING", `after ${hostile.name}`);
      assert.equal(server.child.exitCode, null, "the server is still running");
    });
  }

  it("still builds a normal plugin afterwards, and no stored artifact holds the canary", async () => {
    const reference = await client.compile(nodeKey("counter"));
    assert.match(reference.digest ?? "", /^sha256:/);
    const stored = await client.list();
    assert.ok(stored.length >= 1);
    for (const manifest of stored) {
      assert.ok(manifest.runtime && manifest.plugin);
      const key = { runtime: manifest.runtime, plugin: manifest.plugin };
      const to = join(dir.path, "stored.out");
      await client.pull(key, { to });
      assert.ok(!(await readFile(to)).includes(canary), `${manifest.plugin.name} holds the canary`);
    }
  });

  describe("Go", () => {
    const HOSTILE = "example.com/hostile";
    let goCatalog: string;
    let goServer: ServerProcess;
    let goClient: PluginClient;
    const main = (body: string) =>
      `package main\n\n/*\n${body}\n*/\nimport "C"\n\nvar Plugin = 1\n\nfunc main() {}\n`;
    /** Declared here, so that each has a test of its own; files are read once the paths they name exist. */
    const goCases: {
      version: string;
      attack: string;
      files: () => Record<string, string>;
      says?: RegExp;
    }[] = [
      {
        version: "v1.0.1",
        attack: "replaces a module with an absolute directory of the host",
        files: () => ({
          "go.mod": `module ${HOSTILE}\n\ngo 1.19\n\nreplace example.com/x => ${dirname(secretFile)}\n`,
          "main.go": "package main\n\nvar Plugin = 1\n",
        }),
        says: /replaces example\.com\/x with the directory .*outside the module/,
      },
      {
        version: "v1.0.2",
        attack: "replaces a module with a directory above the module",
        files: () => ({
          "go.mod": `module ${HOSTILE}\n\ngo 1.19\n\nreplace example.com/x => ../../..\n`,
          "main.go": "package main\n\nvar Plugin = 1\n",
        }),
        says: /outside the module/,
      },
      {
        version: "v1.0.3",
        attack: "includes a host file from cgo, so that gcc quotes it",
        files: () => ({
          "go.mod": `module ${HOSTILE}\n\ngo 1.19\n`,
          "main.go": main(`#include "${secretFile}"`),
        }),
      },
      {
        version: "v1.0.4",
        attack: "embeds a host file into the shared object with .incbin",
        files: () => ({
          "go.mod": `module ${HOSTILE}\n\ngo 1.19\n`,
          "main.go": main(`__asm__(".section .rodata\\n.incbin \\"${secretFile}\\"\\n.previous");`),
        }),
      },
      {
        version: "v1.0.5",
        attack: "exports Plugin of another type than the one the runtime asserts after plugin.Lookup",
        files: () => ({
          "go.mod": `module ${HOSTILE}\n\ngo 1.19\n`,
          "main.go": "package main\n\nvar Plugin = 1\n",
        }),
        says: /: Plugin is a variable of type int, but the runtime loads Plugin as a variable of type example\.com\/atomix\/sdk\.Driver/,
      },
    ];

    before(async () => {
      goCatalog = join(dir.path, "go-catalog");
      for (const hostile of goCases) {
        for (const [file, content] of Object.entries(hostile.files())) {
          await mkdir(dirname(join(goCatalog, HOSTILE, hostile.version, file)), { recursive: true });
          await writeFile(join(goCatalog, HOSTILE, hostile.version, file), content);
        }
      }
      goServer = await startServerProcess({
        args: ["--sources", goCatalog, "--sources", EXAMPLE_PLUGINS_DIR, "--admin-token-file", tokenFile],
        env: {
          ATOMIX_HOSTILE_CANARY: canary,
          ...(process.env.ATOMIX_PLUGINS_TEST_GO_CACHE
            ? { ATOMIX_PLUGINS_GO_CACHE: process.env.ATOMIX_PLUGINS_TEST_GO_CACHE }
            : {}),
        },
      });
      goClient = createPluginClient({ address: goServer.address });
    });
    after(async () => {
      goClient?.close();
      await goServer?.stop();
    });

    for (const hostile of goCases) {
      it(`refuses ${hostile.version} (${hostile.attack}) with FAILED_PRECONDITION, quoting nothing of the server`, async (t) => {
        const key = goKey(HOSTILE, hostile.version, GO_RELEASE);
        let error: PluginError | undefined;
        try {
          await goClient.compile(key);
          const to = join(dir.path, "go.out");
          await goClient.pull(key, { to });
          assert.ok(
            !(await readFile(to)).includes(canary),
            `${hostile.version}: the artifact holds the canary`,
          );
        } catch (caught) {
          if (!(caught instanceof PluginError)) throw caught;
          error = caught;
        }
        assert.ok(error, `${hostile.version} (${hostile.attack}) built`);
        const line = `${hostile.version} (${hostile.attack}): ${codeName(error.code)}: ${error.message}`;
        t.diagnostic(line);
        assert.equal(error.code, Code.FailedPrecondition, line);
        if (hostile.says) assert.match(error.message, hostile.says, line);
        assert.ok(!error.message.includes(canary), `${line}\nquotes the canary`);
        await assertLogClean(goServer.address, key, line);
        assert.equal(await checkHealth(goServer.address), "SERVING");
      });
    }

    it("still builds the example driver afterwards", async () => {
      const reference = await goClient.compile(
        goKey("example.com/atomix/drivers/counter", "v1.0.0", GO_RELEASE),
      );
      assert.match(reference.digest ?? "", /^sha256:/);
    });
  });
});
