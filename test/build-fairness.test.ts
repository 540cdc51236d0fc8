import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { PeerCertificate } from "node:tls";
import { fileURLToPath } from "node:url";
import { Metadata, type ServiceError } from "@grpc/grpc-js";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { EXAMPLE_PLUGINS_DIR } from "../src/config.js";
import { addressGroup, callerOf, trustedProxyList } from "../src/server/caller-identity.js";
import { failure } from "./helpers/failure.js";
import { createGrpcClients, fromServiceError } from "./helpers/grpc-js-clients.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { startServerProcess, tempDir } from "./helpers/server-process.js";
import { startTcpRelay } from "./helpers/tcp-relay.js";

const key = (name: string, version: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version },
});

/** test/fixtures/tls, from dist/test/. */
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/tls/${name}`, import.meta.url));
const mutualTls = {
  caFile: fixture("ca.pem"),
  certFile: fixture("client.pem"),
  keyFile: fixture("client-key.pem"),
  serverName: "registry.test",
};

type CompileWithMetadata = (
  request: unknown,
  metadata: Metadata,
  callback: (error: ServiceError | null) => void,
) => void;

const noRetry = { retry: { maxAttempts: 1 } };

/** Versions of the hanging plugin in the catalog: each is a build key of its own. */
const HANG_VERSIONS = 200;

/**
 * One caller asking, without end, for builds of distinct keys that hang,
 * keeping `outstanding` calls in flight, until stopped.
 */
function flood(client: PluginClient, outstanding: number) {
  let next = 0;
  let stopped = false;
  const refusals: PluginError[] = [];
  const others: unknown[] = [];
  let onRefusal: () => void = () => {};
  const refused = new Promise<void>((resolve) => {
    onRefusal = resolve;
  });
  const worker = async () => {
    while (!stopped) {
      const version = `1.0.${next++ % HANG_VERSIONS}`;
      try {
        await client.compile(key("hang", version), { retry: { maxAttempts: 1 } });
        others.push(`${version} built`);
      } catch (error) {
        if (error instanceof PluginError && error.code === Code.ResourceExhausted) {
          refusals.push(error);
          onRefusal();
          // Paces the flood a little: refusals come back at once.
          await new Promise((resolve) => setTimeout(resolve, 20));
        } else if (!stopped) {
          others.push(error);
        }
      }
    }
  };
  const workers = Array.from({ length: outstanding }, worker);
  return {
    refusals,
    others,
    /** Resolves once the server has refused one of its calls: it holds all it may. */
    refused,
    stop: () => {
      stopped = true;
      return Promise.allSettled(workers);
    },
  };
}

describe("fair build slots", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let catalog: string;

  before(async () => {
    dir = await tempDir("atomix-fairness-");
    catalog = join(dir.path, "catalog");
    for (let patch = 0; patch < HANG_VERSIONS; patch++) {
      const root = join(catalog, "hang", `1.0.${patch}`);
      await mkdir(join(root, "src"), { recursive: true });
      await writeFile(
        join(root, "package.json"),
        JSON.stringify({
          name: "hang",
          version: `1.0.${patch}`,
          type: "module",
          peerDependencies: { "@atomix/runtime-sdk": "*" },
        }),
      );
      // Its load never ends: a top-level await that never settles, on a live event loop.
      await writeFile(
        join(root, "src", "index.ts"),
        '// @ts-nocheck\nawait new Promise(() => setInterval(() => {}, 1000));\nexport const driver = { name: "hang", handle: (r: { key: string }) => r.key };\n',
      );
    }
  });
  after(() => dir.remove());

  it("one caller flooding distinct keys of a hanging plugin is refused beyond its share, and another caller's build completes meanwhile", async (t) => {
    const server = await startServerProcess({
      args: [
        ...["--sources", catalog, "--sources", EXAMPLE_PLUGINS_DIR],
        ...["--build-concurrency", "2", "--build-queue", "8", "--builds-per-caller", "3"],
        ...["--shutdown-grace", "1000"],
      ],
    });
    const relay = await startTcpRelay(server.address, { sourceAddress: "127.0.0.2" });
    const attacker = createPluginClient({ address: server.address });
    const other = createPluginClient({ address: relay.address });
    // More calls in flight than there are slots and queue places together.
    const attack = flood(attacker, 16);
    try {
      await attack.refused;
      // The flood goes on while the other caller builds.
      const reference = await other.compile(key("counter", "1.0.0"), { retry: { maxAttempts: 1 } });
      assert.match(reference.digest ?? "", /^sha256:[0-9a-f]{64}$/);
      assert.ok(attack.refusals.length > 0);
      t.diagnostic(`the flood's calls refused while the other build ran: ${attack.refusals.length}`);
      for (const refusal of attack.refusals) {
        assert.match(
          refusal.message,
          /caller "ip:127\.0\.0\.1" has 3 builds running or waiting, the most one caller may have \(--builds-per-caller 3\)/,
        );
      }
      const metrics = await (await fetch(`http://${server.http}/metrics`)).text();
      const refused = /^atomix_plugins_builds_refused_per_caller_total (\d+)$/m.exec(metrics);
      assert.ok(Number(refused?.[1]) >= attack.refusals.length, "every refusal is counted");
      assert.equal(await checkHealth(server.address), "SERVING");
    } finally {
      const stopping = attack.stop();
      attacker.close();
      other.close();
      await server.stop();
      await stopping;
      await relay.close();
    }
    assert.deepEqual(
      attack.others.filter((outcome) => typeof outcome === "string"),
      [],
      "no hanging build ever succeeds",
    );
  });

  it("counts a client certificate's identity as one caller, from whatever address it calls", async () => {
    const server = await startServerProcess({
      args: [
        ...["--sources", catalog, "--sources", EXAMPLE_PLUGINS_DIR],
        ...["--build-concurrency", "2", "--builds-per-caller", "1", "--shutdown-grace", "1000"],
        ...["--tls-cert", fixture("server.pem"), "--tls-key", fixture("server-key.pem")],
        ...["--tls-client-ca", fixture("ca.pem")],
      ],
    });
    const relay = await startTcpRelay(server.address, { sourceAddress: "127.0.0.2" });
    const first = createPluginClient({ address: server.address, tls: mutualTls });
    const second = createPluginClient({ address: relay.address, tls: mutualTls });
    try {
      // Both ask at once, from two addresses, with one identity: it may hold
      // one build, so one of them is refused, whichever came second.
      const outcomes = await Promise.all(
        [first.compile(key("hang", "1.0.0"), noRetry), second.compile(key("hang", "1.0.1"), noRetry)].map(
          (call) => failure(call),
        ),
      );
      const refusals = outcomes.filter((error) => error.code === Code.ResourceExhausted);
      assert.equal(refusals.length, 1, outcomes.map((error) => error.message).join("; "));
      assert.match(refusals[0]?.message ?? "", /caller "cert:CN=runtime" has 1 build running or waiting/);
    } finally {
      first.close();
      second.close();
      await server.stop();
      await relay.close();
    }
  });

  it("counts a call from a trusted proxy as the client its x-forwarded-for names last, and ignores the header from anyone else", async () => {
    /** Three calls on one connection, as a load balancer makes them, each for a hanging build; their refusals. */
    const refusalsBehind = async (args: string[]): Promise<string[]> => {
      const server = await startServerProcess({
        args: [
          ...["--sources", catalog, ...args],
          ...["--build-concurrency", "3", "--builds-per-caller", "1", "--shutdown-grace", "1000"],
        ],
      });
      const clients = createGrpcClients({ address: server.address });
      const call = (version: string, forwardedFor: string) =>
        new Promise<string>((resolve) => {
          const metadata = new Metadata();
          metadata.set("x-forwarded-for", forwardedFor);
          // grpc-js's generic client takes metadata before the callback.
          (clients.compiler.compilePlugin as unknown as CompileWithMetadata).call(
            clients.compiler,
            { runtime: { version: "1.0.0", buildVersion: "node20" }, plugin: { name: "hang", version } },
            metadata,
            (error) => resolve(error ? fromServiceError(error).message : "built"),
          );
        });
      try {
        const outcomes = await Promise.all([
          call("1.0.0", "198.51.100.1"),
          // A client may write addresses of its own; the proxy appends the one it saw.
          call("1.0.1", "203.0.113.9, 198.51.100.1"),
          call("1.0.2", "198.51.100.2"),
        ]);
        return outcomes.filter((message) => /running or waiting, the most one caller may have/.test(message));
      } finally {
        clients.close();
        await server.stop();
      }
    };
    const trusted = await refusalsBehind(["--trusted-proxy", "127.0.0.0/8"]);
    assert.equal(trusted.length, 1, trusted.join("; "));
    assert.match(trusted[0] ?? "", /caller "ip:198\.51\.100\.1" has 1 build running or waiting/);
    const untrusted = await refusalsBehind([]);
    assert.equal(untrusted.length, 2, untrusted.join("; "));
    for (const message of untrusted)
      assert.match(message, /caller "ip:127\.0\.0\.1" has 1 build running or waiting/);
  });

  it("answers a build version the runtime does not run on without waiting for a slot", async () => {
    const server = await startServerProcess({
      args: [...["--sources", catalog], ...["--build-concurrency", "1", "--shutdown-grace", "1000"]],
    });
    const client = createPluginClient({ address: server.address });
    let hangingSettled = false;
    const hanging = client.compile(key("hang", "1.0.0"), noRetry).finally(() => {
      hangingSettled = true;
    });
    hanging.catch(() => {});
    try {
      // The one slot is taken (or about to be) by a build that hangs.
      const wrong = await failure(
        client.compile(
          { ...key("hang", "1.0.1"), runtime: { version: "1.0.0", buildVersion: "node18" } },
          noRetry,
        ),
      );
      assert.equal(wrong.code, Code.FailedPrecondition, wrong.message);
      assert.match(wrong.message, /does not run on node18; it runs on node20/);
      assert.equal(hangingSettled, false, "answered while the hanging build still holds the slot");
    } finally {
      client.close();
      await server.stop();
    }
  });

  it("groups IPv6 peers by their /64 network and IPv4-mapped peers by their IPv4 address", () => {
    assert.equal(addressGroup("2001:db8:1:2:3:4:5:6"), "ip:2001:db8:1:2::/64");
    assert.equal(addressGroup("2001:db8:1:2::9"), "ip:2001:db8:1:2::/64");
    assert.equal(addressGroup("2001:0DB8:0001:0002:ffff::1"), "ip:2001:db8:1:2::/64");
    assert.equal(addressGroup("::1"), "ip:0:0:0:0::/64");
    assert.equal(addressGroup("::ffff:127.0.0.1"), "ip:127.0.0.1");
    assert.equal(addressGroup("fe80::1%eth0"), "ip:fe80:0:0:0::/64");
    assert.equal(addressGroup("198.51.100.7"), "ip:198.51.100.7");
  });

  it("names a caller by its certificate's SPIFFE ID, else its subject, else its peer's address without the port", () => {
    const call = (peer: string, certificate?: Partial<PeerCertificate>, forwardedFor: string[] = []) => ({
      getPeer: () => peer,
      getAuthContext: () => (certificate ? { sslPeerCertificate: certificate as PeerCertificate } : {}),
      metadata: { get: (name: string) => (name === "x-forwarded-for" ? forwardedFor : []) },
    });
    assert.equal(callerOf(call("127.0.0.1:50123")), "ip:127.0.0.1");
    assert.equal(callerOf(call("2001:db8::1:443")), "ip:2001:db8:0:0::/64");
    assert.equal(callerOf(call("::ffff:10.1.2.3:443")), "ip:10.1.2.3");
    const spiffe = { subjectaltname: "DNS:a.example, URI:spiffe://example.org/ns/prod/sa/runtime" };
    assert.equal(
      callerOf(call("10.0.0.1:1", { ...spiffe, subject: { CN: "a" } } as Partial<PeerCertificate>)),
      "spiffe:spiffe://example.org/ns/prod/sa/runtime",
    );
    const subject = { subject: { CN: "runtime", O: "acme" } } as unknown as Partial<PeerCertificate>;
    assert.equal(callerOf(call("10.0.0.1:1", subject)), "cert:CN=runtime,O=acme");
    // x-forwarded-for counts only from a trusted proxy, and only what the proxies wrote.
    const proxies = trustedProxyList(["10.0.0.0/24", "fd00::/8"]);
    const forwarded = (peer: string, ...values: string[]) => callerOf(call(peer, subject, values), proxies);
    assert.equal(forwarded("10.0.0.1:1", "198.51.100.7"), "ip:198.51.100.7");
    assert.equal(forwarded("10.0.0.1:1", "203.0.113.1, 198.51.100.7, 10.0.0.2"), "ip:198.51.100.7");
    assert.equal(forwarded("10.0.0.1:1", "203.0.113.1", "198.51.100.7:4000"), "ip:198.51.100.7");
    assert.equal(forwarded("fd00::5:1", "[2001:db8:1:2::7]:443"), "ip:2001:db8:1:2::/64");
    assert.equal(forwarded("10.0.0.1:1", "not-an-address"), "cert:CN=runtime,O=acme");
    assert.equal(forwarded("10.0.1.1:1", "198.51.100.7"), "cert:CN=runtime,O=acme", "not a trusted proxy");
    assert.equal(callerOf(call("10.0.1.1:1", undefined, ["198.51.100.7"]), proxies), "ip:10.0.1.1");
    assert.throws(
      () => trustedProxyList(["10.0.0.0/33"]),
      /"10\.0\.0\.0\/33" is not an IP address or CIDR block/,
    );
    assert.throws(() => trustedProxyList(["proxy.example"]), /is not an IP address or CIDR block/);
  });
});
