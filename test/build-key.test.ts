import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { parseBuildKey, parsePluginSpec } from "atomix-plugins-core/model/build-key";
import { formatReference, parseReference } from "atomix-plugins-core/model/reference";

const valid = {
  runtime: { version: "1.4.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};

function rejects(input: unknown, field: string): void {
  assert.throws(
    () => parseBuildKey(input as Parameters<typeof parseBuildKey>[0]),
    (error: unknown) =>
      error instanceof PluginError && error.code === Code.InvalidArgument && error.message.startsWith(field),
    `expected INVALID_ARGUMENT naming ${field}`,
  );
}

describe("build key validation", () => {
  it("accepts npm names, scoped names, Go module paths, v-prefixed versions and toolchain builds", () => {
    for (const name of ["counter", "@acme/driver", "example.com/drivers/counter", "github.com/a/b/v2"]) {
      assert.equal(parseBuildKey({ ...valid, plugin: { name, version: "v1.2.3" } }).plugin.name, name);
    }
    for (const buildVersion of ["go1.19.8", "node20", "node20.20.2", "go1.22rc1"]) {
      assert.equal(
        parseBuildKey({ ...valid, runtime: { version: "1.0.0", buildVersion } }).runtime.buildVersion,
        buildVersion,
      );
    }
  });

  it("names each missing field", () => {
    rejects({ plugin: valid.plugin }, "runtime.version");
    rejects({ runtime: { version: "1.0.0" }, plugin: valid.plugin }, "runtime.build_version");
    rejects({ runtime: valid.runtime }, "plugin.name");
    rejects({ runtime: valid.runtime, plugin: { name: "counter" } }, "plugin.version");
  });

  it("still rejects a missing field once a key spelling it out is valid", () => {
    // "undefined" is a valid npm name; a missing name must not pass for it.
    parseBuildKey({ ...valid, plugin: { name: "undefined", version: "1.0.0" } });
    rejects({ runtime: valid.runtime, plugin: { version: "1.0.0" } }, "plugin.name");
  });

  it("rejects versions that are not semver", () => {
    rejects({ ...valid, runtime: { version: "1.x", buildVersion: "node20" } }, "runtime.version");
    rejects({ ...valid, plugin: { name: "counter", version: "latest" } }, "plugin.version");
  });

  it("rejects names that could reach outside the store", () => {
    for (const name of ["../etc", "a/../b", "/abs", "a\\b", "a//b", "trailing/", "UPPER CASE"]) {
      rejects({ ...valid, plugin: { name, version: "1.0.0" } }, "plugin.name");
    }
  });

  it("rejects unknown build strings, control characters and fields over 256 bytes", () => {
    rejects({ ...valid, runtime: { version: "1.0.0", buildVersion: "../node20" } }, "runtime.build_version");
    rejects({ ...valid, plugin: { name: "count\u0000er", version: "1.0.0" } }, "plugin.name");
    rejects({ ...valid, plugin: { name: "a".repeat(257), version: "1.0.0" } }, "plugin.name");
  });

  it("splits name@version keeping a scope's leading @", () => {
    assert.deepEqual(parsePluginSpec("@acme/driver@1.2.0"), { name: "@acme/driver", version: "1.2.0" });
    assert.deepEqual(parsePluginSpec("counter@1.0.0"), { name: "counter", version: "1.0.0" });
    assert.throws(() => parsePluginSpec("@acme/driver"), /name@version/);
  });
});

describe("plugin reference", () => {
  it("round-trips a key and digest, scoped names included", () => {
    const reference = {
      key: {
        runtime: { version: "1.4.0", buildVersion: "node20" },
        plugin: { name: "@acme/driver", version: "1.2.0" },
      },
      digest: `sha256:${"ab".repeat(32)}` as const,
    };
    const text = formatReference(reference);
    assert.equal(text, `atomix-plugin://1.4.0/node20/@acme/driver@1.2.0@sha256:${"ab".repeat(32)}`);
    assert.deepEqual(parseReference(text), reference);
  });
});
