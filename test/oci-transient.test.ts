import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { createRuntimeAdminClient } from "../src/cli/runtime-admin-client.js";
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
 * The OCI store behind a proxy in front of a real registry, which fails what
 * the test asks for the way a registry does for a moment: 500 to a manifest
 * GET (Distribution's answer to a GET racing a PUT of the same tag), a blob
 * unknown to a manifest PUT (one being linked by another upload), or the
 * manifest's blob unlinked just before its PUT (a garbage collection).
 */
describe("OCI store and a registry's passing failures (5xx, a blob being linked, a blob collected)", () => {
  let registry: RegistryProcess;
  let proxy: Server;
  let proxyAddress: string;
  let failNextManifestGets = 0;
  let failedGets = 0;
  let failNextManifestPuts = 0;
  let failedPuts = 0;
  /** The next manifest PUT first deletes its layer's blob from the registry, as a garbage collection might. */
  let unlinkBeforeNextManifestPut = false;
  let unlinked: string | undefined;

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
      if (incoming.method === "PUT" && incoming.url?.includes("/manifests/") && unlinkBeforeNextManifestPut) {
        unlinkBeforeNextManifestPut = false;
        void unlinkThenForward(incoming, outgoing);
        return;
      }
      forward(incoming, outgoing);
    });
    const forward = (incoming: IncomingMessage, outgoing: ServerResponse, body?: Buffer) => {
      const forwarded = httpRequest(
        { host, port: Number(port), method: incoming.method, path: incoming.url, headers: incoming.headers },
        (answer) => {
          outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(outgoing);
        },
      );
      if (body) forwarded.end(body);
      else incoming.pipe(forwarded);
    };
    const unlinkThenForward = async (incoming: IncomingMessage, outgoing: ServerResponse) => {
      const chunks: Buffer[] = [];
      for await (const chunk of incoming) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks);
      const layer = (JSON.parse(body.toString()) as { layers: { digest: string }[] }).layers[0]?.digest;
      const repository = /^\/v2\/(.+)\/manifests\//.exec(incoming.url ?? "")?.[1];
      const deleted = await fetch(`http://${registry.address}/v2/${repository}/blobs/${layer}`, {
        method: "DELETE",
      });
      if (deleted.status === 202) unlinked = layer;
      forward(incoming, outgoing, body);
    };
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

  it("uploads the blob again when it was unlinked between its check and the manifest", async () => {
    const store = await createStore({ kind: "oci", url: `oci://${proxyAddress}/transient/collected` });
    const data = randomBytes(40_000);
    unlinkBeforeNextManifestPut = true;
    unlinked = undefined;
    const manifest = await store.put(keyOf("collected"), chunksOf(data));
    assert.equal(unlinked, manifest.digest, "the proxy unlinked the artifact's blob before its manifest");
    const got = await store.get(keyOf("collected"));
    assert.ok(got);
    assert.deepEqual((await readAll(store, got)).data, data);
  });
});
