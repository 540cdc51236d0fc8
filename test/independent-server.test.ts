import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  Code,
  createPluginClient,
  loadPlugin,
  PluginError,
  UntrustedArtifactError,
  type VerifiedBy,
} from "atomix-plugins-client";
import type { Digest } from "atomix-plugins-core/model/artifact";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { buildGoPeers } from "../bench/lib/go-peers.js";
import { type ServerProcess as PeerProcess, startServer } from "../bench/lib/processes.js";
import { REPO_ROOT } from "./helpers/go-fixtures.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

/**
 * `atomix.runtime.v1` promises a stream of `bytes data` and a `string
 * plugin`, nothing more: the digest and size metadata, resume from an
 * offset, not-modified and the `atomix-plugin://` reference are this
 * project's extensions. So the client is held to any conforming server: the
 * grpc-go peer of the benchmark (bench/go/server, Debian's grpc-go), in each
 * of its metadata modes, beside our own server.
 */

const MiB = 1024 * 1024;
/** A few chunks of the Go server's 1 MiB, the last one partial. */
const BIG = randomBytes(3 * MiB + 12_345);
const BIG_DIGEST = sha256(BIG);
const CUT_AT = MiB;
const WRONG = `sha256:${"0".repeat(64)}` as Digest;
/** A Node.js plugin, to load what a compile answered. */
const MODULE = Buffer.from("export default { answer: 42 };\n");

const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});
const cliKey = (name: string) => [`${name}@1.0.0`, "-r", "1.0.0", "-b", "node20"];

function sha256(bytes: Buffer): Digest {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** How each server under test speaks: what vouches for a pull, and whether it resumes. */
interface Mode {
  name: string;
  /** What a pull with nothing pinned or trusted is verified by. */
  verifiedBy: VerifiedBy;
  /** CompilePlugin answers an atomix-plugin:// reference (else a string of its own). */
  references: boolean;
  /** A wrong pin: refused before the bytes (the server's digest differs) or after them. */
  wrongPin: Code;
  resumes: boolean;
}

const MODES: Mode[] = [
  { name: "ours", verifiedBy: "server", references: true, wrongPin: Code.FailedPrecondition, resumes: true },
  { name: "full", verifiedBy: "server", references: true, wrongPin: Code.FailedPrecondition, resumes: true },
  { name: "none", verifiedBy: "none", references: false, wrongPin: Code.DataLoss, resumes: false },
  { name: "size", verifiedBy: "none", references: false, wrongPin: Code.DataLoss, resumes: false },
  {
    name: "trailer",
    verifiedBy: "server",
    references: true,
    wrongPin: Code.FailedPrecondition,
    resumes: false,
  },
];

const GO_MODES = MODES.filter((mode) => mode.name !== "ours");

const rejectsWith = (code: Code) => (error: unknown) =>
  error instanceof PluginError && error.code === code ? true : assert.fail(`expected code ${code}: ${error}`);

describe("the client against any server of atomix.runtime.v1", () => {
  let work: string;
  let ours: ServerProcess;
  /** Address of each mode's server, and of its twin that cuts the first pull after CUT_AT bytes. */
  const address = new Map<string, string>();
  const cutting = new Map<string, string>();
  const peers: PeerProcess[] = [];
  let corrupting: string;
  let trustedKey: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-any-server-"));
    const go = await buildGoPeers({ root: REPO_ROOT, outDir: join(work, "go") });
    await writeFile(join(work, "big.bin"), BIG);
    await writeFile(join(work, "empty.bin"), "");
    await writeFile(join(work, "module.mjs"), MODULE);
    const files = ["big", "empty", "module"].flatMap((name) => [
      "-file",
      `${name}=${join(work, name === "module" ? "module.mjs" : `${name}.bin`)}`,
    ]);
    const peer = async (name: string, args: string[]) => {
      const started = await startServer({ name, command: go.server, args: [...files, ...args] });
      peers.push(started);
      return started.address;
    };
    for (const mode of GO_MODES) {
      const answer = mode.references ? "reference" : "opaque";
      address.set(mode.name, await peer(mode.name, ["-metadata", mode.name, "-compile-answer", answer]));
      cutting.set(
        mode.name,
        await peer(`${mode.name} cut`, ["-metadata", mode.name, "-cut-after", String(CUT_AT), "-cuts", "1"]),
      );
    }
    corrupting = await peer("trailer corrupt", ["-metadata", "trailer", "-corrupt"]);

    const keygen = await runCli(["keygen", "-o", join(work, "signing")]);
    assert.equal(keygen.code, 0, keygen.stderr);
    trustedKey = await readFile(join(work, "signing.pub"), "utf8");
    // Pushes are signed only with the admin token (they record who pushed).
    const token = randomBytes(16).toString("hex");
    await writeFile(join(work, "token"), token);
    ours = await startServerProcess({
      args: [
        ...["--pull-policy", "never", "--signing-key", join(work, "signing.key")],
        ...["--admin-token-file", join(work, "token")],
      ],
    });
    address.set("ours", ours.address);
    const client = createPluginClient({ address: ours.address, token });
    try {
      await client.push(key("big"), [BIG]);
      await client.push(key("empty"), [Buffer.alloc(0)]);
      await client.push(key("module"), [MODULE]);
    } finally {
      client.close();
    }
  });

  after(async () => {
    await Promise.all(peers.map((peer) => peer.stop()));
    await ours?.stop();
    await rm(work, { recursive: true, force: true });
  });

  const withClient = async <T>(
    at: string,
    use: (client: ReturnType<typeof createPluginClient>) => Promise<T>,
  ) => {
    const client = createPluginClient({ address: at });
    try {
      return await use(client);
    } finally {
      client.close();
    }
  };
  let files = 0;
  const target = () => join(work, `out-${++files}.bin`);

  for (const mode of MODES) {
    describe(`${mode.name === "ours" ? "our server" : `grpc-go, metadata ${mode.name}`}`, () => {
      it("pulls an artifact and an empty one whole, and says what verified them", async () => {
        const at = address.get(mode.name) as string;
        await withClient(at, async (client) => {
          for (const [name, bytes] of [
            ["big", BIG],
            ["empty", Buffer.alloc(0)],
          ] as const) {
            const to = target();
            const result = await client.pull(key(name), { to });
            assert.deepEqual(await readFile(to), bytes);
            assert.equal(result.digest, sha256(bytes));
            assert.equal(result.size, bytes.byteLength);
            assert.equal(result.verifiedBy, mode.verifiedBy);
          }
        });
      });

      it("pulls through the CLI, warning on stderr only when nothing verified the bytes", async () => {
        const to = target();
        const run = await runCli([
          "pull",
          ...cliKey("big"),
          "-o",
          to,
          "-s",
          address.get(mode.name) as string,
        ]);
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(await readFile(to), BIG);
        assert.match(run.stdout, new RegExp(`pulled big@1.0.0 .*: ${BIG_DIGEST}`));
        if (mode.verifiedBy === "none") assert.match(run.stderr, /warning: big@1\.0\.0 .* is unverified/);
        else assert.equal(run.stderr, "");

        const json = await runCli([
          "pull",
          ...cliKey("big"),
          "-o",
          to,
          "-s",
          address.get(mode.name) as string,
          "--json",
        ]);
        assert.equal(json.code, 0, json.stderr);
        assert.equal((JSON.parse(json.stdout) as { verifiedBy: string }).verifiedBy, mode.verifiedBy);
      });

      it("checks a pinned digest, and refuses a wrong pin leaving nothing behind", async () => {
        const at = address.get(mode.name) as string;
        await withClient(at, async (client) => {
          const pinned = await client.pull(key("big"), { to: target(), expectedDigest: BIG_DIGEST });
          assert.equal(pinned.verifiedBy, "pin");
          const to = target();
          await assert.rejects(
            client.pull(key("big"), { to, expectedDigest: WRONG }),
            rejectsWith(mode.wrongPin),
          );
          assert.equal(existsSync(to), false);
        });
        const to = target();
        const run = await runCli(["pull", ...cliKey("big"), "-o", to, "-s", at, "--digest", WRONG]);
        assert.equal(run.code, mode.wrongPin === Code.DataLoss ? 6 : 4, run.stderr);
        assert.equal(existsSync(to), false);
      });

      it("serves a pinned pull from the cache without a call, and an unpinned one whole", async () => {
        const cacheDir = join(work, `cache-${mode.name}`);
        await withClient(address.get(mode.name) as string, async (client) => {
          const first = await client.pull(key("big"), { to: target(), cacheDir });
          assert.equal(first.fromCache, false);
          const again = await client.pull(key("big"), { to: target(), cacheDir });
          // Only our server answers "not modified" (x-plugin-if-none-match): others send the bytes again.
          assert.equal(again.fromCache, mode.name === "ours");
          assert.equal(again.digest, BIG_DIGEST);
          const to = target();
          const pinned = await client.pull(key("big"), { to, cacheDir, expectedDigest: BIG_DIGEST });
          assert.deepEqual(pinned.attempts, []);
          assert.equal(pinned.fromCache, true);
          assert.deepEqual(await readFile(to), BIG);
        });
      });

      it("compiles: the answer as it came, parsed when it is a reference", async () => {
        const at = address.get(mode.name) as string;
        const compiled = await withClient(at, (client) => client.compile(key("big")));
        assert.deepEqual(compiled.key, key("big"));
        if (mode.references) {
          assert.equal(compiled.plugin, `atomix-plugin://1.0.0/node20/big@1.0.0@${BIG_DIGEST}`);
          assert.equal(compiled.digest, BIG_DIGEST);
          assert.deepEqual(compiled.reference, { key: key("big"), digest: BIG_DIGEST });
        } else {
          assert.equal(compiled.plugin, "big-1.0.0.bin");
          assert.equal(compiled.digest, undefined);
          assert.equal(compiled.reference, undefined);
        }

        const run = await runCli(["compile", ...cliKey("big"), "-s", at]);
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.stdout, `${compiled.plugin}\n`);
        const json = await runCli(["compile", ...cliKey("big"), "-s", at, "--json"]);
        assert.equal(json.code, 0, json.stderr);
        const printed = JSON.parse(json.stdout) as Record<string, unknown>;
        assert.equal(printed.plugin, compiled.plugin);
        assert.equal(printed.reference, compiled.reference ? compiled.plugin : undefined);
        assert.equal(printed.digest, compiled.digest);
        assert.deepEqual(printed.key, key("big"));
      });

      it("loads what a compile answered: pinned by a reference, by key otherwise", async () => {
        const cacheDir = join(work, `load-${mode.name}`);
        await withClient(address.get(mode.name) as string, async (client) => {
          const compiled = await client.compile(key("module"));
          const loaded = await loadPlugin<{ answer: number }>(compiled, { client, cacheDir });
          assert.equal(loaded.plugin.answer, 42);
          assert.equal(loaded.digest, sha256(MODULE));
          const pulled = await client.pull(compiled.key, {
            to: target(),
            ...(compiled.digest ? { expectedDigest: compiled.digest } : {}),
          });
          assert.equal(pulled.verifiedBy, mode.references ? "pin" : mode.verifiedBy);
        });
      });

      it("with trusted keys, takes only what signed provenance vouches for", async () => {
        const at = address.get(mode.name) as string;
        const client = createPluginClient({ address: at, trustedKeys: [trustedKey] });
        const to = target();
        try {
          if (mode.name === "ours") {
            assert.equal((await client.pull(key("big"), { to })).verifiedBy, "provenance");
            return;
          }
          // A server of the API alone has no provenance to give: nothing it sends is taken.
          await assert.rejects(client.pull(key("big"), { to }), UntrustedArtifactError);
          assert.equal(existsSync(to), false);
        } finally {
          client.close();
        }
        const keyFile = join(work, "signing.pub");
        const run = await runCli(["pull", ...cliKey("big"), "-o", to, "-s", at, "--trust-key", keyFile]);
        assert.equal(run.code, 9, run.stderr);
        assert.equal(existsSync(to), false);
      });

      if (mode.name === "ours") return;

      it(
        mode.resumes
          ? "resumes a cut stream from the bytes in hand"
          : "starts a cut stream over: the server does not resume",
        async () => {
          await withClient(cutting.get(mode.name) as string, async (client) => {
            const to = target();
            const result = await client.pull(key("big"), {
              to,
              retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 },
            });
            assert.deepEqual(await readFile(to), BIG);
            assert.equal(result.attempts.length, 2);
            assert.equal(result.attempts[0]?.bytes, CUT_AT);
            assert.match(result.attempts[0]?.error ?? "", /UNAVAILABLE: cut after/);
            assert.equal(result.attempts[1]?.offset, mode.resumes ? CUT_AT : 0);
            assert.equal(result.attempts[1]?.bytes, mode.resumes ? BIG.byteLength - CUT_AT : BIG.byteLength);
            assert.equal(result.transferredBytes, result.attempts[0].bytes + result.attempts[1].bytes);
          });
        },
      );
    });
  }

  describe("bounds and damage", () => {
    it("refuses bytes past maxBytes from a server that announces no size", async () => {
      await withClient(address.get("none") as string, async (client) => {
        const to = target();
        await assert.rejects(
          client.pull(key("big"), { to, maxBytes: MiB }),
          (error: unknown) =>
            rejectsWith(Code.ResourceExhausted)(error) &&
            /more than the 1048576 bytes accepted/.test(String(error)),
        );
        assert.equal(existsSync(to), false);
      });
      const to = target();
      const run = await runCli([
        "pull",
        ...cliKey("big"),
        "-o",
        to,
        "-s",
        address.get("none") as string,
        "--max-bytes",
        String(MiB),
      ]);
      assert.equal(run.code, 8, run.stderr);
      assert.match(run.stderr, /RESOURCE_EXHAUSTED: .*more than the 1048576 bytes accepted/);
      assert.equal(existsSync(to), false);
    });

    it("refuses an announced size past maxBytes before any byte", async () => {
      await withClient(address.get("size") as string, async (client) => {
        const to = target();
        await assert.rejects(
          client.pull(key("big"), { to, maxBytes: MiB }),
          (error: unknown) =>
            rejectsWith(Code.ResourceExhausted)(error) && /announced 3158073 bytes/.test(String(error)),
        );
        assert.equal(existsSync(to), false);
      });
    });

    it("refuses bytes that contradict the digest in the trailers", async () => {
      await withClient(corrupting, async (client) => {
        const to = target();
        await assert.rejects(
          client.pull(key("big"), { to }),
          (error: unknown) =>
            rejectsWith(Code.DataLoss)(error) &&
            String(error).includes(`but the server announced ${BIG_DIGEST}`),
        );
        assert.equal(existsSync(to), false);
      });
      const run = await runCli(["pull", ...cliKey("big"), "-o", target(), "-s", corrupting]);
      assert.equal(run.code, 6, run.stderr);
    });
  });
});
