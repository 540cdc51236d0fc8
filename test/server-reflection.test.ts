import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type DescMethod, fromBinary, fromJson, type JsonValue, toBinary, toJson } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Client, credentials } from "@grpc/grpc-js";
import { createPluginClient, type PluginClient } from "atomix-plugins-client";
import { startTestServer, type TestServer } from "./helpers/in-process-server.js";
import {
  ReflectionClient,
  registryOf,
  resolveByReflection,
  type ServedFile,
} from "./helpers/reflection-client.js";
import { tempDir } from "./helpers/server-process.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

const SERVED = [
  "atomix.plugins.admin.v1.PluginAdmin",
  "atomix.runtime.v1.PluginCompiler",
  "atomix.runtime.v1.PluginRegistry",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

/** What protoc makes of our own .proto files, each file's bytes as protoc wrote them. */
async function protocDescriptors(): Promise<Map<string, Uint8Array>> {
  const out = await tempDir("atomix-protoc-");
  try {
    const set = join(out.path, "set.binpb");
    const files = ["atomix/runtime/v1/plugin.proto", "atomix/plugins/admin/v1/admin.proto"];
    execFileSync("protoc", ["-I", join(ROOT, "proto"), `--descriptor_set_out=${set}`, ...files]);
    const reader = new BinaryReader(await readFile(set));
    const found = new Map<string, Uint8Array>();
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field !== 1) {
        reader.skip(wireType);
        continue;
      }
      const bytes = reader.bytes();
      found.set(fromBinary(FileDescriptorProtoSchema, bytes).name, bytes);
    }
    return found;
  } finally {
    await out.remove();
  }
}

/** Calls a method with raw bytes in and out, as grpcurl does with descriptors it reflected. */
function callRaw(address: string, method: DescMethod, request: Uint8Array): Promise<Uint8Array[]> {
  const client = new Client(address, credentials.createInsecure());
  const path = `/${method.parent.typeName}/${method.name}`;
  const identity = (bytes: Uint8Array) => Buffer.from(bytes);
  return new Promise<Uint8Array[]>((resolve, reject) => {
    if (method.methodKind === "server_streaming") {
      const answers: Uint8Array[] = [];
      const call = client.makeServerStreamRequest(path, identity, identity, request);
      call.on("data", (answer: Buffer) => answers.push(answer));
      call.on("error", reject);
      call.on("end", () => resolve(answers));
    } else {
      client.makeUnaryRequest(path, identity, identity, request, (error, answer) =>
        error || !answer ? reject(error) : resolve([answer]),
      );
    }
  }).finally(() => client.close());
}

describe("server reflection", () => {
  let server: TestServer;
  let client: PluginClient;
  const artifact = randomBytes(300_000);

  before(async () => {
    server = await startTestServer();
    client = createPluginClient({ address: server.address });
    await client.push(
      {
        runtime: { version: "1.0.0", buildVersion: "node20" },
        plugin: { name: "counter", version: "1.0.0" },
      },
      [artifact],
    );
  });

  after(async () => {
    client.close();
    await server.close();
  });

  for (const version of ["v1", "v1alpha"] as const) {
    it(`lists every service served, health and reflection included (${version})`, async () => {
      const reflection = new ReflectionClient(server.address, version);
      try {
        assert.deepEqual(await reflection.listServices(), SERVED);
      } finally {
        reflection.close();
      }
    });

    it(`resolves every service and method by symbol and by file, with their imports (${version})`, async () => {
      const reflection = new ReflectionClient(server.address, version);
      try {
        const files = await resolveByReflection(reflection, await reflection.listServices());
        // A registry refuses a file whose imports are missing: the closure is whole.
        const registry = registryOf(files);
        for (const name of SERVED) {
          const service = registry.getService(name);
          assert.ok(service, `${name} not resolvable`);
          assert.ok(service.methods.length > 0);
          for (const method of service.methods) {
            // grpcurl's `describe Service.Method` asks by the method's full name.
            const [owner] = await reflection.fileContainingSymbol(`${name}.${method.name}`);
            assert.equal(owner?.proto.name, service.file.proto.name);
            assert.ok(registry.getMessage(method.input.typeName));
            assert.ok(registry.getMessage(method.output.typeName));
          }
        }
        assert.equal(
          registry.getService("atomix.runtime.v1.PluginRegistry")?.file.name,
          "atomix/runtime/v1/plugin",
        );
        assert.equal(registry.getService("grpc.health.v1.Health")?.file.name, "grpc/health/v1/health");
        const admin = files.get("atomix/plugins/admin/v1/admin.proto");
        assert.deepEqual(admin?.proto.dependency, ["atomix/runtime/v1/plugin.proto"]);
        const runtimeInfo = registry.getMessage("atomix.runtime.v1.RuntimeInfo");
        assert.deepEqual(
          runtimeInfo?.fields.map((f) => [f.name, f.jsonName]),
          [
            ["version", "version"],
            ["build_version", "buildVersion"],
          ],
        );
      } finally {
        reflection.close();
      }
    });
  }

  it("serves our .proto files byte for byte as protoc compiles them", async () => {
    const reflection = new ReflectionClient(server.address, "v1");
    try {
      const expected = await protocDescriptors();
      assert.equal(expected.size, 2);
      const served = new Map<string, ServedFile>();
      for (const name of expected.keys()) {
        for (const file of await reflection.fileByFilename(name)) served.set(file.proto.name, file);
      }
      for (const [name, bytes] of expected) {
        assert.ok(served.get(name), `${name} not served`);
        assert.ok(Buffer.from(served.get(name)?.bytes ?? []).equals(bytes), `${name} differs from protoc's`);
      }
    } finally {
      reflection.close();
    }
  });

  it("answers an unknown symbol or file with NOT_FOUND and keeps the stream open", async () => {
    const reflection = new ReflectionClient(server.address, "v1");
    try {
      const symbol = await reflection.raw({ fileContainingSymbol: "atomix.runtime.v1.Nope" });
      assert.equal(symbol.errorResponse?.errorCode, 5);
      const file = await reflection.raw({ fileByFilename: "atomix_runtime_v1.proto" });
      assert.equal(file.errorResponse?.errorCode, 5);
      assert.deepEqual(await reflection.listServices(), SERVED);
    } finally {
      reflection.close();
    }
  });

  it("takes a JSON request written with the proto's field names, as grpcurl -d does", async () => {
    const reflection = new ReflectionClient(server.address, "v1");
    try {
      const files = await resolveByReflection(reflection, SERVED);
      const registry = registryOf(files);
      const method = (service: string, name: string) => {
        const found = registry.getService(service)?.methods.find((m) => m.name === name);
        assert.ok(found, `${service}/${name}`);
        return found;
      };
      const key: JsonValue = {
        runtime: { version: "1.0.0", build_version: "node20" },
        plugin: { name: "counter", version: "1.0.0" },
      };

      const pull = method("atomix.runtime.v1.PluginRegistry", "PullPlugin");
      const chunks = await callRaw(server.address, pull, toBinary(pull.input, fromJson(pull.input, key)));
      const data = chunks.map((chunk) => {
        const json = toJson(pull.output, fromBinary(pull.output, chunk)) as { data?: string };
        return Buffer.from(json.data ?? "", "base64");
      });
      assert.ok(Buffer.concat(data).equals(artifact));

      const inspect = method("atomix.plugins.admin.v1.PluginAdmin", "InspectPlugin");
      const [manifest] = await callRaw(
        server.address,
        inspect,
        toBinary(inspect.input, fromJson(inspect.input, key)),
      );
      assert.ok(manifest);
      const json = toJson(inspect.output, fromBinary(inspect.output, manifest), { useProtoFieldName: true });
      assert.deepEqual((json as { runtime: unknown }).runtime, { version: "1.0.0", build_version: "node20" });
      assert.equal((json as { size: string }).size, String(artifact.length));

      const check = method("grpc.health.v1.Health", "Check");
      const [health] = await callRaw(server.address, check, toBinary(check.input, fromJson(check.input, {})));
      assert.ok(health);
      assert.deepEqual(toJson(check.output, fromBinary(check.output, health)), { status: "SERVING" });

      const list = method("grpc.health.v1.Health", "List");
      const [statuses] = await callRaw(server.address, list, toBinary(list.input, fromJson(list.input, {})));
      assert.ok(statuses);
      const listed = toJson(list.output, fromBinary(list.output, statuses)) as {
        statuses: Record<string, { status: string }>;
      };
      assert.deepEqual(listed.statuses["atomix.runtime.v1.PluginRegistry"], { status: "SERVING" });
      assert.deepEqual(listed.statuses[""], { status: "SERVING" });
    } finally {
      reflection.close();
    }
  });
});
