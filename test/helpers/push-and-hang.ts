/**
 * A client process for tests that kill one mid-push:
 * `node push-and-hang.js <address> <plugin name> <announced size> <bytes to send>`
 * pushes that many of the announced bytes (the header carries the size, no
 * digest), prints "sent" once they are handed to the transport, and then
 * waits for ever, holding the stream open.
 */
import { randomBytes } from "node:crypto";
import { createPluginClient } from "atomix-plugins-client/plugin-client";

const [address, name, announced, send] = process.argv.slice(2);
const client = createPluginClient({ address: String(address) });
const key = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: String(name), version: "1.0.0" },
};
const total = Number(send);

async function* stalled(): AsyncGenerator<Uint8Array> {
  yield randomBytes(total);
  process.stdout.write("sent\n");
  await new Promise(() => {}); // never ends: the test kills this process
}

client.push(key, stalled(), { size: Number(announced) }).catch((error: unknown) => {
  process.stderr.write(`push failed: ${String(error)}\n`);
  process.exit(1);
});
