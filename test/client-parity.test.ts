import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient, type PluginClient, type PluginManifest } from "atomix-plugins-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { buildGoPeers } from "../bench/lib/go-peers.js";
import { type ServerProcess as PeerProcess, startServer } from "../bench/lib/processes.js";
import { REPO_ROOT } from "./helpers/go-fixtures.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

/**
 * Every call of the client that an independent gRPC server can answer, made
 * against our server and against the grpc-go peer (bench/go/server, built
 * from Debian's grpc-go): the same results, and the same codes for the same
 * failures, so that what the client reports is the protocol's and not an
 * echo of our server's habits. Each call goes through the client's one
 * transport (transport/transport.ts).
 *
 * The admin calls (push, inspect, ls, rm, gc) go to the peer's in-memory
 * admin API (bench/go/server/admin.go, written from the proto alone).
 * Provenance cannot: the peer does not sign as ours does (a DSSE envelope
 * with the server's key), so `provenance` and pulls with trusted keys are
 * ours alone (test/provenance.test.ts, test/independent-server.test.ts), and
 * the peer says so with UNIMPLEMENTED.
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
    token = randomBytes(16).toString("hex");
    await writeFile(join(work, "token"), token);
    const keygen = await runCli(["keygen", "-o", join(work, "signing")]);
    assert.equal(keygen.code, 0, keygen.stderr);
    ours = await startServerProcess({
      args: [
        ...["--pull-policy", "never", "--signing-key", join(work, "signing.key")],
        ...["--admin-token-file", join(work, "token")],
      ],
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
  let token: string;
  /** The same call against each server, each with a client of its own. */
  async function onBoth<T>(call: (client: PluginClient) => Promise<T>): Promise<Map<string, T>> {
    const results = new Map<string, T>();
    for (const [name, address] of servers) {
      const client = createPluginClient({ address, token });
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

  /** A manifest without what each server decides alone: when it was made. */
  const comparable = ({ createdAt: _, ...manifest }: PluginManifest) => manifest;
  const ADMIN = Buffer.from("export default 1;\n");

  it("push, inspect and ls: the same manifest from both", async () => {
    const results = await onBoth(async (client) => {
      const pushed = comparable(
        await client.push(key("admin-a"), [ADMIN], {
          mediaType: "text/javascript",
          annotations: { team: "a" },
        }),
      );
      const inspected = comparable(await client.inspect(key("admin-a")));
      const listed = (await client.list({ pluginName: "admin-a" })).map(comparable);
      return { pushed, inspected, listed };
    });
    const result = same(results);
    assert.deepEqual(result.inspected, result.pushed);
    assert.deepEqual(result.listed, [result.pushed]);
  });

  it("push with a wrong announced digest: the same code from both, and nothing stored", async () => {
    const wrong = `sha256:${"0".repeat(64)}` as const;
    const results = await onBoth(async (client) => ({
      push: await codeOf(client.push(key("admin-wrong"), [ADMIN], { digest: wrong })),
      inspect: await codeOf(client.inspect(key("admin-wrong"))),
    }));
    const result = same(results);
    assert.notEqual(result.push, "ok");
    assert.equal(result.inspect, Code.NotFound);
  });

  it("rm and gc: removed once, then not; the blob freed", async () => {
    const results = await onBoth(async (client) => {
      await client.push(key("admin-rm"), [randomBytes(1000)]);
      const first = await client.remove(key("admin-rm"));
      const second = await client.remove(key("admin-rm"));
      const inspect = await codeOf(client.inspect(key("admin-rm")));
      const { removedBlobs, freedBytes } = await client.collectGarbage();
      return { first, second, inspect, freed: removedBlobs >= 1 && freedBytes >= 1000 };
    });
    assert.deepEqual(same(results), { first: true, second: false, inspect: Code.NotFound, freed: true });
  });

  it("provenance: ours signs, the peer cannot and answers UNIMPLEMENTED", async () => {
    const codes = await onBoth((client) => codeOf(client.provenance(key("admin-a"))));
    assert.deepEqual(
      [...codes],
      [
        ["ours", "ok"],
        ["grpc-go", Code.Unimplemented],
      ],
    );
  });
});
