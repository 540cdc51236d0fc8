/**
 * Pulls one artifact `count` times, one after the other, with our
 * TypeScript client (`createPluginClient().pull`: verify the digest, write
 * the file, rename), and prints the time of each as JSON. A process of its
 * own, so that the benchmark's bookkeeping shares nothing with it.
 *
 *   node dist/bench/ts-pull.js '{"address":...,"key":...,"dir":...,"count":3}'
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createPluginClient } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";

const { address, key, dir, count, trustedKeys } = JSON.parse(process.argv[2] ?? "{}") as {
  address: string;
  key: BuildKey;
  dir: string;
  count: number;
  /** PEM public keys: each pull then verifies the artifact's signed provenance too. */
  trustedKeys?: string[];
};
const client = createPluginClient({ address, ...(trustedKeys ? { trustedKeys } : {}) });
const results: { ms: number; bytes: number }[] = [];
try {
  // Loads the modules a pull needs before the clock starts; each pull then
  // opens its own connection, as curl does.
  await client.inspect(key);
  for (let i = 0; i < count; i++) {
    const to = join(dir, `ts-pull-${process.pid}-${i}`);
    const started = performance.now();
    const { size } = await client.pull(key, { to });
    results.push({ ms: performance.now() - started, bytes: size });
    await rm(to, { force: true });
  }
} finally {
  client.close();
}
console.log(JSON.stringify({ results }));
