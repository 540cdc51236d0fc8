#!/usr/bin/env node
// A minimal atomix runtime host: it installs the runtime release's supplied
// modules (its SDK) the way a runtime image would, loads a plugin artifact
// pulled from the registry next to them, and calls the driver once.
//
//   node examples/node-host/host.mjs --runtime examples/runtimes/1.0.0 --plugin counter.mjs --key a
//
// Prints one JSON line: {"runtime":"1.0.0","sdk":"1.0.0","driver":"counter","result":"key:a=1"}.
import { cp, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    runtime: { type: "string" },
    plugin: { type: "string" },
    key: { type: "string", default: "hello" },
  },
});
if (!values.runtime || !values.plugin) {
  process.stderr.write(
    "usage: host.mjs --runtime <runtime descriptor dir> --plugin <artifact.mjs> [--key k]\n",
  );
  process.exit(2);
}

const runtimeDir = resolve(values.runtime);
const descriptor = JSON.parse(await readFile(join(runtimeDir, "runtime.json"), "utf8"));
const version = runtimeDir.split("/").pop();
const root = await mkdtemp(join(tmpdir(), "atomix-host-"));
try {
  for (const [name, module] of Object.entries(descriptor.modules)) {
    await cp(resolve(runtimeDir, module.path), join(root, "node_modules", name), { recursive: true });
  }
  const pluginPath = join(root, "plugin.mjs");
  await cp(resolve(values.plugin), pluginPath);
  const sdk = await import(pathToFileURL(join(root, "node_modules", "@atomix/runtime-sdk", "index.js")).href);
  const plugin = await import(pathToFileURL(pluginPath).href);
  const driver = plugin[descriptor.export.name];
  if (!driver || typeof driver.handle !== "function") {
    throw new Error(`the plugin does not export a ${descriptor.export.name} with handle()`);
  }
  const result = sdk.SDK_VERSION.startsWith("1.")
    ? await driver.handle({ key: values.key })
    : await driver.handle({ kind: "get", key: values.key }, sdk.createContext(version));
  process.stdout.write(
    `${JSON.stringify({ runtime: version, sdk: sdk.SDK_VERSION, driver: driver.name, result })}\n`,
  );
} finally {
  await rm(root, { recursive: true, force: true });
}
