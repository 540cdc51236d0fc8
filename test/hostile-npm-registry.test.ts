import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import ssri from "ssri";
import { c as createTar } from "tar";
import {
  createNpmRegistrySource,
  type NpmRegistrySourceOptions,
} from "../src/compiler/sources/npm-registry-source.js";
import { createPackumentCache } from "../src/compiler/sources/packument-cache.js";
import type { FetchedPackage } from "../src/compiler/sources/plugin-source.js";
import { createSourceUnpacker, type SourceUnpacker } from "../src/compiler/sources/source-unpacker.js";
import { parseServeConfig } from "../src/config.js";
import { checkHealth } from "./helpers/grpc-probes.js";
import { testSandbox } from "./helpers/sandbox.js";
import { startServerProcess } from "./helpers/server-process.js";

/**
 * An npm registry written by an attacker, over real HTTP: its packuments
 * are huge, point tarballs at other hosts, redirect elsewhere. The server
 * must ask it little, read little of it and fetch nothing from anywhere the
 * operator did not point it at.
 */

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

interface TestServer {
  readonly origin: string;
  readonly port: number;
  /** Every request received: its path and headers. */
  readonly hits: { path: string; headers: IncomingHttpHeaders }[];
  readonly routes: Map<string, Handler>;
  close(): Promise<void>;
}

async function startTestServer(host = "127.0.0.1"): Promise<TestServer> {
  const hits: TestServer["hits"] = [];
  const routes = new Map<string, Handler>();
  const server = createServer((request, response) => {
    hits.push({ path: request.url ?? "", headers: request.headers });
    const route = routes.get(request.url ?? "");
    if (route) route(request, response);
    else response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    hits,
    routes,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const json = (body: unknown, headers: Record<string, string> = {}): Handler => {
  return (_request, response) => {
    response.writeHead(200, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));
  };
};

const packument = (name: string, versions: Record<string, { tarball: string; integrity?: string }>) => ({
  name,
  versions: Object.fromEntries(
    Object.entries(versions).map(([version, dist]) => [version, { name, version, dist }]),
  ),
});

const hitsOf = (server: TestServer, path: string) => server.hits.filter((hit) => hit.path === path);

describe("a hostile npm registry", { timeout: 300_000 }, () => {
  let root: string;
  let unpacker: SourceUnpacker;
  let tarball: Buffer;
  let integrity: string;
  let registry: TestServer;
  let other: TestServer;
  let fetches = 0;

  async function fetchFrom(
    options: Omit<NpmRegistrySourceOptions, "url"> & { url?: string },
    name: string,
    version: string,
  ): Promise<FetchedPackage | undefined> {
    const source = createNpmRegistrySource({ url: registry.origin, ...options });
    return fetchWith(source, name, version);
  }

  async function fetchWith(
    source: ReturnType<typeof createNpmRegistrySource>,
    name: string,
    version: string,
  ): Promise<FetchedPackage | undefined> {
    const dir = join(root, `fetch-${fetches++}`);
    await mkdir(join(dir, "scratch"), { recursive: true });
    return source.fetch(
      { name, version },
      { destDir: join(dir, "package"), scratchDir: join(dir, "scratch"), unpacker },
    );
  }

  async function refusal(promise: Promise<unknown>): Promise<PluginError> {
    try {
      await promise;
    } catch (error) {
      assert.ok(error instanceof PluginError, String(error));
      return error;
    }
    assert.fail("expected a refusal");
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "atomix-hostile-npm-"));
    unpacker = createSourceUnpacker({ sandbox: await testSandbox() });
    const pkg = join(root, "publish");
    await mkdir(join(pkg, "package"), { recursive: true });
    await writeFile(
      join(pkg, "package", "package.json"),
      JSON.stringify({ name: "plain", version: "1.0.0", type: "module" }),
    );
    await writeFile(join(pkg, "package", "index.js"), "export const driver = {};\n");
    await createTar({ gzip: true, cwd: pkg, file: join(pkg, "plain.tgz"), portable: true }, ["package"]);
    tarball = await readFile(join(pkg, "plain.tgz"));
    integrity = ssri.fromData(tarball, { algorithms: ["sha512"] }).toString();
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const serveTarball: Handler = (_request, response) => {
    response.writeHead(200, { "content-type": "application/octet-stream" }).end(tarball);
  };

  async function freshServers(): Promise<void> {
    registry = await startTestServer();
    other = await startTestServer();
  }

  async function closeServers(): Promise<void> {
    await registry.close();
    await other.close();
  }

  describe("packuments", () => {
    before(freshServers);
    after(closeServers);

    it("asks once for a hundred concurrent lookups of distinct versions, for the abbreviated packument", async () => {
      registry.routes.set(
        "/popular",
        json(packument("popular", { "1.0.0": { tarball: `${registry.origin}/popular.tgz`, integrity } })),
      );
      const source = createNpmRegistrySource({ url: registry.origin });
      const answers = await Promise.all(
        Array.from({ length: 100 }, (_, index) => fetchWith(source, "popular", `2.0.${index}`)),
      );
      assert.deepEqual(new Set(answers), new Set([undefined]), "no such versions");
      const asked = hitsOf(registry, "/popular");
      assert.equal(asked.length, 1, "one packument request");
      assert.match(asked[0]?.headers.accept ?? "", /^application\/vnd\.npm\.install-v1\+json/);
    });

    it("remembers a version or a package that does not exist, asking once within the interval", async () => {
      registry.routes.set(
        "/sparse",
        json(packument("sparse", { "1.0.0": { tarball: `${registry.origin}/sparse.tgz`, integrity } })),
      );
      const source = createNpmRegistrySource({ url: registry.origin });
      for (let round = 0; round < 2; round++) {
        assert.equal(await fetchWith(source, "sparse", "9.9.9"), undefined);
        assert.equal(await fetchWith(source, "nothing-here", "1.0.0"), undefined);
      }
      assert.equal(hitsOf(registry, "/sparse").length, 1);
      assert.equal(hitsOf(registry, "/nothing-here").length, 1);
    });

    it("asks again after the interval with If-None-Match, and builds from what it holds on 304", async () => {
      registry.routes.set("/tagged.tgz", serveTarball);
      const body = packument("tagged", { "1.0.0": { tarball: `${registry.origin}/tagged.tgz`, integrity } });
      registry.routes.set("/tagged", (request, response) => {
        if (request.headers["if-none-match"] === '"v1"') response.writeHead(304, { etag: '"v1"' }).end();
        else json(body, { etag: '"v1"' })(request, response);
      });
      // An interval of 0: every lookup asks again, conditionally.
      const source = createNpmRegistrySource({ url: registry.origin, packumentTtlMs: 0 });
      assert.equal(await fetchWith(source, "tagged", "2.0.0"), undefined);
      const fetched = await fetchWith(source, "tagged", "1.0.0");
      assert.equal(fetched?.integrity, integrity);
      const asked = hitsOf(registry, "/tagged");
      assert.equal(asked.length, 2);
      assert.equal(asked[0]?.headers["if-none-match"], undefined);
      assert.equal(asked[1]?.headers["if-none-match"], '"v1"', "the second request is conditional");
    });

    it("keeps building from the last packument while the registry is down", async () => {
      registry.routes.set("/steady.tgz", serveTarball);
      let down = false;
      const body = packument("steady", { "1.0.0": { tarball: `${registry.origin}/steady.tgz`, integrity } });
      registry.routes.set("/steady", (request, response) => {
        if (down) response.writeHead(503).end();
        else json(body)(request, response);
      });
      const source = createNpmRegistrySource({ url: registry.origin, packumentTtlMs: 0 });
      assert.equal(await fetchWith(source, "steady", "2.0.0"), undefined);
      down = true;
      assert.equal((await fetchWith(source, "steady", "1.0.0"))?.integrity, integrity);
      assert.equal(hitsOf(registry, "/steady").length, 2, "the registry was asked, and answered 503");
      // A name it never answered for is UNAVAILABLE, as before.
      registry.routes.set("/unseen", (_request, response) => response.writeHead(503).end());
      const error = await refusal(fetchWith(source, "unseen", "1.0.0"));
      assert.equal(error.code, Code.Unavailable);
    });

    it("refuses a packument over the size limit, reading no more than the limit, and remembers the refusal", async () => {
      // Endless: the registry writes until the server stops reading.
      let written = 0;
      registry.routes.set("/huge", (_request, response) => {
        response.writeHead(200, { "content-type": "application/json" });
        response.write('{"name":"huge","versions":{');
        const more = () => {
          while (!response.destroyed && written < 1024 ** 3) {
            const chunk = `"0.0.${written}":{"dist":{"tarball":"${"x".repeat(4000)}"}},`;
            written += chunk.length;
            if (!response.write(chunk)) {
              response.once("drain", more);
              return;
            }
          }
          response.end("}}");
        };
        more();
      });
      const source = createNpmRegistrySource({ url: registry.origin, maxPackumentBytes: 1024 * 1024 });
      for (let round = 0; round < 2; round++) {
        const error = await refusal(fetchWith(source, "huge", "1.0.0"));
        assert.equal(error.code, Code.FailedPrecondition);
        assert.equal(
          error.message,
          "the npm registry's packument of huge is over 1048576 bytes (--max-packument-size); refusing to read it",
        );
      }
      assert.equal(hitsOf(registry, "/huge").length, 1, "the refusal is remembered within the interval");
      assert.ok(
        written < 64 * 1024 * 1024,
        `the server stopped reading (the registry wrote ${written} bytes)`,
      );
    });

    /** A packument the server must refuse as over --max-packument-size (1 MiB here). */
    async function refusedOverLimit(name: string): Promise<void> {
      const source = createNpmRegistrySource({ url: registry.origin, maxPackumentBytes: 1024 * 1024 });
      const error = await refusal(fetchWith(source, name, "1.0.0"));
      assert.equal(error.code, Code.FailedPrecondition);
      assert.match(error.message, /is over 1048576 bytes \(--max-packument-size\)/);
    }

    it("refuses a packument whose declared length is over the limit before reading its body", async () => {
      registry.routes.set("/declared", (_request, response) => {
        response.writeHead(200, { "content-length": String(2 * 1024 * 1024) }).write("{");
      });
      await refusedOverLimit("declared");
    });

    it("refuses a gzipped packument that inflates past the limit", async () => {
      registry.routes.set("/bomb", (_request, response) => {
        const inflated = `{"versions":{"1.0.0":{"dist":{"tarball":"${" ".repeat(64 * 1024 * 1024)}"}}}}`;
        response.writeHead(200, { "content-encoding": "gzip" }).end(gzipSync(inflated));
      });
      await refusedOverLimit("bomb");
    });

    /** A packument the registry stops sending halfway: UNAVAILABLE within the time limit. */
    async function givenUpOn(name: string): Promise<void> {
      const source = createNpmRegistrySource({ url: registry.origin, fetchTimeoutMs: 500 });
      const error = await refusal(fetchWith(source, name, "1.0.0"));
      assert.equal(error.code, Code.Unavailable, error.message);
      assert.match(
        error.message,
        new RegExp(`^the packument of ${name} could not be read from npm registry `),
      );
    }

    it("gives up on a registry that stops sending a packument halfway, within the time limit", async () => {
      registry.routes.set("/stalled", (_request, response) => {
        response.writeHead(200, { "content-type": "application/json" }).write('{"versions":{');
      });
      await givenUpOn("stalled");
    });

    it("gives up on a registry that stops sending a gzipped packument halfway, within the time limit", async () => {
      const half = gzipSync(JSON.stringify(packument("stalled", { "1.0.0": { tarball: "x", integrity } })));
      registry.routes.set("/stalled-gzip", (_request, response) => {
        response.writeHead(200, { "content-encoding": "gzip" }).write(half.subarray(0, half.length / 2));
      });
      await givenUpOn("stalled-gzip");
    });

    /** A packument that is not one: FAILED_PRECONDITION naming what is wrong with it. */
    async function refusedAsNotAPackument(name: string, version: string, says: RegExp): Promise<void> {
      const source = createNpmRegistrySource({ url: registry.origin });
      const error = await refusal(fetchWith(source, name, version));
      assert.equal(error.code, Code.FailedPrecondition, error.message);
      assert.match(error.message, says);
    }

    it("refuses a packument that is not JSON, saying so", async () => {
      registry.routes.set("/garbled", (_request, response) => response.writeHead(200).end("{not json"));
      await refusedAsNotAPackument(
        "garbled",
        "1.0.0",
        /^the npm registry's packument of garbled cannot be read: it is not JSON/,
      );
    });

    it("refuses a packument without a versions object, saying so", async () => {
      registry.routes.set("/listless", json({ name: "listless", versions: [1, 2] }));
      await refusedAsNotAPackument(
        "listless",
        "1.0.0",
        /packument of listless cannot be read: it has no versions object$/,
      );
    });

    it("refuses a packument of more versions than any real package, within the size limit", async () => {
      // What the server keeps of a packument stays small.
      const versions = Object.fromEntries(
        Array.from({ length: 10_001 }, (_, index) => [
          `0.0.${index}`,
          { tarball: `${registry.origin}/m.tgz` },
        ]),
      );
      registry.routes.set("/many", json(packument("many", versions)));
      await refusedAsNotAPackument(
        "many",
        "0.0.1",
        /packument of many cannot be read: it lists more than 10000 versions$/,
      );
    });

    it("refuses a packument whose tarball address is over 1024 characters", async () => {
      registry.routes.set(
        "/long",
        json(packument("long", { "1.0.0": { tarball: `${registry.origin}/${"x".repeat(2000)}.tgz` } })),
      );
      await refusedAsNotAPackument(
        "long",
        "1.0.0",
        /packument of long cannot be read: a version's tarball has \d+ characters \(at most 1024\)$/,
      );
    });
  });

  describe("tarballs", () => {
    before(freshServers);
    after(closeServers);

    it("refuses a tarball on another host or port, and fetches it once the operator lists that host", async () => {
      other.routes.set("/elsewhere.tgz", serveTarball);
      registry.routes.set(
        "/elsewhere",
        json(packument("elsewhere", { "1.0.0": { tarball: `${other.origin}/elsewhere.tgz`, integrity } })),
      );
      const error = await refusal(fetchFrom({}, "elsewhere", "1.0.0"));
      assert.equal(error.code, Code.FailedPrecondition);
      assert.equal(
        error.message,
        `the npm registry points the tarball of elsewhere@1.0.0 to "${other.origin}/elsewhere.tgz", which is neither the registry's origin nor a --npm-tarball-host; refusing to fetch it`,
      );
      assert.equal(error.detail, `registry origin ${registry.origin}; --npm-tarball-host: none`);
      assert.equal(other.hits.length, 0, "the other server never received a request");
      // The same host on another port is another place.
      const otherPort = await refusal(
        fetchFrom({ tarballHosts: ["127.0.0.1", "127.0.0.1:80"] }, "elsewhere", "1.0.0"),
      );
      assert.equal(otherPort.code, Code.FailedPrecondition);
      assert.equal(other.hits.length, 0);

      const allowed = await fetchFrom({ tarballHosts: [`127.0.0.1:${other.port}`] }, "elsewhere", "1.0.0");
      assert.equal(allowed?.origin, `npm:${other.origin}/elsewhere.tgz`);
      assert.equal(other.hits.length, 1);
    });

    it("follows redirects within the registry's origin and refuses one that leaves it", async () => {
      registry.routes.set("/moved.tgz", (_request, response) =>
        response.writeHead(302, { location: "/really/moved.tgz" }).end(),
      );
      registry.routes.set("/really/moved.tgz", serveTarball);
      registry.routes.set(
        "/moved",
        json(packument("moved", { "1.0.0": { tarball: `${registry.origin}/moved.tgz`, integrity } })),
      );
      assert.equal((await fetchFrom({}, "moved", "1.0.0"))?.integrity, integrity);

      other.hits.length = 0;
      other.routes.set("/stolen.tgz", serveTarball);
      registry.routes.set("/away.tgz", (_request, response) =>
        response.writeHead(301, { location: `${other.origin}/stolen.tgz` }).end(),
      );
      registry.routes.set(
        "/away",
        json(packument("away", { "1.0.0": { tarball: `${registry.origin}/away.tgz`, integrity } })),
      );
      const error = await refusal(fetchFrom({}, "away", "1.0.0"));
      assert.equal(error.code, Code.FailedPrecondition);
      assert.match(
        error.message,
        /^the npm registry redirects the tarball of away@1\.0\.0 to "http:\/\/127\.0\.0\.1:\d+\/stolen\.tgz", which is neither the registry's origin/,
      );
      // A packument redirected elsewhere is refused the same way.
      registry.routes.set("/redirected", (_request, response) =>
        response.writeHead(307, { location: `${other.origin}/redirected` }).end(),
      );
      const packumentError = await refusal(fetchFrom({}, "redirected", "1.0.0"));
      assert.equal(packumentError.code, Code.FailedPrecondition);
      assert.match(packumentError.message, /^the npm registry redirects the packument of redirected to /);
      assert.equal(other.hits.length, 0, "the other server never received a request");
    });

    it("never connects to a link-local address such as the metadata service, even a listed one", async () => {
      registry.routes.set(
        "/metadata",
        json(
          packument("metadata", {
            "1.0.0": { tarball: "http://169.254.169.254/latest/meta-data.tgz", integrity },
          }),
        ),
      );
      const error = await refusal(
        fetchFrom({ tarballHosts: ["169.254.169.254"], fetchTimeoutMs: 60_000 }, "metadata", "1.0.0"),
      );
      assert.equal(error.code, Code.FailedPrecondition);
      assert.equal(
        error.message,
        "169.254.169.254 is at the link-local address 169.254.169.254, where the npm registry is not; the server fetches nothing from there",
      );
    });
  });

  // The registry on an address of the host's network: then loopback is not
  // the registry's, and nothing may be fetched from it.
  const external = Object.values(networkInterfaces())
    .flat()
    .find((entry) => entry && !entry.internal && entry.family === "IPv4")?.address;

  for (const host of ["127.0.0.1", "localhost"]) {
    it(`refuses a tarball host ${host}, which is (or resolves to) loopback, when the registry is not there`, {
      skip: external ? false : "this host has no non-loopback IPv4 address to serve the registry on",
    }, async () => {
      const outside = await startTestServer(external);
      const local = await startTestServer();
      try {
        local.routes.set("/admin.tgz", serveTarball);
        outside.routes.set(
          `/via-${host}`,
          json(
            packument(`via-${host}`, {
              "1.0.0": { tarball: `http://${host}:${local.port}/admin.tgz`, integrity },
            }),
          ),
        );
        const source = createNpmRegistrySource({
          url: outside.origin,
          tarballHosts: [`${host}:${local.port}`],
        });
        const error = await refusal(fetchWith(source, `via-${host}`, "1.0.0"));
        assert.equal(error.code, Code.FailedPrecondition, error.message);
        assert.match(
          error.message,
          /is at the loopback address (127\.0\.0\.1|::1), where the npm registry is not/,
        );
        assert.equal(local.hits.length, 0, "nothing on loopback received a request");
      } finally {
        await outside.close();
        await local.close();
      }
    });
  }

  it("takes --npm-tarball-host from flags or a comma-separated environment variable", () => {
    const fromEnv = parseServeConfig({}, { ATOMIX_PLUGINS_NPM_TARBALL_HOSTS: "cdn.example.com, [::1]:8080" });
    assert.deepEqual(fromEnv.npmTarballHosts, ["cdn.example.com", "[::1]:8080"]);
    assert.deepEqual(parseServeConfig({ npmTarballHosts: ["a.example:443"] }, {}).npmTarballHosts, [
      "a.example:443",
    ]);
    assert.throws(
      () => parseServeConfig({ npmTarballHosts: ["http://a.example/"] }, {}),
      /npmTarballHosts\.0: expected host or host:port|npmTarballHosts: expected host or host:port/,
    );
  });

  it("a server with --npm-registry asks the registry once for a hundred compiles, refuses a tarball elsewhere and stays healthy", async () => {
    await freshServers();
    registry.routes.set(
      "/wanted",
      json(packument("wanted", { "1.0.0": { tarball: `${other.origin}/wanted.tgz`, integrity } })),
    );
    // Room for every call in the build queue: this is about the registry, not the queue's limit.
    const server = await startServerProcess({
      // One test client stands for many runtimes: the per-caller share is not what is tested here.
      args: ["--npm-registry", registry.origin, "--build-queue", "100", "--builds-per-caller", "1000"],
    });
    const client = createPluginClient({ address: server.address });
    try {
      const compile = (version: string) =>
        client
          .compile({
            runtime: { version: "1.0.0", buildVersion: "node20" },
            plugin: { name: "wanted", version },
          })
          .then(
            () => assert.fail("compiled"),
            (error: PluginError) => error,
          );
      const missing = await Promise.all(Array.from({ length: 99 }, (_, index) => compile(`3.0.${index}`)));
      for (const error of missing) assert.equal(error.code, Code.NotFound, error.message);
      const refused = await compile("1.0.0");
      assert.equal(refused.code, Code.FailedPrecondition);
      assert.match(refused.message, /points the tarball of wanted@1\.0\.0 to .* refusing to fetch it/);
      assert.equal(hitsOf(registry, "/wanted").length, 1, "one packument request for 100 compiles");
      assert.equal(other.hits.length, 0);
      assert.equal(await checkHealth(server.address), "SERVING");
    } finally {
      client.close();
      await server.stop();
      await closeServers();
    }
  });
});

describe("the packument cache", () => {
  it("holds at most its entries and bytes, least recently used out first", async () => {
    const asked: string[] = [];
    const cache = createPackumentCache<string>({
      ttlMs: 60_000,
      maxEntries: 2,
      maxBytes: 100,
      load: async (name) => {
        asked.push(name);
        return { value: name, bytes: name === "big" ? 95 : 10 };
      },
    });
    for (const name of ["a", "b", "a", "c", "a", "b"]) await cache.get(name);
    // "b" was the least recently used when "c" came, so it was asked again.
    assert.deepEqual(asked, ["a", "b", "c", "b"]);
    assert.deepEqual(cache.size(), { entries: 2, bytes: 20 });
    await cache.get("big");
    assert.deepEqual(cache.size(), { entries: 1, bytes: 95 }, "bytes bound: only the big one fits");
    const tooBig = createPackumentCache<string>({
      ttlMs: 60_000,
      maxEntries: 2,
      maxBytes: 5,
      load: async (name) => ({ value: name, bytes: 10 }),
    });
    assert.equal(await tooBig.get("x"), "x");
    assert.deepEqual(tooBig.size(), { entries: 0, bytes: 0 }, "an answer over the bytes bound is not kept");
  });
});
