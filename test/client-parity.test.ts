import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient, type PluginClient } from "atomix-plugins-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { buildGoPeers } from "../bench/lib/go-peers.js";
import { type ServerProcess as PeerProcess, startServer } from "../bench/lib/processes.js";
import { REPO_ROOT } from "./helpers/go-fixtures.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

/**
 * Every call of the client that an independent gRPC server can answer, made
 * against our server and against the grpc-go peer (bench/go/server, built
 * from Debian's grpc-go): the same results, and the same codes for the same
 * failures, so that what the client reports is the protocol's and not an
 * echo of our server's habits. Each call goes through the client's one
 * transport (transport/transport.ts).
 *
 * Not here: the admin calls (push, inspect, ls, rm, gc) and provenance. The
 * grpc-go peer serves atomix.runtime.v1 only, with no admin API; and it could
 * not sign provenance as ours does (a DSSE envelope with the server's key),
 * so `provenance` and pulls with trusted keys are ours alone (held in
 * test/provenance.test.ts and test/independent-server.test.ts).
 */

const MiB = 1024 * 1024;
/** Large enough that a pull takes more than its 1 ms deadline on any machine. */
const BIG = randomBytes(8 * MiB + 7);

const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

const codeOf = async (call: Promise<unknown>): Promise<Code | "ok"> => {
  try {
    await call;
    return "ok";
  } catch (error) {
    assert.ok(error instanceof PluginError, `a PluginError, not ${error}`);
    return error.code;
  }
};

describe("the client's calls, against our server and an independent one", () => {
  let work: string;
  let ours: ServerProcess;
  let peer: PeerProcess;
  const servers = new Map<string, string>();

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-parity-"));
    const go = await buildGoPeers({ root: REPO_ROOT, outDir: join(work, "go") });
    await writeFile(join(work, "big.bin"), BIG);
    peer = await startServer({
      name: "grpc-go peer",
      command: go.server,
      args: ["-file", `big=${join(work, "big.bin")}`, "-metadata", "full", "-compile-answer", "reference"],
    });
    const token = randomBytes(16).toString("hex");
    await writeFile(join(work, "token"), token);
    ours = await startServerProcess({
      args: ["--pull-policy", "never", "--admin-token-file", join(work, "token")],
    });
    const admin = createPluginClient({ address: ours.address, token });
    try {
      await admin.push(key("big"), [BIG]);
    } finally {
      admin.close();
    }
    servers.set("ours", ours.address);
    servers.set("grpc-go", peer.address);
  });

  after(async () => {
    await peer?.stop();
    await ours?.stop();
    await rm(work, { recursive: true, force: true });
  });

  let files = 0;
  /** The same call against each server, each with a client of its own. */
  async function onBoth<T>(call: (client: PluginClient) => Promise<T>): Promise<Map<string, T>> {
    const results = new Map<string, T>();
    for (const [name, address] of servers) {
      const client = createPluginClient({ address });
      try {
        results.set(name, await call(client));
      } finally {
        client.close();
      }
    }
    return results;
  }
  const same = <T>(results: Map<string, T>): T => {
    const [first, ...rest] = [...results.values()];
    for (const other of rest) assert.deepEqual(other, first, `both servers: ${JSON.stringify([...results])}`);
    return first as T;
  };

  it("pull: the same bytes, digest and verification from both", async () => {
    const results = await onBoth(async (client) => {
      const to = join(work, `out-${++files}.bin`);
      const { digest, size, verifiedBy } = await client.pull(key("big"), { to });
      const bytes = await readFile(to);
      return { digest, size, verifiedBy, same: bytes.equals(BIG) };
    });
    const result = same(results);
    assert.equal(result.same, true);
    assert.equal(result.size, BIG.length);
  });

  it("compile: the same reference from both", async () => {
    const result = same(await onBoth((client) => client.compile(key("big"))));
    assert.deepEqual(result.key, key("big"));
    assert.ok(result.digest, "a reference pins the digest");
  });

  it("a missing key: NOT_FOUND from both, for a pull and for a compile", async () => {
    const pulls = await onBoth((client) =>
      codeOf(client.pull(key("missing"), { to: join(work, `out-${++files}.bin`) })),
    );
    assert.equal(same(pulls), Code.NotFound);
    const compiles = await onBoth((client) => codeOf(client.compile(key("missing"))));
    assert.equal(same(compiles), Code.NotFound);
  });

  it("a bad argument: INVALID_ARGUMENT from both (the client refuses it before sending)", async () => {
    const bad: BuildKey = { ...key("big"), plugin: { name: "Not A Name", version: "1.0.0" } };
    const pulls = await onBoth((client) =>
      codeOf(client.pull(bad, { to: join(work, `out-${++files}.bin`) })),
    );
    assert.equal(same(pulls), Code.InvalidArgument);
    const compiles = await onBoth((client) => codeOf(client.compile(bad)));
    assert.equal(same(compiles), Code.InvalidArgument);
  });

  it("a 1 ms deadline on an 8 MiB pull: DEADLINE_EXCEEDED from both", async () => {
    const codes = await onBoth((client) =>
      codeOf(client.pull(key("big"), { to: join(work, `out-${++files}.bin`), timeoutMs: 1 })),
    );
    assert.equal(same(codes), Code.DeadlineExceeded);
  });

  it("a pull cancelled once its first bytes are in: CANCELLED from both", async () => {
    const codes = await onBoth((client) => {
      const controller = new AbortController();
      return codeOf(
        client.pull(key("big"), {
          to: join(work, `out-${++files}.bin`),
          signal: controller.signal,
          onProgress: ({ received }) => {
            if (received > 0) controller.abort();
          },
        }),
      );
    });
    assert.equal(same(codes), Code.Cancelled);
  });
});
