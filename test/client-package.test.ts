import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createPluginClient } from "../src/client/plugin-client.js";
import { generateSigningKey } from "../src/provenance/signing-key.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLIENT = join(ROOT, "packages", "client");
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

describe("the client package (packages/client)", () => {
  let dir: string;
  let server: TestServer;
  const key = {
    runtime: { version: "1.0.0", buildVersion: "node20" },
    plugin: { name: "embedded", version: "1.0.0" },
  };
  const artifact = randomBytes(3 * 1024 * 1024 + 17);
  let publicKeyPem: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atomix-client-package-"));
    const pair = generateSigningKey("ecdsa-p256");
    publicKeyPem = pair.publicKeyPem;
    await writeFile(join(dir, "signing.key"), pair.privateKeyPem, { mode: 0o600 });
    server = await startTestServer({
      adminToken: "package-test",
      config: { signingKey: join(dir, "signing.key") },
    });
    const admin = createPluginClient({ address: server.address, token: "package-test" });
    try {
      await admin.push(key, [artifact]);
    } finally {
      admin.close();
    }
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("installs alone, without toolchains or server libraries, and pulls a signed plugin verified", async () => {
    await run(join(ROOT, "node_modules", ".bin", "tsc"), ["-p", join(CLIENT, "tsconfig.json")]);
    const packed = await run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: CLIENT });
    const [{ filename }] = JSON.parse(packed.stdout) as [{ filename: string }];
    const project = join(dir, "runtime");
    await mkdir(project);
    await writeFile(
      join(project, "package.json"),
      JSON.stringify({ name: "a-runtime", private: true, type: "module" }),
    );
    // From npm's cache when `npm ci` filled it, as on CI; the registry otherwise.
    await run(
      "npm",
      ["install", "--prefer-offline", "--no-audit", "--no-fund", "--omit=dev", join(dir, filename)],
      {
        cwd: project,
      },
    );

    const installed = join(project, "node_modules");
    const names = (await readdir(installed)).flatMap((name) => (name.startsWith("@") ? [] : [name]));
    const scoped = await Promise.all(
      (await readdir(installed))
        .filter((name) => name.startsWith("@"))
        .map(async (scope) => (await readdir(join(installed, scope))).map((name) => `${scope}/${name}`)),
    );
    const packages = [...names, ...scoped.flat()];
    assert.ok(packages.includes("atomix-plugins-client"));
    for (const name of SERVER_ONLY) assert.ok(!packages.includes(name), `${name} came with the client`);

    const clientBytes = await diskBytes(installed);
    const serverBytes = await serverInstallBytes();
    // What a runtime image pays for the client, against the server's
    // production install (README, "The client library", has the figures).
    assert.ok(
      clientBytes <= serverBytes / 10,
      `the client installs ${clientBytes} bytes, more than a tenth of the server's ${serverBytes}`,
    );

    // A runtime's code, using nothing but the installed package.
    const script = join(project, "pull.mjs");
    await writeFile(
      script,
      `import { createPluginClient } from "atomix-plugins-client";
const [address, key, to, pem] = process.argv.slice(2);
const client = createPluginClient({ address, trustedKeys: [pem] });
const result = await client.pull(JSON.parse(key), { to });
client.close();
console.log(JSON.stringify(result));`,
    );
    const to = join(dir, "pulled");
    const { stdout } = await run(
      process.execPath,
      [script, server.address, JSON.stringify(key), to, publicKeyPem],
      {
        cwd: project,
      },
    );
    const result = JSON.parse(stdout) as { digest: string; size: number };
    assert.equal(result.digest, `sha256:${createHash("sha256").update(artifact).digest("hex")}`);
    assert.equal(result.size, artifact.byteLength);
    console.log(`client install: ${clientBytes} bytes; server production install: ${serverBytes} bytes`);
  });
});
