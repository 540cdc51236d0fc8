import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { getEventListeners } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Code, createPluginClient, PluginError } from "atomix-plugins-client";
import { parseProxyUrl, proxyFromEnvironment } from "atomix-plugins-client/proxy-selection";
import { serverTarget } from "atomix-plugins-client/server-target";
import { failure } from "./helpers/failure.js";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import { runCli } from "./helpers/run-cli.js";
import { freePort, startTinyproxy, type Tinyproxy } from "./helpers/tinyproxy.js";

/** test/fixtures/tls, from dist/test/. */
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/tls/${name}`, import.meta.url));
const key = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};
const pushed = { ...key, plugin: { name: "pushed", version: "1.0.0" } };
const ARTIFACT = randomBytes(3 * 1024 * 1024 + 5);
const DIGEST = `sha256:${createHash("sha256").update(ARTIFACT).digest("hex")}`;
const AUTH = { user: "runtime", password: "pr0xy-s3cret" };
const once = { retry: { maxAttempts: 1 } };
const serverTls = { caFile: fixture("ca.pem"), serverName: "registry.test" };

/**
 * The failures of a compile and a pull started at once through a client made
 * with `options` (each tried once), which is closed afterwards.
 */
async function compileAndPullFailures(
  options: Parameters<typeof createPluginClient>[0],
  to: string,
): Promise<PluginError[]> {
  const client = createPluginClient(options);
  try {
    const calls = [client.compile(key, once), client.pull(key, { to, ...once })];
    const errors: PluginError[] = [];
    for (const call of calls) errors.push(await failure(call));
    return errors;
  } finally {
    client.close();
  }
}

/** The CLI's pull of `key` into `to`. */
const cliPull = (to: string) => [
  "pull",
  "counter@1.0.0",
  "--runtime",
  "1.0.0",
  "--build",
  "node20",
  "-o",
  to,
];

function thrown(make: () => unknown): PluginError {
  try {
    make();
  } catch (error) {
    assert.ok(error instanceof PluginError, String(error));
    return error;
  }
  assert.fail("nothing was thrown");
}

const port = (address: string) => address.split(":").at(-1);

/**
 * A proxy of our own for the answers a well-behaved one never gives: `answer`
 * gets each client socket once its CONNECT request head is in, and the
 * `host:port` it asked for.
 */
async function scriptedProxy(
  answer: (client: Socket, target: string, index: number) => void,
): Promise<{ address: string; connections(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let index = 0;
  const server = createServer((client) => {
    sockets.add(client);
    client.on("error", () => {});
    client.on("close", () => sockets.delete(client));
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      client.off("data", onData);
      client.pause();
      answer(client, /^CONNECT (\S+) /.exec(head)?.[1] ?? "", index++);
    };
    client.on("data", onData);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => sockets.size,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Waits (5 s at most) until the client dropped every connection to `proxy`. */
async function dropsAll(proxy: { connections(): number }): Promise<void> {
  for (let waited = 0; proxy.connections() > 0 && waited < 5000; waited += 10) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(proxy.connections(), 0, "the client still holds connections to the proxy");
}

/** Whether the client's bytes (preface first) hold a SETTINGS frame with ACK: it read the server's SETTINGS. */
function acknowledgesSettings(sent: Buffer): boolean {
  for (let at = 24; at + 9 <= sent.length; at += 9 + sent.readUIntBE(at, 3)) {
    if (sent[at + 3] === 4 && ((sent[at + 4] as number) & 1) === 1) return true;
  }
  return false;
}

/**
 * Opens the tunnel, sending the 200 answer and the server's first bytes
 * (its SETTINGS) in one write, as a proxy may. The rest of the server's
 * bytes wait until the client acknowledged those SETTINGS: a client that
 * lost the early bytes never gets an answer. With `hold` false the rest
 * follows at once: the next read must not land on the early bytes.
 */
function tunnelWithEarlyBytes(client: Socket, target: string, hold = true): void {
  const upstream = connect(Number(port(target)), "127.0.0.1");
  upstream.on("error", () => client.destroy());
  client.on("close", () => upstream.destroy());
  upstream.once("data", (first: Buffer) => {
    client.write(Buffer.concat([Buffer.from("HTTP/1.1 200 Connection established\r\n\r\n"), first]));
    let sent = Buffer.alloc(0);
    let held: Buffer[] | undefined = hold ? [] : undefined;
    upstream.on("data", (chunk: Buffer) => (held ? held.push(chunk) : client.write(chunk)));
    client.on("data", (chunk: Buffer) => {
      upstream.write(chunk);
      if (!held) return;
      sent = Buffer.concat([sent, chunk]);
      if (!acknowledgesSettings(sent)) return;
      for (const chunk of held) client.write(chunk);
      held = undefined;
    });
    client.resume();
  });
}

describe("proxy selection from the environment", () => {
  const at = (host: string, port = 443) => ({ host, port });
  const proxied = (env: Record<string, string>, host: string, port?: number) =>
    proxyFromEnvironment(at(host, port), env)?.shown;

  it("takes grpc_proxy, then https_proxy, then http_proxy, lower-case first", () => {
    const all = {
      grpc_proxy: "http://g:1",
      https_proxy: "http://s:2",
      HTTPS_PROXY: "http://upper:3",
      http_proxy: "http://h:4",
    };
    assert.equal(proxied(all, "registry.example"), "http://g:1");
    assert.equal(proxied({ ...all, grpc_proxy: "" }, "registry.example"), "http://s:2");
    assert.equal(
      proxied({ HTTPS_PROXY: "http://upper:3", http_proxy: "h:4" }, "registry.example"),
      "http://upper:3",
    );
    assert.equal(proxied({ http_proxy: "proxy.corp:3128" }, "registry.example"), "http://proxy.corp:3128");
    assert.equal(proxied({ HTTP_PROXY: "http://proxy.corp" }, "registry.example"), "http://proxy.corp");
    assert.equal(proxied({}, "registry.example"), undefined);
  });

  it("never proxies unix: paths, localhost or loopback addresses", () => {
    const env = { grpc_proxy: "http://proxy.corp:3128" };
    for (const host of [
      "localhost",
      "LOCALHOST.",
      "a.localhost",
      "127.0.0.1",
      "127.8.9.10",
      "::1",
      "0:0:0:0:0:0:0:1",
      "::ffff:127.0.0.1",
    ]) {
      assert.equal(proxied(env, host), undefined, host);
    }
    assert.equal(proxyFromEnvironment({ path: "/run/atomix.sock" }, env), undefined);
    assert.equal(proxied(env, "128.0.0.1"), "http://proxy.corp:3128");
    assert.equal(serverTarget("127.0.0.1:7443", undefined, undefined, env).proxy, undefined);
    assert.equal(serverTarget("unix:/run/atomix.sock", undefined, undefined, env).proxy, undefined);
    assert.equal(
      serverTarget("registry.example:443", undefined, undefined, env).proxy,
      "http://proxy.corp:3128",
    );
  });

  it("exempts by name and subdomain, IP, CIDR, port and *", () => {
    const withExemptions = (no_proxy: string) => ({ grpc_proxy: "http://p:1", no_proxy });
    const env = withExemptions(
      "example.com, .corp.test,*.internal, 10.0.0.0/8,192.168.1.7, [2001:db8::1], fd00::/8, plain:8443",
    );
    assert.equal(proxied(env, "example.com"), undefined);
    assert.equal(proxied(env, "a.b.example.com"), undefined);
    assert.equal(proxied(env, "EXAMPLE.COM."), undefined);
    assert.equal(proxied(env, "notexample.com"), "http://p:1");
    assert.equal(proxied(env, "corp.test"), undefined);
    assert.equal(proxied(env, "x.corp.test"), undefined);
    assert.equal(proxied(env, "x.internal"), undefined);
    assert.equal(proxied(env, "10.200.3.4"), undefined);
    assert.equal(proxied(env, "11.0.0.1"), "http://p:1");
    assert.equal(proxied(env, "192.168.1.7"), undefined);
    assert.equal(proxied(env, "192.168.1.8"), "http://p:1");
    assert.equal(proxied(env, "2001:db8::1"), undefined);
    assert.equal(proxied(env, "fd12::5"), undefined);
    assert.equal(proxied(env, "2001:db8::2"), "http://p:1");
    // An entry with a port exempts that port only.
    assert.equal(proxied(env, "plain", 8443), undefined);
    assert.equal(proxied(env, "plain", 443), "http://p:1");
    // A CIDR block takes a port too; an IPv6 one may be bracketed.
    assert.equal(proxied(withExemptions("10.0.0.0/8:443"), "10.1.1.1", 443), undefined);
    assert.equal(proxied(withExemptions("10.0.0.0/8:443"), "10.1.1.1", 80), "http://p:1");
    assert.equal(proxied(withExemptions("[2001:DB8::]/32:443"), "2001:db8::5", 443), undefined);
    assert.equal(proxied(withExemptions("[2001:db8::]/32"), "2001:db8::5", 80), undefined);
    assert.equal(proxied(withExemptions("2001:db8::/32:443"), "2001:db8::5", 80), "http://p:1");
    assert.equal(proxied(withExemptions("10.0.0.0/33"), "10.1.1.1"), "http://p:1");
    // Case, whitespace (tabs too) and empty entries.
    assert.equal(proxied(withExemptions("\t REGISTRY.Example ,,"), "Registry.EXAMPLE."), undefined);
    assert.equal(proxied(withExemptions("a.test,, *"), "registry.example"), undefined);
    assert.equal(proxied(withExemptions("registry.example"), "xregistry.example"), "http://p:1");
    assert.equal(proxied(withExemptions("10.1.1.1:443"), "10.1.1.1", 443), undefined);
    assert.equal(proxied(withExemptions("10.1.1.1:443"), "10.1.1.1", 80), "http://p:1");
    assert.equal(proxied(withExemptions("[2001:db8::1]:443"), "2001:db8::1", 443), undefined);
    // Names are not resolved: a CIDR block exempts IP destinations only.
    assert.equal(proxied(withExemptions("0.0.0.0/0"), "registry.example"), "http://p:1");
    assert.equal(proxied(withExemptions("*"), "registry.example"), undefined);
    assert.equal(proxied(withExemptions(" , "), "registry.example"), "http://p:1");
    // no_grpc_proxy, when set, is the list; no_proxy then does not count.
    const both = { grpc_proxy: "http://p:1", no_grpc_proxy: "a.test", NO_PROXY: "b.test" };
    assert.equal(proxied(both, "a.test"), undefined);
    assert.equal(proxied(both, "b.test"), "http://p:1");
    assert.equal(proxied({ grpc_proxy: "http://p:1", NO_PROXY: "b.test" }, "b.test"), undefined);
  });

  it("reads credentials and refuses other schemes, naming the source but never the password", () => {
    const parsed = parseProxyUrl("http://us%40er:p%3Ass@proxy.corp:3128/", "$https_proxy");
    assert.deepEqual(parsed.credentials, { user: "us@er", password: "p:ss" });
    assert.equal(parsed.shown, "http://us%40er@proxy.corp:3128");
    assert.equal(parseProxyUrl("proxy.corp", "x").port, 80);
    const socks = thrown(() =>
      serverTarget("registry.example:443", undefined, undefined, {
        https_proxy: "socks5://u:hunter2@p:1080",
      }),
    );
    assert.equal(socks.code, Code.InvalidArgument);
    assert.match(socks.message, /\$https_proxy/);
    assert.match(socks.message, /socks5/);
    assert.doesNotMatch(socks.message, /hunter2/);
    const https = thrown(() =>
      createPluginClient({ address: "registry.example:443", proxy: "https://u:hunter2@p" }),
    );
    assert.equal(https.code, Code.InvalidArgument);
    assert.match(https.message, /proxy option/);
    assert.doesNotMatch(https.message, /hunter2/);
  });

  // Each would go into the CONNECT line.
  for (const address of [
    "evil\r\n\r\nGET http://x/ HTTP/1.1\r\nHost x.test:443",
    "a b:443",
    "a\u0000b:443",
  ]) {
    it(`refuses a server address with whitespace or control characters: ${JSON.stringify(address)}`, () => {
      const error = thrown(() => serverTarget(address, undefined, "http://p:1", {}));
      assert.equal(error.code, Code.InvalidArgument);
      assert.doesNotMatch(error.message, /[\r\n\0]/);
    });
  }

  // Unencoded, each ends the authority early: host "user", port 1234...
  for (const text of [
    "http://user:1234/secret@proxy.corp:3128",
    "http://user:1234?secret@proxy.corp",
    "http://user:1234#secret@proxy.corp",
    "http://user:1234\\secret@proxy.corp",
    "http://user:1234%zzsecret@proxy.corp",
  ]) {
    it(`refuses a proxy password whose / ? # \\ or bad % would end up in messages: ${text}`, () => {
      const error = thrown(() => parseProxyUrl(text, "$grpc_proxy"));
      assert.equal(error.code, Code.InvalidArgument, text);
      assert.match(error.message, /^\$grpc_proxy is not a proxy URL/);
      assert.doesNotMatch(error.message, /1234|secret/, text);
    });
  }

  it("takes a proxy URL with a path (ignored) and an IPv6 proxy with an encoded password", () => {
    assert.equal(parseProxyUrl("http://proxy.corp:3128/ignored", "x").shown, "http://proxy.corp:3128");
    const v6 = parseProxyUrl("u:s%2Fcret@[fd00::7]:3128", "x");
    assert.deepEqual([v6.host, v6.port, v6.shown], ["fd00::7", 3128, "http://u@[fd00::7]:3128"]);
    assert.equal(v6.credentials?.password, "s/cret");
  });
});

describe("client through an HTTP CONNECT proxy (tinyproxy)", () => {
  let plain: TestServer;
  let secure: TestServer;
  let proxy: Tinyproxy;
  let guarded: Tinyproxy;
  let work: string;

  before(async () => {
    [plain, secure, proxy, guarded, work] = await Promise.all([
      startTestServer(),
      startTestServer({ config: { tlsCert: fixture("server.pem"), tlsKey: fixture("server-key.pem") } }),
      startTinyproxy(),
      startTinyproxy(AUTH),
      mkdtemp(join(tmpdir(), "atomix-proxy-")),
    ]);
    // The artifact every test pulls, pushed directly.
    for (const [address, tls] of [
      [plain.address, undefined],
      [secure.address, serverTls],
    ] as const) {
      const admin = createPluginClient({ address, ...(tls && { tls }), proxy: false });
      try {
        await admin.push(key, [ARTIFACT]);
      } finally {
        admin.close();
      }
    }
  });
  after(async () => {
    await Promise.all([plain?.close(), secure?.close(), proxy?.close(), guarded?.close()]);
    await rm(work, { recursive: true, force: true });
  });

  it("pushes, compiles and pulls in plaintext through the proxy option", async () => {
    const client = createPluginClient({ address: plain.address, proxy: `http://${proxy.address}` });
    try {
      await client.push(pushed, [ARTIFACT]);
      assert.equal((await client.compile(pushed)).digest, DIGEST);
      const to = join(work, "plain.bin");
      const pulled = await client.pull(pushed, { to });
      assert.equal(pulled.digest, DIGEST);
      const bytes = await readFile(to);
      assert.ok(bytes.equals(ARTIFACT));
      assert.equal(`sha256:${createHash("sha256").update(bytes).digest("hex")}`, DIGEST);
    } finally {
      client.close();
    }
    // Loopback is proxied only because the option says so: the log shows the tunnels.
    assert.match(await proxy.log(), new RegExp(`CONNECT 127\\.0\\.0\\.1:${port(plain.address)} HTTP/1\\.1`));
  });

  it("runs TLS (ALPN h2) over the tunnel for compile and pull", async () => {
    const client = createPluginClient({ address: secure.address, tls: serverTls, proxy: proxy.address });
    try {
      assert.equal((await client.compile(key)).digest, DIGEST);
      const to = join(work, "tls.bin");
      assert.equal((await client.pull(key, { to })).digest, DIGEST);
      assert.ok((await readFile(to)).equals(ARTIFACT));
    } finally {
      client.close();
    }
    assert.match(await proxy.log(), new RegExp(`CONNECT 127\\.0\\.0\\.1:${port(secure.address)} HTTP/1\\.1`));
  });

  it("sends the proxy's credentials, and fails UNAVAILABLE without them or with wrong ones", async () => {
    const right = createPluginClient({
      address: plain.address,
      proxy: `http://${AUTH.user}:${AUTH.password}@${guarded.address}`,
    });
    try {
      assert.equal((await right.compile(key)).digest, DIGEST);
      const to = join(work, "auth.bin");
      assert.equal((await right.pull(key, { to })).digest, DIGEST);
    } finally {
      right.close();
    }
    const none = createPluginClient({ address: plain.address, proxy: `http://${guarded.address}` });
    const wrong = createPluginClient({
      address: plain.address,
      proxy: `http://${AUTH.user}:not-it@${guarded.address}`,
    });
    try {
      const missing = await failure(none.compile(key, once));
      assert.equal(missing.code, Code.Unavailable, missing.message);
      assert.match(missing.message, /407/);
      assert.match(missing.message, /needs credentials/);
      assert.ok(missing.message.includes(guarded.address), missing.message);
      const missingPull = await failure(none.pull(key, { to: join(work, "none.bin"), ...once }));
      assert.equal(missingPull.code, Code.Unavailable, missingPull.message);
      assert.match(missingPull.message, /407/);
      const refused = await failure(wrong.pull(key, { to: join(work, "wrong.bin"), ...once }));
      assert.equal(refused.code, Code.Unavailable, refused.message);
      assert.match(refused.message, /refused the credentials/);
      assert.match(refused.message, /40[17]/);
      assert.doesNotMatch(refused.message, /not-it/);
      const refusedCompile = await failure(wrong.compile(key, once));
      assert.equal(refusedCompile.code, Code.Unavailable, refusedCompile.message);
      assert.doesNotMatch(refusedCompile.message, /not-it/);
    } finally {
      none.close();
      wrong.close();
    }
  });

  it("fails UNAVAILABLE, naming the proxy, when the proxy is not listening", async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const errors = await compileAndPullFailures(
      { address: plain.address, proxy: `http://u:hunter2@${dead}` },
      join(work, "dead.bin"),
    );
    for (const error of errors) {
      assert.equal(error.code, Code.Unavailable, error.message);
      assert.ok(error.message.includes(`http://u@${dead}`), error.message);
      assert.match(error.message, /ECONNREFUSED/);
      assert.doesNotMatch(error.message, /hunter2/);
    }
  });

  it("the CLI pulls through --proxy, and grpc_proxy leaves a loopback server direct", async () => {
    const before = (await proxy.log()).split(`CONNECT 127.0.0.1:${port(plain.address)}`).length;
    const to = join(work, "cli.bin");
    const through = await runCli([...cliPull(to), "--json", "--proxy", proxy.address], {
      ATOMIX_PLUGINS_SERVER: plain.address,
    });
    assert.equal(through.code, 0, through.stderr);
    assert.equal(JSON.parse(through.stdout).digest, DIGEST);
    assert.ok((await readFile(to)).equals(ARTIFACT));
    const after = (await proxy.log()).split(`CONNECT 127.0.0.1:${port(plain.address)}`).length;
    assert.ok(after > before, "the CLI's pull went through the proxy");
    // A proxy in the environment that is not even listening: loopback stays direct.
    await writeFile(to, "");
    const direct = await runCli([...cliPull(to), "--json"], {
      ATOMIX_PLUGINS_SERVER: plain.address,
      grpc_proxy: `http://127.0.0.1:${await freePort()}`,
    });
    assert.equal(direct.code, 0, direct.stderr);
    assert.ok((await readFile(to)).equals(ARTIFACT));
  });

  it("keeps one tunnel for calls and one for pulls, with no socket or listener left over many calls", async () => {
    const tunnels = async () =>
      (await proxy.log()).split(`CONNECT 127.0.0.1:${port(plain.address)} HTTP/1.1`).length - 1;
    const sockets = () => process.getActiveResourcesInfo().filter((name) => name === "TCPSocketWrap").length;
    const signal = new AbortController().signal;
    const client = createPluginClient({ address: plain.address, proxy: proxy.address });
    try {
      const to = join(work, "kept.bin");
      const before = await tunnels();
      const round = async () => {
        await client.compile(key, { signal, timeoutMs: 20_000 });
        await client.pull(key, { to, signal, timeoutMs: 20_000 });
      };
      await round();
      const held = { sockets: sockets(), listeners: process.listenerCount("exit") };
      for (let index = 0; index < 15; index++) await round();
      assert.equal(await tunnels(), before + 2, "one tunnel for the channel, one for pulls");
      assert.deepEqual({ sockets: sockets(), listeners: process.listenerCount("exit") }, held);
      // The caller's signal carries no listener of ours once its calls ended.
      assert.equal(getEventListeners(signal, "abort").length, 0);
    } finally {
      client.close();
    }
  });

  it("the CLI names --proxy for a bad URL and never prints the password, and exits past a hostile proxy", async () => {
    const pull = cliPull(join(work, "c.bin"));
    const env = { ATOMIX_PLUGINS_SERVER: plain.address };
    const bad = await runCli([...pull, "--proxy", `http://u:1234#hunter2@${proxy.address}`], env);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /INVALID_ARGUMENT: --proxy is not a proxy URL/);
    // (A loopback server would never look at the variable.)
    const badEnv = await runCli([...pull, "--json"], {
      ATOMIX_PLUGINS_SERVER: "203.0.113.5:443",
      https_proxy: "http://u:1234/hunter2@p",
    });
    assert.equal(badEnv.code, 2, badEnv.stderr);
    assert.match(badEnv.stderr, /\$https_proxy is not a proxy URL/);
    // Refused credentials, then an answer of garbage where HTTP/2 should be: the CLI says so and exits.
    let answer = "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n";
    const hostile = await scriptedProxy((client) => client.write(answer));
    try {
      const refused = await runCli(
        [...pull, "--proxy", `http://u:hunter2@${hostile.address}`, "--json"],
        env,
      );
      assert.equal(refused.code, 5, refused.stderr);
      assert.match(JSON.parse(refused.stderr).error.message, /refused the credentials given/);
      for (const text of [bad, badEnv, refused].flatMap((run) => [run.stdout, run.stderr])) {
        assert.doesNotMatch(text, /hunter2|1234/);
      }
      answer = "HTTP/1.1 200 OK\r\n\r\nnot HTTP/2 at all\r\n";
      const garbage = await runCli(
        ["compile", "counter@1.0.0", "--runtime", "1.0.0", "--build", "node20", "--proxy", hostile.address],
        env,
      );
      assert.notEqual(garbage.code, 0);
      assert.match(garbage.stderr, /^atomix-plugins: (UNAVAILABLE|INTERNAL): .*through the proxy/m);
    } finally {
      await hostile.close();
    }
  });

  it("takes the server's bytes that came with the proxy's answer, and retries a proxy that refused", async () => {
    const relay = await scriptedProxy((client, target, index) => {
      // The first CONNECT is refused: a retry takes the call through.
      if (index === 0) client.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
      else tunnelWithEarlyBytes(client, target);
    });
    const client = createPluginClient({ address: plain.address, proxy: relay.address });
    try {
      assert.equal((await client.compile(key, { timeoutMs: 20_000 })).digest, DIGEST);
      const to = join(work, "early.bin");
      const pulled = await client.pull(key, { to, timeoutMs: 20_000 });
      assert.equal(pulled.digest, DIGEST);
      assert.ok((await readFile(to)).equals(ARTIFACT));
    } finally {
      client.close();
      await relay.close();
    }
    // The rest of the server's bytes right behind the early ones, pulled several times.
    const eager = await scriptedProxy((client, target) => tunnelWithEarlyBytes(client, target, false));
    const pulls = createPluginClient({ address: plain.address, proxy: eager.address });
    try {
      for (let round = 0; round < 3; round++) {
        // A pull running meanwhile takes the kept connection: each round dials a new tunnel.
        const to = [join(work, "eager-a.bin"), join(work, "eager-b.bin")];
        const results = await Promise.all(to.map((path) => pulls.pull(key, { to: path, ...once })));
        for (const [index, result] of results.entries()) {
          assert.equal(result.digest, DIGEST);
          assert.ok((await readFile(to[index] as string)).equals(ARTIFACT));
        }
      }
    } finally {
      pulls.close();
      await eager.close();
    }
  });

  it("fails UNAVAILABLE on a refusing, oversized, non-HTTP or early-speaking answer", async () => {
    const answers = [
      {
        answer: `HTTP/1.1 403 Forbidden${"!".repeat(500)}\r\n\r\n`,
        expect: /refused to connect to 127\.0\.0\.1:\d+: "HTTP\/1\.1 403 Forbidden!+…"$/,
      },
      {
        answer: `HTTP/1.1 200 OK\r\nX-Filler: ${"x".repeat(20_000)}\r\n\r\n`,
        expect: /more than 16384 bytes/,
      },
      { answer: "SSH-2.0-OpenSSH_9.2\r\n\r\n", expect: /what is not HTTP: "SSH-2\.0/ },
      { answer: "HTTP/1.1 200 OK\r\n\r\n", expect: /closed the connection|connection dropped|cannot reach/ },
    ];
    for (const { answer, expect } of answers) {
      const relay = await scriptedProxy((client) => client.end(answer));
      try {
        const options = { address: plain.address, proxy: relay.address };
        for (const error of await compileAndPullFailures(options, join(work, "x.bin"))) {
          assert.equal(error.code, Code.Unavailable, error.message);
          assert.match(error.message, expect);
        }
      } finally {
        await relay.close();
      }
    }
    // TLS: the server speaks only after our hello, so early bytes are the proxy's.
    const early = await scriptedProxy((client) => client.write("HTTP/1.1 200 OK\r\n\r\nsurprise"));
    try {
      const options = { address: secure.address, tls: serverTls, proxy: early.address };
      for (const error of await compileAndPullFailures(options, join(work, "x.bin"))) {
        assert.equal(error.code, Code.Unavailable, error.message);
        assert.match(error.message, /sent 8 bytes after its answer/);
      }
    } finally {
      await early.close();
    }
  });

  it("honours the deadline and the signal while the proxy does not answer", async () => {
    const silent = await scriptedProxy(() => {});
    const client = createPluginClient({ address: plain.address, proxy: silent.address });
    try {
      const to = join(work, "silent.bin");
      for (const call of [
        client.compile(key, { timeoutMs: 200 }),
        client.pull(key, { to, timeoutMs: 200 }),
      ]) {
        assert.equal((await failure(call)).code, Code.DeadlineExceeded);
      }
      const controller = new AbortController();
      const calls = [
        client.compile(key, { signal: controller.signal }),
        client.pull(key, { to, signal: controller.signal }),
      ];
      setTimeout(() => controller.abort(), 50);
      for (const call of calls) assert.equal((await failure(call)).code, Code.Cancelled);
      // No call waits for those tunnels any more: they are dropped, not left holding the process.
      await dropsAll(silent);
    } finally {
      client.close();
      await silent.close();
    }
  });

  it("close() while tunnels are being opened ends the calls at once and leaves no connection", async () => {
    const silent = await scriptedProxy(() => {});
    const client = createPluginClient({ address: plain.address, proxy: silent.address });
    try {
      const calls = [client.compile(key), client.pull(key, { to: join(work, "closed.bin") })];
      while (silent.connections() < 2) await new Promise((resolve) => setTimeout(resolve, 10));
      client.close();
      for (const call of calls) {
        const error = await failure(call);
        assert.equal(error.code, Code.Cancelled, error.message);
      }
      // The proxy sees both tunnels dropped: no socket of ours is left to hold the process.
      await dropsAll(silent);
      assert.equal((await failure(client.pull(key, { to: join(work, "closed.bin") }))).code, Code.Cancelled);
    } finally {
      client.close();
      await silent.close();
    }
  });
});
