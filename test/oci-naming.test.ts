import assert from "node:assert/strict";
import { resolve } from "node:path";
import { describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { parseBuildKey } from "atomix-plugins-core/model/build-key";
import { parseServeConfig, storeConfigOf } from "../src/config.js";
import { buildKeyTag, isBuildKeyTag, readableTagPrefix } from "../src/store/oci/build-key-tag.js";
import { parseOciLocation } from "../src/store/oci/oci-location.js";
import { nextLink } from "../src/store/oci/oci-objects.js";
import { parseChallenge } from "../src/store/oci/registry-client.js";
import { readTagList } from "../src/store/oci/tag-list-reader.js";

const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

function key(name: string, version: string, runtime = "1.0.0", build = "node20") {
  return parseBuildKey({ runtime: { version: runtime, buildVersion: build }, plugin: { name, version } });
}

describe("OCI tags of build keys", () => {
  it("fit the OCI tag grammar and stay readable", () => {
    assert.match(buildKeyTag(key("counter", "1.0.0")), /^counter_1\.0\.0_1\.0\.0_node20-[0-9a-f]{32}$/);
    assert.match(
      buildKeyTag(key("@acme/driver", "1.2.0")),
      /^acme-driver_1\.2\.0_1\.0\.0_node20-[0-9a-f]{32}$/,
    );
    assert.match(
      buildKeyTag(key("example.com/drivers/counter", "v1.0.0", "1.4.0", "go1.19.8")),
      /^example\.com-drivers-counter_v1\.0\.0_1\.4\.0_go1\.19\.8-[0-9a-f]{32}$/,
    );
  });

  it("stay within 128 characters for the longest keys", () => {
    const long = key(
      `example.com/${"a".repeat(200)}`,
      `1.0.0-${"b".repeat(200)}`,
      `2.0.0-${"c".repeat(200)}`,
    );
    const tag = buildKeyTag(long);
    assert.match(tag, TAG_GRAMMAR);
    assert.equal(tag.length, 128);
    assert.ok(isBuildKeyTag(tag));
  });

  it("differ for keys whose readable parts are equal", () => {
    const tags = new Set(
      [
        key("@acme/driver", "1.0.0"),
        key("acme-driver", "1.0.0"),
        key("counter", "1.0.0-a.b"),
        key("counter", "1.0.0-a-b"),
        key(`example.com/${"x".repeat(120)}`, "1.0.0"),
        key(`example.com/${"x".repeat(120)}`, "1.0.1"),
        key("example.com/a/b", "v1.0.0"),
        key("example.com/a-b", "v1.0.0"),
      ].map(buildKeyTag),
    );
    assert.equal(tags.size, 8);
    for (const tag of tags) assert.match(tag, TAG_GRAMMAR);
  });

  it("begin with the readable prefix of their plugin name", () => {
    for (const name of ["counter", "@acme/driver", "example.com/drivers/counter"]) {
      const prefix = readableTagPrefix(name);
      assert.ok(prefix && buildKeyTag(key(name, "1.0.0")).startsWith(prefix), name);
    }
    assert.equal(readableTagPrefix(`example.com/${"x".repeat(120)}`), undefined);
    assert.equal(isBuildKeyTag("latest"), false);
  });
});

describe("OCI store URLs", () => {
  it("use plain http for loopback hosts and https elsewhere unless the scheme says", () => {
    assert.deepEqual(parseOciLocation("oci://127.0.0.1:5000/atomix/plugins"), {
      origin: "http://127.0.0.1:5000",
      repository: "atomix/plugins",
    });
    assert.equal(parseOciLocation("oci://localhost:5000/p").origin, "http://localhost:5000");
    assert.equal(parseOciLocation("oci://[::1]:5000/p").origin, "http://[::1]:5000");
    assert.equal(parseOciLocation("oci://registry.example.com/p").origin, "https://registry.example.com");
    assert.equal(
      parseOciLocation("oci+http://registry.internal:5000/p").origin,
      "http://registry.internal:5000",
    );
    assert.equal(parseOciLocation("oci+https://127.0.0.1:5443/p").origin, "https://127.0.0.1:5443");
  });

  it("are refused with INVALID_ARGUMENT naming the problem", () => {
    for (const [url, problem] of [
      ["http://127.0.0.1:5000/p", /must start with oci:\/\//],
      ["oci://127.0.0.1:5000", /names no repository/],
      ["oci://127.0.0.1:5000/Upper", /must be lowercase/],
      ["oci://user:pw@127.0.0.1:5000/p", /must not carry credentials/],
    ] as const) {
      assert.throws(
        () => parseOciLocation(url),
        (error: unknown) =>
          error instanceof PluginError && error.code === Code.InvalidArgument && problem.test(error.message),
        url,
      );
    }
  });

  it("select the store in the serve configuration, flags over environment", () => {
    assert.deepEqual(storeConfigOf(parseServeConfig({}, {})), { kind: "fs", dir: resolve("./data") });
    const fromEnv = parseServeConfig({}, { ATOMIX_PLUGINS_STORE: "oci://127.0.0.1:5000/a" });
    assert.deepEqual(storeConfigOf(fromEnv), {
      kind: "oci",
      url: "oci://127.0.0.1:5000/a",
      credentialsFile: undefined,
      spoolDir: resolve("data/oci-spool"),
      writes: "read-write",
      cache: { dir: resolve("data/content-cache"), maxBytes: 8 * 1024 ** 3, resolveTtlMs: 2000 },
    });
    const fromFlag = parseServeConfig(
      { store: "oci://127.0.0.1:5000/b", ociCredentialsFile: "/etc/atomix/config.json" },
      { ATOMIX_PLUGINS_STORE: "oci://127.0.0.1:5000/a" },
    );
    assert.deepEqual(storeConfigOf(fromFlag), {
      kind: "oci",
      url: "oci://127.0.0.1:5000/b",
      credentialsFile: "/etc/atomix/config.json",
      spoolDir: resolve("data/oci-spool"),
      writes: "read-write",
      cache: { dir: resolve("data/content-cache"), maxBytes: 8 * 1024 ** 3, resolveTtlMs: 2000 },
    });
    // A replica beside an upstream server asks its registry whether it takes writes; its cache can be turned off.
    const tier = parseServeConfig(
      { store: "oci://127.0.0.1:5000/b", upstream: "127.0.0.1:5679", cacheMaxBytes: "0" },
      {},
    );
    const tierStore = storeConfigOf(tier);
    assert.equal(tierStore.kind === "oci" && tierStore.writes, "detect");
    assert.equal(tierStore.kind === "oci" && tierStore.cache, undefined);
    const mirror = storeConfigOf(parseServeConfig({ upstream: "127.0.0.1:5679" }, {}));
    assert.equal(mirror.kind, "upstream");
    assert.throws(
      () => parseServeConfig({ store: "s3://bucket" }, {}),
      /store: store "s3:\/\/bucket" must start with oci:\/\//,
    );
  });
});

describe("WWW-Authenticate challenges", () => {
  it("parse Bearer and Basic parameters", () => {
    assert.deepEqual(
      parseChallenge(
        'Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a/b:pull,push"',
      ),
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.example.com/token",
          service: "registry",
          scope: "repository:a/b:pull,push",
        },
      },
    );
    assert.deepEqual(parseChallenge('Basic realm="atomix"'), {
      scheme: "basic",
      params: { realm: "atomix" },
    });
    assert.equal(parseChallenge("Negotiate"), undefined);
  });
});

describe("tag list pages", () => {
  it("follow the Link header's next page, relative or absolute", () => {
    const origin = "http://127.0.0.1:5000";
    assert.equal(
      nextLink('</v2/a/b/tags/list?n=1000&last=x-1>; rel="next"', origin),
      "http://127.0.0.1:5000/v2/a/b/tags/list?n=1000&last=x-1",
    );
    assert.equal(
      nextLink("<https://mirror.example.com/v2/a/tags/list?last=y>; rel=next", origin),
      "https://mirror.example.com/v2/a/tags/list?last=y",
    );
    assert.equal(nextLink(null, origin), undefined);
    assert.equal(nextLink('</v2/a/tags/list?last=z>; rel="prev"', origin), undefined);
  });
});

describe("tag list reader", () => {
  const streamOf = (...chunks: string[]) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
        controller.close();
      },
    });
  const tagsOf = async (...chunks: string[]) => {
    const tags: string[] = [];
    await readTagList(streamOf(...chunks), (tag) => tags.push(tag), "the registry");
    return tags;
  };

  it("hands over each tag as the body arrives, whatever the chunks cut", async () => {
    assert.deepEqual(await tagsOf('{"name":"a/b","tags":["x-1","y', '_2"', ',"z.3"]}\n'), [
      "x-1",
      "y_2",
      "z.3",
    ]);
    assert.deepEqual(await tagsOf('{"tags": [ "t" ], "name": "tags"}'), ["t"], "the name is not a tag");
    assert.deepEqual(await tagsOf('{"name":"a","tags":null}'), []);
    assert.deepEqual(
      await tagsOf('{"name":"a\\"tags\\"","tags":["q"]}'),
      ["q"],
      "escaped quotes in a string",
    );
  });

  it("refuses a body that ends midway (UNAVAILABLE)", async () => {
    await assert.rejects(tagsOf('{"name":"a","tags":["x'), /ended early/);
  });
});
