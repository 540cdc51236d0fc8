import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { Code, createPluginClient, PluginError } from "../src/client/index.js";
import { PluginCompilerService, PluginRegistryService } from "../src/gen/atomix/runtime/v1/plugin.js";

/** test/fixtures/tls, from dist/test/. */
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/tls/${name}`, import.meta.url));
const key = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};
const DIGEST = `sha256:${"ab".repeat(32)}`;
const ARTIFACT = randomBytes(3 * 1024 * 1024 + 5);

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
  let server: Server;
  let address: string;

  before(async () => {
    // A PluginCompiler that demands mutual TLS, answering with a fixed reference.
    server = new Server();
    server.addService(PluginCompilerService, {
      compilePlugin(_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<{ plugin: string }>) {
        callback(null, { plugin: `atomix-plugin://1.0.0/node20/counter@1.0.0@${DIGEST}` });
      },
    });
    // A PluginRegistry serving one artifact in 1 MiB chunks.
    server.addService(PluginRegistryService, {
      pullPlugin(call: ServerWritableStream<unknown, { data: Buffer }>) {
        const headers = new Metadata();
        headers.set("x-plugin-digest", `sha256:${createHash("sha256").update(ARTIFACT).digest("hex")}`);
        headers.set("x-plugin-size", String(ARTIFACT.length));
        call.sendMetadata(headers);
        for (let at = 0; at < ARTIFACT.length; at += 1024 * 1024) {
          call.write({ data: ARTIFACT.subarray(at, at + 1024 * 1024) });
        }
        call.end();
      },
    });
    const credentials = ServerCredentials.createSsl(
      readFileSync(fixture("ca.pem")),
      [
        {
          private_key: readFileSync(fixture("server-key.pem")),
          cert_chain: readFileSync(fixture("server.pem")),
        },
      ],
      true,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", credentials, (error, p) => (error ? reject(error) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });
  after(() => {
    server.forceShutdown();
  });

  it("connects with a CA, a client certificate and a server name", async () => {
    const client = createPluginClient({
      address,
      tls: {
        caFile: fixture("ca.pem"),
        certFile: fixture("client.pem"),
        keyFile: fixture("client-key.pem"),
        serverName: "registry.test",
      },
    });
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
