import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient, type PullAttempt } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { createFsStore } from "../src/store/fs-store.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

const MiB = 1024 * 1024;
const key: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "big", version: "1.0.0" },
};

async function fileDigest(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest("hex")}`;
}

/** A client of `address`: the retries below make it outlast a restart. */
function patientClient(address: string) {
  return createPluginClient({ address });
}
const RETRY = { maxAttempts: 200, initialDelayMs: 50, maxDelayMs: 250 };

describe("pull across a server killed and restarted mid-stream", () => {
  let work: string;
  let dataDir: string;
  let source: string;
  let server: ServerProcess | undefined;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-resume-"));
    dataDir = join(work, "data");
    source = join(work, "big.bin");
    await writeFile(source, randomBytes(64 * MiB));
    server = await startServerProcess({ dataDir });
    const client = createPluginClient({ address: server.address });
    try {
      await client.pushFile(key, source);
    } finally {
      client.close();
    }
  });
  after(async () => {
    await server?.kill();
    await rm(work, { recursive: true, force: true });
  });

  /** Kills the server (SIGKILL) once `threshold` bytes are in; `whileDown` runs before the restart. */
  function killOnce(threshold: number, whileDown: () => Promise<void> = async () => {}) {
    let restarted: Promise<void> | undefined;
    return {
      onProgress({ received }: { received: number }) {
        if (restarted || received < threshold || !server) return;
        const dead = server;
        server = undefined;
        restarted = (async () => {
          await dead.kill();
          await whileDown();
          server = await startServerProcess({ dataDir, listen: dead.address });
        })();
      },
      restarted: () => restarted,
    };
  }

  it("resumes from the bytes it has and ends byte-identical", async () => {
    const address = server?.address as string;
    const to = join(work, "pulled.bin");
    const killer = killOnce(8 * MiB);
    const client = patientClient(address);
    let result: Awaited<ReturnType<typeof client.pull>>;
    try {
      result = await client.pull(key, { to, retry: RETRY, onProgress: killer.onProgress });
    } finally {
      client.close();
    }
    await killer.restarted();
    assert.equal(await fileDigest(to), await fileDigest(source));
    assert.equal(result.size, 64 * MiB);

    const attempts = result.attempts;
    assert.ok(attempts.length >= 2, `expected a retry, got ${JSON.stringify(attempts)}`);
    const first = attempts[0] as PullAttempt;
    assert.equal(first.offset, 0);
    assert.ok(first.bytes >= 8 * MiB && first.bytes < 64 * MiB, `first attempt got ${first.bytes} bytes`);
    assert.match(first.error ?? "", /UNAVAILABLE|INTERNAL/);
    // Every attempt asks for exactly the bytes it does not have yet...
    let inHand = 0;
    for (const attempt of attempts) {
      assert.equal(attempt.offset, inHand, JSON.stringify(attempts));
      inHand += attempt.bytes;
    }
    // ...so no byte crossed the network twice.
    assert.equal(result.transferredBytes, 64 * MiB);
    assert.ok((attempts.at(-1) as PullAttempt).offset >= 8 * MiB);
    assert.deepEqual((await readdir(work)).sort(), ["big.bin", "data", "pulled.bin"]);
  });

  it("starts over when the artifact changed while the server was down", async () => {
    const address = server?.address as string;
    const replacement = randomBytes(3 * MiB);
    const to = join(work, "replaced.bin");
    const killer = killOnce(8 * MiB, async () => {
      // The data directory is ours while no server runs: replace the key's artifact.
      const store = await createFsStore({ dir: dataDir });
      await store.put(
        key,
        (async function* () {
          yield replacement;
        })(),
      );
      await store.close();
    });
    const client = patientClient(address);
    let result: Awaited<ReturnType<typeof client.pull>>;
    try {
      result = await client.pull(key, { to, retry: RETRY, onProgress: killer.onProgress });
    } finally {
      client.close();
    }
    await killer.restarted();
    assert.equal(await fileDigest(to), `sha256:${createHash("sha256").update(replacement).digest("hex")}`);
    const last = result.attempts.at(-1) as PullAttempt;
    assert.deepEqual(last, { offset: 0, bytes: 3 * MiB });
    assert.ok(
      result.attempts.some((a) => a.offset > 0 && /changed|OUT_OF_RANGE/.test(a.error ?? "")),
      JSON.stringify(result.attempts),
    );
  });
});
