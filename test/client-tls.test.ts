import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Code, createPluginClient, PluginError } from "atomix-plugins-client";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";

/** test/fixtures/tls, from dist/test/. */
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/tls/${name}`, import.meta.url));
const key = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};
const ARTIFACT = randomBytes(3 * 1024 * 1024 + 5);
const DIGEST = `sha256:${createHash("sha256").update(ARTIFACT).digest("hex")}`;
const mutualTls = {
  caFile: fixture("ca.pem"),
  certFile: fixture("client.pem"),
  keyFile: fixture("client-key.pem"),
  serverName: "registry.test",
};

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "OK";
  } catch (error) {
    assert.ok(error instanceof PluginError, String(error));
    return Code[error.code] ?? "?";
  }
}

describe("client TLS options", () => {
  let server: TestServer;
  let address: string;

  before(async () => {
    // The server as serve runs it, demanding mutual TLS, holding one artifact.
    server = await startTestServer({
      config: {
        tlsCert: fixture("server.pem"),
        tlsKey: fixture("server-key.pem"),
        tlsClientCa: fixture("ca.pem"),
      },
    });
    address = server.address;
    const admin = createPluginClient({ address, tls: mutualTls });
    try {
      await admin.push(key, [ARTIFACT]);
    } finally {
      admin.close();
    }
  });
  after(() => server.close());

  it("connects with a CA, a client certificate and a server name", async () => {
    const client = createPluginClient({ address, tls: mutualTls });
    const dir = await mkdtemp(join(tmpdir(), "atomix-tls-"));
    try {
      assert.equal((await client.compile(key)).digest, DIGEST);
      // Pulls take the client's own reader, over the same TLS settings.
      await client.pull(key, { to: join(dir, "artifact") });
      assert.ok((await readFile(join(dir, "artifact"))).equals(ARTIFACT));
    } finally {
      client.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("fails without the client certificate, or in plaintext", async () => {
    const retry = { maxAttempts: 1 };
    const noCert = createPluginClient({
      address,
      tls: { caFile: fixture("ca.pem"), serverName: "registry.test" },
    });
    const plaintext = createPluginClient({ address });
    try {
      assert.equal(await code(noCert.compile(key, { retry })), "Unavailable");
      assert.equal(await code(plaintext.compile(key, { retry })), "Unavailable");
      const to = join(tmpdir(), `atomix-tls-never-${process.pid}`);
      assert.equal(await code(noCert.pull(key, { to, retry })), "Unavailable");
      assert.equal(await code(plaintext.pull(key, { to, retry })), "Unavailable");
    } finally {
      noCert.close();
      plaintext.close();
    }
  });

  it("refuses incomplete or missing TLS files before connecting", () => {
    assert.throws(
      () => createPluginClient({ address, tls: { certFile: fixture("client.pem") } }),
      (error: PluginError) => error.code === Code.InvalidArgument && /needs its key/.test(error.message),
    );
    assert.throws(
      () => createPluginClient({ address, tls: { caFile: fixture("absent.pem") } }),
      (error: PluginError) => error.code === Code.NotFound && /absent\.pem/.test(error.message),
    );
  });
});
