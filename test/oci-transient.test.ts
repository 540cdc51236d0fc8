import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createRuntimeAdminClient } from "../src/client/runtime-admin-client.js";
import { Code, PluginError } from "../src/errors/plugin-error.js";
import { createStore } from "../src/store/create-store.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { startServerProcess } from "./helpers/server-process.js";
import { chunksOf, keyOf, readAll } from "./store-suite.js";

/**
 * What Distribution 2.8 answers to a manifest whose blob another upload is
 * linking at that moment (its filesystem driver rewrites the link in place):
 * seen when two replicas register the same runtime release at start.
 */
const LINK_RACE_ANSWER = JSON.stringify({
  errors: [
    { code: "DIGEST_INVALID", message: "provided digest did not match uploaded content" },
    {
      code: "MANIFEST_BLOB_UNKNOWN",
      message: "blob unknown to registry",
      detail: `sha256:${"38e2d81a".repeat(8)}`,
    },
  ],
});

/**
 * The OCI store behind a proxy that answers 500 to as many manifest GETs as
 * the test asks, as Distribution does to a GET racing a PUT of the same tag,
 * and passes everything else to a real registry.
 */
describe("OCI store and a registry's passing 5xx", () => {
  let registry: RegistryProcess;
  let proxy: Server;
  let proxyAddress: string;
  let failNextManifestGets = 0;
  let failedGets = 0;
  let failNextManifestPuts = 0;
  let failedPuts = 0;

  before(async () => {
    registry = await startRegistry();
    const [host, port] = registry.address.split(":") as [string, string];
    proxy = createServer((incoming, outgoing) => {
      if (incoming.method === "GET" && incoming.url?.includes("/manifests/") && failNextManifestGets > 0) {
        failNextManifestGets -= 1;
        failedGets += 1;
        outgoing.writeHead(500, { "content-type": "application/json" });
        outgoing.end('{"errors":[{"code":"UNKNOWN","message":"unknown error"}]}');
        return;
      }
      if (incoming.method === "PUT" && incoming.url?.includes("/manifests/") && failNextManifestPuts > 0) {
        failNextManifestPuts -= 1;
        failedPuts += 1;
        incoming.resume();
        outgoing.writeHead(400, { "content-type": "application/json" });
        outgoing.end(LINK_RACE_ANSWER);
        return;
      }
      const forwarded = httpRequest(
        { host, port: Number(port), method: incoming.method, path: incoming.url, headers: incoming.headers },
        (answer) => {
          outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(outgoing);
        },
      );
      incoming.pipe(forwarded);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    proxyAddress = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  after(async () => {
    proxy?.closeAllConnections();
    await new Promise((resolve) => proxy?.close(resolve));
    await registry?.dispose();
  });

  it("retries a read the registry failed with 500 and gets the artifact", async () => {
    const store = await createStore({ kind: "oci", url: `oci://${proxyAddress}/transient/retried` });
    const data = randomBytes(30_000);
    await store.put(keyOf("flaky"), chunksOf(data));
    failNextManifestGets = 2;
    failedGets = 0;
    const manifest = await store.get(keyOf("flaky"));
    assert.equal(failedGets, 2, "the proxy failed two GETs");
    assert.ok(manifest);
    assert.deepEqual((await readAll(store, manifest)).data, data);
  });

  it("gives up with UNAVAILABLE naming the 500 when the registry keeps failing", async () => {
    const store = await createStore({ kind: "oci", url: `oci://${proxyAddress}/transient/broken` });
    failNextManifestGets = 100;
    try {
      await store.get(keyOf("flaky"));
      assert.fail("the get succeeded");
    } catch (error) {
      assert.ok(error instanceof PluginError, String(error));
      assert.equal(Code[error.code], "Unavailable");
      assert.match(error.message, /answered 500 to GET/);
    } finally {
      failNextManifestGets = 0;
    }
  });

  it("starts a replica whose runtime release registration meets a blob another replica is linking", async () => {
    failNextManifestPuts = 2;
    failedPuts = 0;
    const server = await startServerProcess({
      http: "off",
      args: ["--store", `oci://${proxyAddress}/transient/starting`, "--shutdown-grace", "0"],
    });
    try {
      assert.equal(failedPuts, 2, "the proxy refused two manifests");
      const client = createRuntimeAdminClient({ address: server.address });
      try {
        const releases = await client.list();
        assert.ok(releases.length > 0, "the bundled runtime releases are registered");
      } finally {
        client.close();
      }
    } finally {
      failNextManifestPuts = 0;
      await server.kill();
    }
  });

  it("stops a start with UNAVAILABLE naming the registry's answer when a blob stays unknown", async () => {
    failNextManifestPuts = 100;
    try {
      await assert.rejects(
        startServerProcess({
          http: "off",
          args: ["--store", `oci://${proxyAddress}/transient/never`, "--shutdown-grace", "0"],
        }),
        /UNAVAILABLE: .*refused the manifest .*MANIFEST_BLOB_UNKNOWN/,
      );
    } finally {
      failNextManifestPuts = 0;
    }
  });
});
