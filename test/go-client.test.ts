import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createPluginClient } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { buildGoPeers } from "../bench/lib/go-peers.js";
import { type ServerProcess as PeerProcess, startServer } from "../bench/lib/processes.js";
import { runProcess } from "../src/compiler/run-process.js";
import { REPO_ROOT } from "./helpers/go-fixtures.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";
import { startTcpRelay, type TcpRelay } from "./helpers/tcp-relay.js";

const MiB = 1024 * 1024;
/** A few of the Go peer's 1 MiB chunks, the last one partial; its tests cut pulls after the first. */
const BIG = randomBytes(3 * MiB + 12_345);
const CLIENT_DIR = join(REPO_ROOT, "clients", "go");

const key = (name: string): BuildKey => ({
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

/**
 * The Go client package (clients/go) is tested by its own `go test`, which
 * needs real servers: this file starts an atomix-plugins server that signs
 * provenance, and the grpc-go peer of the benchmark in each metadata mode
 * (the API's contract without this project's extensions), some of them
 * cutting their first pull, and hands their addresses to `go test` through
 * the environment. `go vet` runs first. Loading plugins into a host is
 * tested through the example runtime (test/go-runtime.test.ts): a test
 * binary carries no build settings to compare a plugin with.
 */
describe("the Go client package", () => {
  let work: string;
  let ours: ServerProcess | undefined;
  const peers: PeerProcess[] = [];
  let relay: TcpRelay | undefined;
  const env: Record<string, string> = {};

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-go-client-"));
    const go = await buildGoPeers({ root: REPO_ROOT, outDir: join(work, "go") });
    const bigFile = join(work, "big.bin");
    await writeFile(bigFile, BIG);
    await writeFile(join(work, "module.mjs"), "export default {};\n");
    env.ATOMIX_GOCLIENT_BIG = bigFile;
    const files = ["-file", `big=${bigFile}`, "-file", `module=${join(work, "module.mjs")}`];
    const peer = async (name: string, args: string[]) => {
      const started = await startServer({ name, command: go.server, args: [...files, ...args] });
      peers.push(started);
      env[`ATOMIX_GOCLIENT_PEER_${name}`] = started.address;
    };
    for (const mode of ["full", "none", "size", "trailer"]) {
      const answer = mode === "full" || mode === "trailer" ? "reference" : "opaque";
      await peer(mode.toUpperCase(), ["-metadata", mode, "-compile-answer", answer]);
    }
    await peer("FULL_CUT", ["-metadata", "full", "-cut-after", String(MiB), "-cuts", "1"]);
    await peer("NONE_CUT", ["-metadata", "none", "-cut-after", String(MiB), "-cuts", "1"]);
    await peer("ALWAYS_CUT", ["-metadata", "none", "-cut-after", String(MiB), "-cuts", "1000000"]);
    await peer("CORRUPT", ["-metadata", "trailer", "-corrupt"]);

    for (const name of ["signing", "stranger"]) {
      const keygen = await runCli(["keygen", "-o", join(work, name)]);
      assert.equal(keygen.code, 0, keygen.stderr);
    }
    env.ATOMIX_GOCLIENT_TRUST = join(work, "signing.pub");
    env.ATOMIX_GOCLIENT_STRANGER = join(work, "stranger.pub");
    // Pushes are signed only with the admin token (they record who pushed).
    const token = randomBytes(16).toString("hex");
    await writeFile(join(work, "token"), token);
    ours = await startServerProcess({
      args: [
        ...["--pull-policy", "never", "--signing-key", join(work, "signing.key")],
        ...["--admin-token-file", join(work, "token")],
      ],
    });
    env.ATOMIX_GOCLIENT_OURS = ours.address;
    // Our server through a network that drops the first connection after 1 MiB.
    relay = await startTcpRelay(ours.address, { cutFirstAfter: MiB });
    env.ATOMIX_GOCLIENT_OURS_CUT = relay.address;
    const client = createPluginClient({ address: ours.address, token });
    try {
      await client.push(key("big"), [BIG]);
      await client.push(key("empty"), [Buffer.alloc(0)]);
      await client.push(key("module"), [Buffer.from("export default {};\n")]);
    } finally {
      client.close();
    }
  });

  after(async () => {
    await Promise.all(peers.map((peer) => peer.stop()));
    await relay?.close();
    await ours?.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** Runs `go ...args` in clients/go, offline (Debian's gRPC through its replace directives). */
  const goCommand = (args: string[]) => {
    const shared = process.env.ATOMIX_PLUGINS_TEST_GO_CACHE;
    return runProcess("go", args, {
      cwd: CLIENT_DIR,
      env: {
        PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
        HOME: work,
        GOCACHE: shared ? join(shared, "build") : join(work, "go-cache"),
        GOPROXY: "off",
        GOSUMDB: "off",
        GOFLAGS: "-mod=readonly",
        GOWORK: "off",
        GOTOOLCHAIN: "local",
        CGO_ENABLED: "1",
        ...env,
      },
    });
  };

  it("is go vet clean", async () => {
    const vet = await goCommand(["vet", "./..."]);
    assert.equal(vet.exitCode, 0, vet.stderr);
  });

  it("passes its go test against our server and the grpc-go peer in each mode", async () => {
    const ran = await goCommand(["test", "-count=1", "-v", "./..."]);
    assert.equal(ran.exitCode, 0, `${ran.stdout}\n${ran.stderr}`);
    assert.doesNotMatch(ran.stdout, /--- SKIP/, "every test ran against the servers");
    for (const test of [
      "TestPullFromOurServerThenFromTheCacheAfterARestart",
      "TestTheLastKnownGoodCopyWhenTheServerIsUnreachable",
      "TestSignedProvenance",
      "TestTamperedBytesAreRefused",
      "TestAnyServerOfTheAPI",
      "TestACutStreamResumesOrStartsOver",
      "TestConcurrentPullsShareOneTransfer",
      "TestTheCacheIsReverifiedAndBounded",
      "TestRetriesThenTheDeadlineComeToAnEnd",
      "TestASizeAnnouncedBeyondWithMaxBytesIsRefused",
      "TestMoreBytesThanWithMaxBytesAreRefusedWhateverTheSizeAnnounced",
      "TestAServerThatSendsNothingIsAbandoned",
      "TestASlowDripIsAbandoned",
      "TestAWithheldProvenanceAnswerIsNotWaitedFor",
      "TestANotModifiedAnswerUnaskedIsRefused",
      "TestANotModifiedAnswerForOtherBytesThanTheCachedOnesIsRefused",
      "TestADigestTrailerThatContradictsTheHeaderIsRefused",
      "TestASizeTrailerThatContradictsTheBytesIsRefused",
      "TestMoreBytesThanTheAnnouncedSizeAreRefused",
      "TestACacheOtherUsersCanWriteIsRefused",
      "TestAFirstAnswerSlowerThanTheStallTimeoutIsWaitedFor",
      "TestACompileNeverAnsweredIsGivenUp",
    ]) {
      assert.match(ran.stdout, new RegExp(`--- PASS: ${test} `));
    }
  });
});
