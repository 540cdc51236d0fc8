import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, generateKeyPairSync, scryptSync } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { loadPlugin } from "atomix-plugins-client/load-plugin";
import { createPluginClient } from "atomix-plugins-client/plugin-client";
import { trustedKeySet, verifyProvenance } from "atomix-plugins-client/provenance-check";
import { Code, PluginError, UntrustedArtifactError } from "atomix-plugins-core/errors/plugin-error";
import type { ArtifactManifest, Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, buildKeyId } from "atomix-plugins-core/model/build-key";
import { PROVENANCE, type ProvenanceStatement, subjectName } from "atomix-plugins-core/model/provenance";
import { createFsStore } from "../src/store/fs-store.js";
import { buildKeyTag } from "../src/store/oci/build-key-tag.js";
import { MEDIA_TYPES, toOciManifest } from "../src/store/oci/oci-manifest.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { runCli } from "./helpers/run-cli.js";
import { type ServerProcess, startServerProcess } from "./helpers/server-process.js";

const run = promisify(execFile);
const TOKEN = "provenance-test-token";
const COUNTER: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};
const PUSHED: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "prebuilt", version: "2.0.0" },
};
/** A plugin an attacker with write access to the store wants every runtime to load. */
const EVIL = Buffer.from(
  'export const driver = { name: "counter", handle: () => "owned" };\nexport default driver;\n',
);

const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}` as Digest;

/**
 * Replaces the artifact of `key` in the store directly, bytes and manifest
 * together, as whoever holds the store's credentials could: the digest the
 * server announces then matches the forged bytes.
 */
type Forge = (key: BuildKey, bytes: Buffer) => Promise<void>;

interface Fixture {
  dir: string;
  server: ServerProcess;
  trusted: string;
  other: string;
  forge: Forge;
  /** Provenance bundles the store holds, all keys together, read off its storage. */
  provenanceCount(): Promise<number>;
}

/**
 * The same behaviour over both stores: what is signed, what a trusting
 * client refuses, what an independent verifier says.
 */
function provenanceSuite(name: string, setUp: () => Promise<Fixture>, tearDown: () => Promise<void>) {
  describe(`signed provenance (${name})`, () => {
    let f: Fixture;
    before(async () => {
      f = await setUp();
    });
    after(tearDown);

    const cli = (args: string[]) =>
      runCli([...args, "--server", f.server.address], { ATOMIX_PLUGINS_TOKEN: TOKEN });
    /** `atomix-plugins pull <spec> -r 1.0.0 -b node20 -o <out> ...extra`. */
    const pull = (spec: string, out: string, ...extra: string[]) =>
      cli(["pull", spec, "-r", "1.0.0", "-b", "node20", "-o", out, ...extra]);

    it("signs what it builds: a SLSA provenance statement naming the key, the bytes, the source and the toolchain", async () => {
      const compiled = await cli(["compile", "counter@1.0.0", "-r", "1.0.0", "-b", "node20"]);
      assert.equal(compiled.code, 0, compiled.stderr);
      const out = join(f.dir, `${name}-counter.mjs`);
      const pulled = await pull("counter@1.0.0", out, "--trust-key", f.trusted);
      assert.equal(pulled.code, 0, pulled.stderr);

      const shown = await cli([
        "provenance",
        "counter@1.0.0",
        "-r",
        "1.0.0",
        "-b",
        "node20",
        "--trust-key",
        f.trusted,
        "--json",
        "-o",
        join(f.dir, `${name}.bundle.json`),
      ]);
      assert.equal(shown.code, 0, shown.stderr);
      const answer = JSON.parse(shown.stdout) as {
        digest: string;
        verified: boolean;
        statement: ProvenanceStatement;
      };
      assert.equal(answer.verified, true);
      assert.equal(answer.digest, sha256(await readFile(out)));
      const { statement } = answer;
      assert.equal(statement._type, PROVENANCE.statementType);
      assert.equal(statement.predicateType, PROVENANCE.predicateType);
      assert.deepEqual(statement.subject, [
        { name: subjectName(COUNTER), digest: { sha256: answer.digest.slice(7) } },
      ]);
      const definition = statement.predicate.buildDefinition;
      assert.equal(definition.buildType, PROVENANCE.builtType);
      assert.deepEqual(definition.externalParameters, {
        runtime: { version: "1.0.0", buildVersion: "node20" },
        plugin: { name: "counter", version: "1.0.0" },
      });
      const roles = new Map(definition.resolvedDependencies?.map((d) => [d.annotations?.role, d]));
      assert.match(Object.keys(roles.get("source")?.digest ?? {})[0] ?? "", /^sha(256|512)$/);
      assert.match(roles.get("toolchain")?.annotations?.version ?? "", /typescript .*esbuild/);
      // The runtime release the artifact was built against, by the digest its manifest records.
      const inspected = await cli(["inspect", "counter@1.0.0", "-r", "1.0.0", "-b", "node20", "--json"]);
      const runtimeDigest = (JSON.parse(inspected.stdout) as { annotations: Record<string, string> })
        .annotations["dev.atomix.runtime.digest"];
      assert.match(runtimeDigest ?? "", /^sha256:[0-9a-f]{64}$/);
      assert.deepEqual(roles.get("runtime")?.digest, { sha256: runtimeDigest?.slice(7) });
      assert.equal(statement.predicate.runDetails.builder.id, "https://builds.example.com/atomix");
      const { startedOn = "", finishedOn = "" } = statement.predicate.runDetails.metadata ?? {};
      assert.ok(Date.parse(startedOn) <= Date.parse(finishedOn));

      // The HTTP port serves the same bundle, and the catalog page links to it.
      const http = `http://${f.server.http}`;
      const served = await fetch(`${http}/provenance?plugin=counter@1.0.0&runtime=1.0.0&build=node20`);
      assert.equal(served.status, 200);
      assert.equal(served.headers.get("content-type"), PROVENANCE.bundleMediaType);
      const bytes = Buffer.from(await served.arrayBuffer());
      const trusted = trustedKeySet([await readFile(f.trusted, "utf8")]);
      verifyProvenance(bytes, { key: COUNTER, digest: answer.digest as Digest }, trusted);
      const page = await (await fetch(`${http}/`)).text();
      assert.match(
        page,
        /built by node from catalog:counter.*href="\/provenance\?plugin=counter%401\.0\.0&amp;runtime=1\.0\.0&amp;build=node20"/,
      );
      assert.equal(
        (await fetch(`${http}/provenance?plugin=counter@1.0.0&runtime=9.9.9&build=node20`)).status,
        404,
      );
      assert.equal((await fetch(`${http}/provenance?plugin=..%2F..&runtime=1.0.0&build=node20`)).status, 400);
    });

    it("writes bundles an independent verifier accepts: openssl checks the DSSE signature with the public key", async () => {
      const bundle = JSON.parse(await readFile(join(f.dir, `${name}.bundle.json`), "utf8")) as {
        mediaType: string;
        dsseEnvelope: { payload: string; payloadType: string; signatures: { sig: string }[] };
      };
      assert.equal(bundle.mediaType, PROVENANCE.bundleMediaType);
      const payload = Buffer.from(bundle.dsseEnvelope.payload, "base64");
      const type = bundle.dsseEnvelope.payloadType;
      // DSSE v1 pre-authentication encoding, written from the spec, not from our code.
      const pae = Buffer.concat([
        Buffer.from(`DSSEv1 ${Buffer.byteLength(type)} ${type} ${payload.byteLength} `),
        payload,
      ]);
      await writeFile(join(f.dir, "pae"), pae);
      await writeFile(
        join(f.dir, "sig"),
        Buffer.from(bundle.dsseEnvelope.signatures[0]?.sig ?? "", "base64"),
      );
      const verified = await run("openssl", [
        "dgst",
        "-sha256",
        "-verify",
        f.trusted,
        "-signature",
        join(f.dir, "sig"),
        join(f.dir, "pae"),
      ]);
      assert.match(verified.stdout, /Verified OK/);
      await writeFile(join(f.dir, "pae"), Buffer.concat([pae, Buffer.from(" ")]));
      await assert.rejects(
        run("openssl", [
          "dgst",
          "-sha256",
          "-verify",
          f.trusted,
          "-signature",
          join(f.dir, "sig"),
          join(f.dir, "pae"),
        ]),
      );
    });

    it("signs what an operator pushes, naming the credential (never the token) and saying it was not built here", async () => {
      const file = join(f.dir, "prebuilt.mjs");
      await writeFile(file, "export const driver = { name: 'prebuilt', handle: () => 'ok' };\n");
      const pushed = await cli(["push", "prebuilt@2.0.0", file, "-r", "1.0.0", "-b", "node20"]);
      assert.equal(pushed.code, 0, pushed.stderr);
      const client = createPluginClient({
        address: f.server.address,
        trustedKeys: [await readFile(f.trusted, "utf8")],
      });
      try {
        const answer = await client.provenance(PUSHED);
        const definition = answer.statement?.predicate.buildDefinition;
        assert.equal(definition?.buildType, PROVENANCE.pushedType);
        const pushedBy = String(definition?.internalParameters?.pushedBy);
        // A memory-hard fingerprint (scrypt), not the token nor a fast hash of it.
        const expected = scryptSync(TOKEN, "atomix-plugins admin token", 8, {
          N: 2 ** 15,
          r: 8,
          p: 1,
          maxmem: 2 ** 26,
        });
        assert.equal(pushedBy, `admin token ${expected.toString("hex")}`);
        assert.ok(!answer.bundle.toString().includes(TOKEN));
        const to = join(f.dir, "prebuilt-pulled.mjs");
        const pulled = await client.pull(PUSHED, { to });
        assert.equal(pulled.digest, sha256(await readFile(file)));
      } finally {
        client.close();
      }
    });

    it("refuses an artifact replaced in the store, bytes and manifest, which a client that verifies nothing loads", async () => {
      await f.forge(COUNTER, EVIL);
      const naive = await loadPlugin<{ handle: () => string }>(COUNTER, {
        server: { address: f.server.address },
        cacheDir: join(f.dir, `${name}-naive`),
        exportName: "driver",
      });
      assert.equal(naive.plugin.handle(), "owned", "without trusted keys the forged plugin loads");

      const out = join(f.dir, `${name}-forged.mjs`);
      const refused = await pull("counter@1.0.0", out, "--trust-key", f.trusted);
      assert.equal(refused.code, 9, refused.stderr);
      assert.match(refused.stderr, /UNTRUSTED: counter@1\.0\.0 .*provenance/);
      await assert.rejects(stat(out), { code: "ENOENT" });
      assert.deepEqual(
        (await readdir(f.dir)).filter((n) => n.includes("forged")),
        [],
        "no partial file left",
      );

      await assert.rejects(
        loadPlugin(COUNTER, {
          server: { address: f.server.address, trustedKeys: [await readFile(f.trusted, "utf8")] },
          cacheDir: join(f.dir, `${name}-careful`),
          exportName: "driver",
        }),
        (error: unknown) => error instanceof UntrustedArtifactError,
      );
    });

    it("refuses provenance signed by a key it does not trust, and takes several keys at once for rotation", async () => {
      const out = join(f.dir, `${name}-prebuilt.mjs`);
      const other = await pull("prebuilt@2.0.0", out, "--trust-key", f.other);
      assert.equal(other.code, 9, other.stderr);
      assert.match(other.stderr, /UNTRUSTED: .*not by the 1 trusted key/);
      await assert.rejects(stat(out), { code: "ENOENT" });
      const unverified = await pull("prebuilt@2.0.0", out);
      assert.equal(unverified.code, 0, unverified.stderr);
      const rotated = await runCli(
        ["pull", "prebuilt@2.0.0", "-r", "1.0.0", "-b", "node20", "-o", out, "--server", f.server.address],
        { ATOMIX_PLUGINS_TRUSTED_KEYS: `${f.other}:${f.trusted}` },
      );
      assert.equal(rotated.code, 0, rotated.stderr);
    });

    it("removes provenance with its artifact", async () => {
      const before = await f.provenanceCount();
      const removed = await cli(["rm", "prebuilt@2.0.0", "-r", "1.0.0", "-b", "node20"]);
      assert.equal(removed.code, 0, removed.stderr);
      const client = createPluginClient({ address: f.server.address });
      try {
        await assert.rejects(client.provenance(PUSHED), (error: unknown) => {
          return error instanceof PluginError && error.code === Code.NotFound;
        });
      } finally {
        client.close();
      }
      assert.equal(await f.provenanceCount(), before - 1);
    });
  });
}

async function keyPairs(dir: string): Promise<{ trusted: string; other: string }> {
  for (const [prefix, algorithm] of [
    ["trusted", "ecdsa-p256"],
    ["other", "ed25519"],
  ] as const) {
    const made = await runCli(["keygen", "-o", join(dir, prefix), "--algorithm", algorithm]);
    assert.equal(made.code, 0, made.stderr);
  }
  const again = await runCli(["keygen", "-o", join(dir, "trusted")]);
  assert.equal(again.code, 4, "keygen never overwrites a key");
  assert.equal((await stat(join(dir, "trusted.key"))).mode & 0o777, 0o600);
  return { trusted: join(dir, "trusted.pub"), other: join(dir, "other.pub") };
}

function serverArgs(dir: string): string[] {
  return ["--signing-key", join(dir, "trusted.key"), "--builder-id", "https://builds.example.com/atomix"];
}

{
  let dir = "";
  let server: ServerProcess | undefined;
  provenanceSuite(
    "embedded store",
    async () => {
      dir = await mkdtemp(join(tmpdir(), "atomix-provenance-"));
      const keys = await keyPairs(dir);
      const tokenFile = join(dir, "token");
      await writeFile(tokenFile, TOKEN);
      const dataDir = join(dir, "data");
      await mkdir(dataDir);
      const args = [...serverArgs(dir), "--admin-token-file", tokenFile];
      server = await startServerProcess({ dataDir, args });
      const fixture: Fixture = {
        dir,
        server,
        ...keys,
        async forge(key, bytes) {
          // The forger copies the genuine bundle under the new digest too: it
          // is validly signed, but for other bytes.
          const id = buildKeyId(key);
          const index = join(dataDir, "index", id.slice(0, 2), `${id}.json`);
          const manifest = JSON.parse(await readFile(index, "utf8")) as ArtifactManifest;
          const digest = sha256(bytes);
          const hex = digest.slice(7);
          await mkdir(join(dataDir, "blobs", "sha256", hex.slice(0, 2)), { recursive: true });
          await writeFile(join(dataDir, "blobs", "sha256", hex.slice(0, 2), hex), bytes);
          await copyFile(
            join(dataDir, "provenance", id, `${manifest.digest.slice(7)}.json`),
            join(dataDir, "provenance", id, `${hex}.json`),
          );
          await writeFile(index, JSON.stringify({ ...manifest, digest, size: bytes.byteLength }));
          // The server caches manifests it has read: restart it on the forged store.
          await fixture.server.stop();
          fixture.server = await startServerProcess({ dataDir, args });
          server = fixture.server;
        },
        async provenanceCount() {
          let count = 0;
          for (const id of await readdir(join(dataDir, "provenance"))) {
            count += (await readdir(join(dataDir, "provenance", id))).length;
          }
          return count;
        },
      };
      return fixture;
    },
    async () => {
      await server?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  );
}

{
  let dir = "";
  let registry: RegistryProcess | undefined;
  let server: ServerProcess | undefined;
  provenanceSuite(
    "OCI store",
    async () => {
      dir = await mkdtemp(join(tmpdir(), "atomix-provenance-oci-"));
      const keys = await keyPairs(dir);
      registry = await startRegistry();
      const tokenFile = join(dir, "token");
      await writeFile(tokenFile, TOKEN);
      const storeUrl = registry.storeUrl("atomix/plugins");
      server = await startServerProcess({
        // A forged tag is seen at the next lookup, not within the replica's resolve TTL.
        args: [
          ...serverArgs(dir),
          "--admin-token-file",
          tokenFile,
          "--store",
          storeUrl,
          "--resolve-ttl",
          "0",
        ],
      });
      const base = `http://${registry.address}/v2/atomix/plugins`;
      return {
        dir,
        server,
        ...keys,
        async forge(key, bytes) {
          // With the registry's credentials: upload the blob, retag the key.
          const digest = sha256(bytes);
          const started = await fetch(`${base}/blobs/uploads/`, { method: "POST" });
          const location = new URL(started.headers.get("location") ?? "", base);
          location.searchParams.set("digest", digest);
          const uploaded = await fetch(location, { method: "PUT", body: bytes });
          assert.equal(uploaded.status, 201);
          const manifest: ArtifactManifest = {
            key,
            digest,
            size: bytes.byteLength,
            mediaType: "text/javascript",
            createdAt: new Date().toISOString(),
            annotations: {},
          };
          const put = await fetch(`${base}/manifests/${buildKeyTag(key)}`, {
            method: "PUT",
            headers: { "content-type": MEDIA_TYPES.imageManifest },
            body: JSON.stringify(toOciManifest(manifest)),
          });
          assert.equal(put.status, 201);
        },
        async provenanceCount() {
          // CNCF Distribution 2.x has no referrers API: the store keeps the
          // fallback tags sha256-<subject>, each an index of referrers.
          const tags = ((await (await fetch(`${base}/tags/list`)).json()) as { tags: string[] }).tags;
          let count = 0;
          for (const tag of tags.filter((t) => /^sha256-[0-9a-f]{64}$/.test(t))) {
            const index = await fetch(`${base}/manifests/${tag}`, {
              headers: { accept: "application/vnd.oci.image.index.v1+json" },
            });
            count += ((await index.json()) as { manifests: unknown[] }).manifests.length;
          }
          return count;
        },
      };
    },
    async () => {
      await server?.stop();
      await registry?.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  );
}

describe("signed provenance without an admin token", () => {
  it("stores pushes unsigned, since anyone may push, and a verifying client refuses them", async () => {
    const dir = await mkdtemp(join(tmpdir(), "atomix-provenance-open-"));
    const keys = await keyPairs(dir);
    const server = await startServerProcess({ dataDir: join(dir, "data"), args: serverArgs(dir) });
    try {
      assert.ok(server.logs.some((line) => String(line.msg).startsWith("no admin token: pushed artifacts")));
      const file = join(dir, "open.mjs");
      await writeFile(file, "export const driver = {};\n");
      const pushed = await runCli([
        "push",
        "prebuilt@2.0.0",
        file,
        "-r",
        "1.0.0",
        "-b",
        "node20",
        "--server",
        server.address,
      ]);
      assert.equal(pushed.code, 0, pushed.stderr);
      const pulled = await runCli([
        ...["pull", "prebuilt@2.0.0", "-r", "1.0.0", "-b", "node20", "-o", join(dir, "out.mjs")],
        ...["--trust-key", keys.trusted, "--server", server.address],
      ]);
      assert.equal(pulled.code, 9, pulled.stderr);
      assert.match(
        pulled.stderr,
        /UNTRUSTED: .* carries no signed provenance \(.*pushed without an admin token\)/,
      );
      // Trusted keys beside a client made without them are refused, not ignored.
      const client = createPluginClient({ address: server.address });
      try {
        await assert.rejects(
          loadPlugin(PUSHED, {
            client,
            server: { address: server.address, trustedKeys: [await readFile(keys.trusted, "utf8")] },
            cacheDir: join(dir, "cache"),
            exportName: "driver",
          }),
          (error: unknown) =>
            error instanceof PluginError &&
            error.code === Code.InvalidArgument &&
            /server\.trustedKeys would go unused/.test(error.message),
        );
      } finally {
        client.close();
      }
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("signing keys the server cannot use", () => {
  it("stops at start naming why, and never prints a key given in place of its file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "atomix-provenance-keys-"));
    const serve = (env: NodeJS.ProcessEnv, args: string[] = []) =>
      runCli(["serve", "-d", join(dir, "data"), "--listen", "127.0.0.1:0", "--http", "off", ...args], env);
    try {
      const pem = generateKeyPairSync("ec", { namedCurve: "prime256v1" })
        .privateKey.export({ type: "pkcs8", format: "pem" })
        .toString();
      // The usual way a secret reaches a container: its text in a variable.
      const inline = await serve({ ATOMIX_PLUGINS_SIGNING_KEY: pem });
      assert.equal(inline.code, 2, inline.stderr);
      assert.match(inline.stderr, /holds PEM text, not a file name/);
      for (const line of pem.split("\n").filter((l) => l && !l.startsWith("-----"))) {
        assert.ok(!`${inline.stdout}${inline.stderr}`.includes(line), "the key is not printed");
      }

      const encrypted = join(dir, "encrypted.key");
      const p384 = join(dir, "p384.key");
      await writeFile(
        encrypted,
        generateKeyPairSync("ed25519").privateKey.export({
          type: "pkcs8",
          format: "pem",
          cipher: "aes-256-cbc",
          passphrase: "secret",
        }),
        { mode: 0o600 },
      );
      await writeFile(
        p384,
        generateKeyPairSync("ec", { namedCurve: "secp384r1" }).privateKey.export({
          type: "pkcs8",
          format: "pem",
        }),
        { mode: 0o600 },
      );
      const refusedEncrypted = await serve({}, ["--signing-key", encrypted]);
      assert.equal(refusedEncrypted.code, 2, refusedEncrypted.stderr);
      assert.match(
        refusedEncrypted.stderr,
        /encrypted\.key is encrypted; the server reads an unencrypted PEM/,
      );
      const refusedCurve = await serve({}, ["--signing-key", p384]);
      assert.equal(refusedCurve.code, 2, refusedCurve.stderr);
      assert.match(
        refusedCurve.stderr,
        /is a ec secp384r1 key; provenance is signed with ECDSA P-256 or Ed25519/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("signed provenance of a put that does not complete", () => {
  it("leaves no bundle when cancelled while signing: a later unsigned put of the same bytes does not serve it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "atomix-provenance-cancel-"));
    try {
      const store = await createFsStore({ dir });
      const bytes = Buffer.from("export default {};\n");
      let signed = 0;
      // The push's call is cancelled while its provenance is being signed.
      const duringSigning = new AbortController();
      await assert.rejects(
        store.put(PUSHED, [bytes], {
          signal: duringSigning.signal,
          attest: async () => {
            signed += 1;
            duringSigning.abort();
            return Buffer.from('{"signed":"for a push its caller saw fail"}');
          },
        }),
        (error: unknown) => error instanceof PluginError && error.code === Code.Cancelled,
      );
      assert.equal(signed, 1);
      assert.equal(await store.get(PUSHED), undefined, "nothing was stored");
      // The same bytes stored later by a path that signs nothing (a push to
      // a server without an admin token, a replica without --signing-key).
      await store.put(PUSHED, [bytes]);
      const found = await store.getProvenance(PUSHED);
      assert.equal(found?.manifest.digest, sha256(bytes));
      assert.equal(found?.bundle, undefined, "no bundle of the cancelled put is served");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
