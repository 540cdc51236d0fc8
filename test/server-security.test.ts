import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { inspect } from "node:util";
import { Metadata } from "@grpc/grpc-js";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { EXIT } from "../src/cli/cli-common.js";
import { EXAMPLE_RUNTIMES_DIR, parseServeConfig, splitHostPort } from "../src/config.js";
import { loadAdminAuth } from "../src/server/credentials.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const key: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};

const keyOf = (name: string): BuildKey => ({ ...key, plugin: { name, version: "1.0.0" } });

const rejectsWith = (code: Code) => (error: unknown) => error instanceof PluginError && error.code === code;

describe("admin token", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let server: ServerProcess;
  let anonymous: PluginClient;
  let wrong: PluginClient;
  let admin: PluginClient;
  before(async () => {
    dir = await tempDir();
    await writeFile(join(dir.path, "token"), "s3cret-admin-token\n");
    server = await startServerProcess({ args: ["--admin-token-file", join(dir.path, "token")] });
    anonymous = createPluginClient({ address: server.address });
    wrong = createPluginClient({ address: server.address, token: "guess" });
    admin = createPluginClient({ address: server.address, token: "s3cret-admin-token" });
  });
  after(async () => {
    for (const c of [anonymous, wrong, admin]) c?.close();
    await server?.stop();
    await dir?.remove();
  });

  it("refuses a push without the token with UNAUTHENTICATED, storing nothing", async () => {
    await assert.rejects(
      anonymous.push(keyOf("anonymous-push"), [randomBytes(100)]),
      rejectsWith(Code.Unauthenticated),
    );
    assert.equal(
      await anonymous.inspect(keyOf("anonymous-push")).catch((e: PluginError) => e.code),
      Code.NotFound,
    );
  });

  it("refuses a push with a wrong token with PERMISSION_DENIED, storing nothing", async () => {
    await assert.rejects(
      wrong.push(keyOf("wrong-push"), [randomBytes(100)]),
      rejectsWith(Code.PermissionDenied),
    );
    assert.equal(
      await anonymous.inspect(keyOf("wrong-push")).catch((e: PluginError) => e.code),
      Code.NotFound,
    );
  });

  it("refuses a remove without the token with UNAUTHENTICATED, keeping the key", async () => {
    await admin.push(keyOf("kept"), [randomBytes(100)]);
    await assert.rejects(anonymous.remove(keyOf("kept")), rejectsWith(Code.Unauthenticated));
    assert.equal((await anonymous.inspect(keyOf("kept"))).size, 100);
  });

  it("refuses gc with a wrong token with PERMISSION_DENIED", async () => {
    await assert.rejects(wrong.collectGarbage(), rejectsWith(Code.PermissionDenied));
  });

  it("leaves pulls and listing open to anyone, and lets the token's holder push and remove", async () => {
    await admin.push(key, [randomBytes(100)]);
    assert.ok((await anonymous.list()).some((m) => m.plugin?.name === key.plugin.name));
    const to = join(dir.path, "pulled");
    assert.equal((await anonymous.pull(key, { to })).size, 100);
    assert.equal(await admin.remove(key), true);
  });
});

describe("admin writes without a token", () => {
  let dir: { path: string; remove: () => Promise<void> };
  before(async () => {
    dir = await tempDir();
    // A release an operator would register: the example runtime 2.0.0 as 2.5.0.
    await cp(join(EXAMPLE_RUNTIMES_DIR, "2.0.0"), join(dir.path, "2.5.0"), { recursive: true });
  });
  after(() => dir.remove());

  it("are refused with the fix on a server that listens beyond loopback, while reads stay open", async () => {
    const server = await startServerProcess({ listen: "0.0.0.0:0" });
    const address = `127.0.0.1:${splitHostPort(server.address).port}`;
    const client = createPluginClient({ address });
    try {
      const warning = server.logs.find((entry) => /beyond loopback/.test(String(entry.msg)));
      assert.equal(warning?.level, 40, "the start-up log says admin writes are refused");
      const fix =
        /listens on 0\.0\.0\.0:\d+, beyond loopback, and has no admin token.*--admin-token-file FILE/;
      for (const write of [
        () => client.push(key, [randomBytes(100)]),
        () => client.remove(key),
        () => client.collectGarbage(),
      ]) {
        const error = await write().then(
          () => assert.fail("an admin write was accepted"),
          (thrown: unknown) => thrown as PluginError,
        );
        assert.equal(error.code, Code.PermissionDenied);
        assert.match(error.message, fix);
      }
      const added = await runCli(["runtime", "add", join(dir.path, "2.5.0")], {
        ATOMIX_PLUGINS_SERVER: address,
      });
      assert.equal(added.code, EXIT.denied, added.stderr);
      assert.match(added.stderr, /PERMISSION_DENIED.*--admin-token-file FILE/);
      const removed = await runCli(["runtime", "rm", "2.0.0"], { ATOMIX_PLUGINS_SERVER: address });
      assert.equal(removed.code, EXIT.denied, removed.stderr);
      assert.match(removed.stderr, /PERMISSION_DENIED.*--admin-token-file FILE/);
      const listed = await runCli(["runtime", "ls", "--json"], { ATOMIX_PLUGINS_SERVER: address });
      assert.ok(
        !JSON.parse(listed.stdout).some((release: { version: string }) => release.version === "2.5.0"),
        "nothing was registered",
      );
      assert.deepEqual(await client.list(), [], "listing stays open");
    } finally {
      client.close();
      await server.stop();
    }
  });

  it("are taken on a server that listens on loopback only, as npm start's default does", async () => {
    const server = await startServerProcess({ listen: "127.0.0.1:0" });
    const client = createPluginClient({ address: server.address });
    try {
      assert.ok(!server.logs.some((entry) => /beyond loopback/.test(String(entry.msg))));
      await client.push(key, [randomBytes(100)]);
      assert.equal(await client.remove(key), true);
    } finally {
      client.close();
      await server.stop();
    }
  });
});

describe("admin writes without a token, from beyond loopback", () => {
  it("are refused on a loopback server that takes calls a load balancer forwards (--trusted-proxy)", async () => {
    const server = await startServerProcess({
      listen: "127.0.0.1:0",
      args: ["--trusted-proxy", "127.0.0.1"],
    });
    const client = createPluginClient({ address: server.address });
    try {
      const warning = server.logs.find((entry) => /--trusted-proxy/.test(String(entry.msg)));
      assert.equal(warning?.level, 40, "the start-up log says admin writes are refused");
      const error = await client.push(key, [randomBytes(100)]).then(
        () => assert.fail("a push forwarded by a load balancer was accepted without a token"),
        (thrown: unknown) => thrown as PluginError,
      );
      assert.equal(error.code, Code.PermissionDenied);
      assert.match(error.message, /load balancer \(--trusted-proxy\).*--admin-token-file FILE/);
      assert.deepEqual(await client.list(), [], "nothing was stored, and reads stay open");
    } finally {
      client.close();
      await server.stop();
    }
  });

  it("are refused for a call whose peer is not loopback, though the listen name (localhost) is", async () => {
    // A name is resolved when the server binds: /etc/hosts or DNS may map
    // localhost or a *.localhost name to an address others reach.
    const auth = await loadAdminAuth({ listen: "localhost:5679" });
    assert.equal(auth.refusal, undefined);
    // grpc-js names a peer address:port, an IPv6 address without brackets.
    const from = (peer: string) => ({ metadata: new Metadata(), getPeer: () => peer });
    for (const peer of ["10.1.2.3:40000", "2001:db8::1:40000", "::ffff:10.1.2.3:40000", "unknown"]) {
      assert.throws(
        () => auth.check(from(peer)),
        (error: unknown) =>
          error instanceof PluginError &&
          error.code === Code.PermissionDenied &&
          /beyond loopback.*--admin-token-file FILE/.test(error.message),
        peer,
      );
    }
    for (const peer of ["127.0.0.1:40000", "::1:40000", "::ffff:127.0.0.1:40000"]) {
      assert.equal(auth.check(from(peer)), "anyone (the server has no admin token)", peer);
    }
  });
});

describe("TLS", () => {
  let dir: { path: string; remove: () => Promise<void> };
  before(async () => {
    dir = await tempDir();
    // A self-signed certificate for 127.0.0.1, as a private CA would issue.
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=atomix-plugins-test",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        join(dir.path, "key.pem"),
        "-out",
        join(dir.path, "cert.pem"),
      ],
      { stdio: "ignore" },
    );
  });
  after(() => dir.remove());

  it("serves pulls over TLS to clients that trust its CA, and not to plaintext clients", async () => {
    const server = await startServerProcess({
      args: ["--tls-cert", join(dir.path, "cert.pem"), "--tls-key", join(dir.path, "key.pem")],
    });
    const secure = createPluginClient({
      address: server.address,
      tls: { caFile: join(dir.path, "cert.pem") },
    });
    const plaintext = createPluginClient({ address: server.address });
    try {
      const data = randomBytes(300_000);
      await secure.push(key, [data]);
      const to = join(dir.path, "pulled");
      const pulled = await secure.pull(key, { to });
      assert.deepEqual(await readFile(pulled.path), data);
      await assert.rejects(plaintext.list({}, { timeoutMs: 3000 }), rejectsWith(Code.Unavailable));
    } finally {
      secure.close();
      plaintext.close();
      await server.stop();
    }
  });
});

describe("secrets", () => {
  const token = `admin-${randomBytes(12).toString("hex")}`;
  const password = `oci-${randomBytes(12).toString("hex")}`;
  const secretEnv = {
    ATOMIX_PLUGINS_ADMIN_TOKEN: token,
    ATOMIX_PLUGINS_OCI_USERNAME: "atomix",
    ATOMIX_PLUGINS_OCI_PASSWORD: password,
  };
  const assertHidden = (text: string) => {
    assert.ok(!text.includes(token), "the admin token was printed");
    assert.ok(!text.includes(password), "the registry password was printed");
  };
  const messageOf = (run: () => unknown): string => {
    try {
      run();
    } catch (error) {
      assert.ok(error instanceof PluginError && error.code === Code.InvalidArgument, String(error));
      return error.message;
    }
    assert.fail("expected INVALID_ARGUMENT");
  };

  it("come from the environment through the schema, and print as [secret]", () => {
    const config = parseServeConfig({ store: "oci://127.0.0.1:5000/a" }, secretEnv);
    assert.equal(config.adminToken?.reveal(), token);
    assert.equal(config.ociPassword?.reveal(), password);
    for (const shown of [inspect(config, { depth: 5 }), JSON.stringify(config), `${config.ociPassword}`]) {
      assertHidden(shown);
      assert.match(shown, /\[secret\]/);
    }
  });

  it("are not shown in an error about another option", () => {
    assertHidden(messageOf(() => parseServeConfig({ chunkSize: "abc" }, secretEnv)));
  });

  it("are named, not shown, when the admin token is not printable ASCII", () => {
    const spaced = messageOf(() => parseServeConfig({}, { ATOMIX_PLUGINS_ADMIN_TOKEN: `${token} x` }));
    assert.match(spaced, /ATOMIX_PLUGINS_ADMIN_TOKEN: expected printable ASCII/);
    assertHidden(spaced);
  });

  it("are named, not shown, when a registry password comes without its username", () => {
    const alone = messageOf(() => parseServeConfig({}, { ATOMIX_PLUGINS_OCI_PASSWORD: password }));
    assert.match(alone, /ATOMIX_PLUGINS_OCI_PASSWORD: set both ATOMIX_PLUGINS_OCI_USERNAME and/);
    assertHidden(alone);
  });

  it("are named, not shown, when the admin token is given twice", () => {
    const twice = messageOf(() => parseServeConfig({ adminTokenFile: "/etc/token" }, secretEnv));
    assert.match(twice, /ATOMIX_PLUGINS_ADMIN_TOKEN: give the admin token in the environment or in a file/);
    assertHidden(twice);
  });

  it("are not shown when a store URL carries credentials, which it must not", () => {
    const inUrl = messageOf(() =>
      parseServeConfig({ store: `oci://atomix:${password}@127.0.0.1:5000/a` }, {}),
    );
    assert.match(inUrl, /must not carry credentials/);
    assertHidden(inUrl);
  });

  it("a token file that holds no valid token is refused without showing it", async () => {
    const dir = await tempDir();
    try {
      await writeFile(join(dir.path, "token"), `${token}\u0000\n`);
      const error = await loadAdminAuth({
        adminTokenFile: join(dir.path, "token"),
        listen: "127.0.0.1:0",
      }).then(
        () => assert.fail("expected a refusal"),
        (e: unknown) => e,
      );
      assert.ok(error instanceof PluginError && error.code === Code.InvalidArgument, String(error));
      assert.match(error.message, /the admin token in .*token: expected printable ASCII/);
      assertHidden(error.message);
    } finally {
      await dir.remove();
    }
  });

  it("reach neither the start-up log nor a usage error of serve", async () => {
    const server = await startServerProcess({ args: ["--log-level", "trace"], env: secretEnv });
    const admin = createPluginClient({ address: server.address, token });
    try {
      await admin.push(key, [randomBytes(100)]);
      assert.equal(await admin.remove(key), true);
    } finally {
      admin.close();
      await server.stop();
    }
    assert.ok(server.logs.some((line) => line.msg === "serving" && line.adminToken === true));
    assertHidden(JSON.stringify(server.logs) + server.stderr());
    const usage = await runCli(["serve", "--chunk-size", "abc"], secretEnv);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /INVALID_ARGUMENT: invalid configuration: --chunk-size: /);
    assertHidden(usage.stdout + usage.stderr);
  });
});
