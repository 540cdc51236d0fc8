import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import { generateSigningKey } from "../src/provenance/signing-key.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** What a runtime that only pulls and loads plugins must not have to install. */
const SERVER_ONLY = [
  "typescript",
  "esbuild",
  "pino",
  "zod",
  "prom-client",
  "commander",
  "tar",
  "@sigstore/sign",
  // gRPC goes over Node's own HTTP/2: no gRPC library, no protobufjs runtime.
  "@grpc/grpc-js",
  "@grpc/proto-loader",
  "protobufjs",
];

interface LockEntry {
  version?: string;
  resolved?: string;
  integrity?: string;
  license?: string;
  engines?: Record<string, string>;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  dev?: boolean;
  devOptional?: boolean;
  optional?: boolean;
  peer?: boolean;
}
type Lock = { packages: Record<string, LockEntry> };

/** Runs npm, its output (both streams) in the error when it fails. */
async function npm(args: string[], cwd: string): Promise<string> {
  try {
    const { stdout, stderr } = await run("npm", args, { cwd, maxBuffer: 64 * 1024 * 1024 });
    return stdout + stderr;
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`npm ${args.join(" ")} failed in ${cwd}:\n${stdout}${stderr}`, { cause: error });
  }
}

/** Bytes of files under `dir`, as `du` counts them (blocks, so what the disk really holds). */
async function diskBytes(dir: string): Promise<number> {
  const { stdout } = await run("du", ["-s", "--block-size=1", dir]);
  return Number(stdout.split("\t")[0]);
}

/** Bytes the server package's production dependencies take, each package's own files once. */
async function serverInstallBytes(): Promise<number> {
  const { stdout } = await run("npm", ["ls", "--omit=dev", "--all", "--parseable"], { cwd: ROOT });
  const dirs = [...new Set(stdout.split("\n").filter((line) => line.includes("/node_modules/")))];
  let total = 0;
  for (const dir of dirs) {
    const { stdout: du } = await run("du", ["-s", "--block-size=1", "--exclude=node_modules", dir]);
    total += Number(du.split("\t")[0]);
  }
  return total;
}

/** Where Node.js finds `name` from the package at lock path `from`, as npm laid the tree out. */
function resolveInLock(lock: Lock, from: string, name: string): string | undefined {
  let base = from;
  for (;;) {
    const candidate = `${base === "" ? "" : `${base}/`}node_modules/${name}`;
    if (lock.packages[candidate]) return candidate;
    if (base === "") return undefined;
    const parent = base.lastIndexOf("/node_modules/");
    base = parent < 0 ? "" : base.slice(0, parent);
  }
}

/** A packed workspace package: its file: spec from the project, and its integrity. */
interface Packed {
  spec: string;
  integrity: string;
}

/**
 * The package-lock of a project that depends on the packed client alone:
 * the client, the core package it depends on (both packed from the
 * workspace) and their dependencies at the versions the repository's lock
 * holds. npm installs from it with no registry at all (tarballs from npm's
 * cache, which the repository's own `npm ci` filled), where resolving the
 * ranges afresh would ask the registry for every package's versions.
 */
function clientProjectLock(repoLock: Lock, tarballs: Record<string, Packed>): unknown {
  const workspaces: Record<string, string> = {
    "atomix-plugins-client": "packages/client",
    "atomix-plugins-core": "packages/core",
  };
  const client = tarballs["atomix-plugins-client"] as Packed;
  const packages: Record<string, LockEntry> = {
    "": { dependencies: { "atomix-plugins-client": client.spec } },
  };
  const pending: Array<[string, string]> = [["", "atomix-plugins-client"]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [from, name] = next;
    const workspace = workspaces[name];
    let at: string;
    let entry: LockEntry;
    if (workspace) {
      // A workspace package: installed at the top, from its tarball.
      at = workspace;
      const own = repoLock.packages[workspace];
      assert.ok(own?.version, `the repository's lock has the ${workspace} workspace`);
      const packed = tarballs[name] as Packed;
      entry = {
        version: own.version,
        resolved: packed.spec,
        integrity: packed.integrity,
        license: own.license,
        dependencies: own.dependencies,
        engines: own.engines,
      };
      if (packages[`node_modules/${name}`]) continue;
      packages[`node_modules/${name}`] = entry;
    } else {
      const found = resolveInLock(repoLock, from, name);
      assert.ok(found, `the repository's lock has ${name}, which ${from || "the project"} needs`);
      at = found;
      // Nested under a workspace in the repository: under its installed folder here.
      const owner = Object.entries(workspaces).find(([, folder]) => at.startsWith(`${folder}/`));
      const here = owner ? `node_modules/${owner[0]}${at.slice(owner[1].length)}` : at;
      if (packages[here]) continue;
      const { dev, devOptional, optional, peer, ...rest } = repoLock.packages[at] as LockEntry;
      entry = rest;
      packages[here] = entry;
    }
    const needs = { ...entry.dependencies, ...entry.optionalDependencies, ...entry.peerDependencies };
    for (const dependency of Object.keys(needs)) pending.push([at, dependency]);
  }
  return { name: "a-runtime", lockfileVersion: 3, requires: true, packages };
}

/**
 * The packages a built module tree imports by name: its import and export
 * declarations (tsc writes each at the start of a line), in JavaScript and
 * in the declarations a typed caller reads, and what it loads with
 * `createRequire`.
 */
async function bareImports(dir: string): Promise<Set<string>> {
  const names = new Set<string>();
  const files = (await readdir(dir, { recursive: true })).filter(
    (file) => file.endsWith(".js") || file.endsWith(".d.ts"),
  );
  const patterns = [
    /^(?:import|export)\s[^;]*?\bfrom\s*"([^"]+)";/gm,
    /^import\s*"([^"]+)";/gm,
    /createRequire\(import\.meta\.url\)\(\s*"([^"]+)"\s*\)/g,
  ];
  for (const file of files) {
    const text = await readFile(join(dir, file), "utf8");
    for (const pattern of patterns) {
      for (const [, specifier = "."] of text.matchAll(pattern)) {
        if (specifier.startsWith(".") || specifier.startsWith("node:")) continue;
        const parts = specifier.split("/");
        names.add(parts.slice(0, specifier.startsWith("@") ? 2 : 1).join("/"));
      }
    }
  }
  return names;
}

describe("the client package (packages/client), packed from a fresh clone", () => {
  let dir: string;
  let clone: string;
  let server: TestServer;
  const nodeBuild = `node${process.versions.node.split(".")[0]}`;
  const blobKey = {
    runtime: { version: "1.0.0", buildVersion: nodeBuild },
    plugin: { name: "embedded", version: "1.0.0" },
  };
  const blob = randomBytes(3 * 1024 * 1024 + 17);
  const pluginKey = {
    runtime: { version: "1.0.0", buildVersion: nodeBuild },
    plugin: { name: "greeter", version: "1.0.0" },
  };
  const pluginSource = 'export const driver = { greet: (name) => "hello, " + name };\n';
  let publicKeyPem: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atomix-client-package-"));
    clone = join(dir, "clone");
    const pair = generateSigningKey("ecdsa-p256");
    publicKeyPem = pair.publicKeyPem;
    await writeFile(join(dir, "signing.key"), pair.privateKeyPem, { mode: 0o600 });
    server = await startTestServer({
      adminToken: "package-test",
      config: { signingKey: join(dir, "signing.key") },
    });
    const admin = createPluginClient({ address: server.address, token: "package-test" });
    try {
      await admin.push(blobKey, [blob]);
      await admin.push(pluginKey, [Buffer.from(pluginSource)]);
    } finally {
      admin.close();
    }
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("a fresh clone installs with npm ci, offline, and no engine warning", async () => {
    // The committed tree, as a user's clone has it: commit before running this.
    await run("git", ["clone", "--quiet", ROOT, clone]);
    const output = await npm(["ci", "--offline", "--no-audit", "--no-fund"], clone);
    assert.doesNotMatch(output, /EBADENGINE/, output);
  });

  it("npm pack builds the client and core packages first and ships their JavaScript, types and README, nothing of the server", async () => {
    await npm(["pack", "-w", "packages/core", "-w", "packages/client", "--pack-destination", dir], clone);
    const packed = (await readdir(dir)).filter((name) => name.endsWith(".tgz")).sort();
    assert.deepEqual(packed, ["atomix-plugins-client-0.1.0.tgz", "atomix-plugins-core-0.1.0.tgz"].sort());
    const files = async (name: string) => {
      const { stdout } = await run("tar", ["-tzf", join(dir, name)]);
      return stdout.split("\n").filter(Boolean);
    };
    const client = await files("atomix-plugins-client-0.1.0.tgz");
    for (const file of [
      "dist/index.js",
      "dist/index.d.ts",
      "dist/transport/wire/hpack.js",
      "README.md",
      "package.json",
    ]) {
      assert.ok(client.includes(`package/${file}`), `${file} is in the client package`);
    }
    const core = await files("atomix-plugins-core-0.1.0.tgz");
    const folders = new Set(core.flatMap((file) => /^package\/dist\/([^/]+)\//.exec(file)?.[1] ?? []));
    assert.deepEqual([...folders].sort(), ["errors", "gen", "model", "protocol"]);
    assert.ok(core.includes("package/README.md"), "the core package has its README");
    for (const file of [...client, ...core]) {
      assert.ok(!file.includes("runtime-admin-client"), `the CLI's admin client is not packed: ${file}`);
      assert.ok(!file.endsWith(".tsbuildinfo"), `no build state is packed: ${file}`);
    }
  });

  it("a client file that imports server code fails lint, naming the rule, and the client's build", async () => {
    const fixture = join(clone, "packages", "client", "src", "reaches-into-the-server.ts");
    await writeFile(fixture, 'export { DEFAULT_LISTEN } from "../../../src/config.js";\n');
    const failure = (error: { stdout: string; stderr: string }) => error.stdout + error.stderr;
    try {
      const linted = await run("npx", ["biome", "lint", "packages/client/src"], { cwd: clone }).then(
        () => undefined,
        failure,
      );
      assert.ok(linted !== undefined, "lint passed a client file that imports src/config.ts");
      assert.match(linted, /reaches-into-the-server\.ts.*noRestrictedImports/);
      assert.match(linted, /never a file outside its src\//);
      const built = await run("npm", ["run", "build", "-w", "packages/client"], { cwd: clone }).then(
        () => undefined,
        failure,
      );
      assert.ok(built !== undefined, "the client's build succeeded with an import of src/config.ts");
    } finally {
      await rm(fixture);
    }
  });

  it("installs engine-strict into an empty project, offline, with only its own dependencies, and pulls and loads a signed plugin", async () => {
    const project = join(dir, "runtime");
    await mkdir(project);
    const tarballs: Record<string, Packed> = {};
    for (const name of ["atomix-plugins-client", "atomix-plugins-core"]) {
      const file = `${name}-0.1.0.tgz`;
      const bytes = await readFile(join(dir, file)); // packed by the test above
      tarballs[name] = {
        spec: `file:../${file}`,
        integrity: `sha512-${createHash("sha512").update(bytes).digest("base64")}`,
      };
    }
    const spec = (tarballs["atomix-plugins-client"] as Packed).spec;
    await writeFile(
      join(project, "package.json"),
      JSON.stringify({
        name: "a-runtime",
        private: true,
        type: "module",
        dependencies: { "atomix-plugins-client": spec },
      }),
    );
    const repoLock = JSON.parse(await readFile(join(clone, "package-lock.json"), "utf8")) as Lock;
    await writeFile(
      join(project, "package-lock.json"),
      JSON.stringify(clientProjectLock(repoLock, tarballs)),
    );
    const output = await npm(["install", "--offline", "--engine-strict", "--no-audit", "--no-fund"], project);
    assert.doesNotMatch(output, /EBADENGINE/, output);

    const installed = join(project, "node_modules");
    const names = (await readdir(installed)).flatMap((name) => (name.startsWith("@") ? [] : [name]));
    const scoped = await Promise.all(
      (await readdir(installed))
        .filter((name) => name.startsWith("@"))
        .map(async (scope) => (await readdir(join(installed, scope))).map((name) => `${scope}/${name}`)),
    );
    const packages = [...names, ...scoped.flat()];
    assert.ok(packages.includes("atomix-plugins-client"));
    assert.ok(packages.includes("atomix-plugins-core"));
    for (const name of SERVER_ONLY) assert.ok(!packages.includes(name), `${name} came with the client`);

    // The dependencies the manifest names are exactly those its code imports.
    const manifest = JSON.parse(
      await readFile(join(installed, "atomix-plugins-client", "package.json"), "utf8"),
    ) as { dependencies: Record<string, string> };
    assert.deepEqual(
      [...(await bareImports(join(installed, "atomix-plugins-client", "dist")))].sort(),
      Object.keys(manifest.dependencies).sort(),
    );

    const clientBytes = await diskBytes(installed);
    const serverBytes = await serverInstallBytes();
    // What a runtime image pays for the client, against the server's
    // production install (README, "The client library", has the figures).
    assert.ok(
      clientBytes <= serverBytes / 10,
      `the client installs ${clientBytes} bytes, more than a tenth of the server's ${serverBytes}`,
    );

    // A runtime's code, using nothing but the installed package.
    const script = join(project, "runtime.mjs");
    await writeFile(
      script,
      `import { createPluginClient, loadPlugin } from "atomix-plugins-client";
const [address, blobKey, pluginKey, to, cacheDir, pem] = process.argv.slice(2);
const client = createPluginClient({ address, trustedKeys: [pem] });
const pulled = await client.pull(JSON.parse(blobKey), { to });
const loaded = await loadPlugin(JSON.parse(pluginKey), { client, cacheDir, exportName: "driver" });
client.close();
console.log(JSON.stringify({ pulled, greeting: loaded.plugin.greet("runtime"), digest: loaded.digest }));`,
    );
    const { stdout } = await run(
      process.execPath,
      [
        script,
        server.address,
        JSON.stringify(blobKey),
        JSON.stringify(pluginKey),
        join(dir, "pulled"),
        join(dir, "cache"),
        publicKeyPem,
      ],
      { cwd: project },
    );
    const result = JSON.parse(stdout) as {
      pulled: { digest: string; size: number; verifiedBy: string };
      greeting: string;
      digest: string;
    };
    assert.equal(result.pulled.digest, `sha256:${createHash("sha256").update(blob).digest("hex")}`);
    assert.equal(result.pulled.size, blob.byteLength);
    assert.equal(result.pulled.verifiedBy, "provenance");
    assert.equal(result.greeting, "hello, runtime");
    assert.equal(result.digest, `sha256:${createHash("sha256").update(pluginSource).digest("hex")}`);
    console.log(`client install: ${clientBytes} bytes; server production install: ${serverBytes} bytes`);
  });
});
