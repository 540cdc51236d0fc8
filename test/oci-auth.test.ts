import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createPrivateKey, randomBytes, randomUUID, sign, X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import { Secret } from "atomix-plugins-core/model/secret";
import type { ArtifactStore } from "../src/store/artifact-store.js";
import { createStore } from "../src/store/create-store.js";
import type { RegistryCredentials } from "../src/store/oci/registry-credentials.js";
import { failure } from "./helpers/failure.js";
import { type RegistryProcess, startRegistry } from "./helpers/registry-process.js";
import { chunksOf, keyOf, readAll } from "./store-suite.js";

const USER = "atomix";
const PASSWORD = "s3cret-test-password";
/** bcrypt (cost 4) of PASSWORD: the only hash the registry's htpasswd accepts. */
const PASSWORD_BCRYPT = "$2b$04$yEQTD1oaX3YOicc7YLWda.1JdKefvtTrYTyx6A9mejFs5/VyOT4.O";

async function storeFor(
  url: string,
  credentials: RegistryCredentials | undefined,
  credentialsFile?: string,
): Promise<ArtifactStore> {
  return createStore({ kind: "oci", url, credentials, credentialsFile });
}

async function roundTrip(store: ArtifactStore): Promise<void> {
  const data = randomBytes(40_000);
  const manifest = await store.put(keyOf("guarded"), chunksOf(data));
  const got = await store.get(keyOf("guarded"));
  assert.ok(got);
  assert.deepEqual((await readAll(store, got)).data, data);
  assert.equal((await store.list()).length, 1);
  assert.equal(await store.remove(keyOf("guarded")), true);
  assert.equal(manifest.size, data.byteLength);
}

const credentials: RegistryCredentials = { username: USER, password: new Secret(PASSWORD) };
const wrongPassword: RegistryCredentials = { username: USER, password: new Secret("not-it") };

describe("OCI store against a registry with Basic auth", () => {
  let dir: string;
  let registry: RegistryProcess;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atomix-basic-"));
    const htpasswd = join(dir, "htpasswd");
    await writeFile(htpasswd, `${USER}:${PASSWORD_BCRYPT}\n`);
    registry = await startRegistry({ auth: { htpasswd } });
  });
  after(async () => {
    await registry?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it("stores and reads with the configured credentials", async () => {
    await roundTrip(await storeFor(registry.storeUrl("basic/env"), credentials));
  });

  it("stores and reads with credentials from a docker config.json", async () => {
    const file = join(dir, "config.json");
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString("base64");
    await writeFile(file, JSON.stringify({ auths: { [registry.address]: { auth } } }));
    await roundTrip(await storeFor(registry.storeUrl("basic/file"), undefined, file));
  });

  it("answers UNAVAILABLE saying credentials are needed, or were refused", async () => {
    const anonymous = await storeFor(registry.storeUrl("basic/anonymous"), undefined);
    const missing = await failure(anonymous.get(keyOf("guarded")));
    assert.equal(missing.code, Code.Unavailable);
    assert.match(missing.message, /requires credentials; set ATOMIX_PLUGINS_OCI_USERNAME/);
    const wrong = await storeFor(registry.storeUrl("basic/wrong"), wrongPassword);
    const refused = await failure(wrong.put(keyOf("guarded"), chunksOf(randomBytes(10))));
    assert.equal(refused.code, Code.Unavailable);
    assert.match(refused.message, /refused the configured credentials/);
  });
});

/**
 * A token server per the distribution token spec: Basic auth in, a JWT
 * (ES256, signed by the key whose certificate the registry trusts, chain in
 * `x5c`) granting the requested scope out.
 */
async function startTokenServer(keyPem: string, certPem: string, issuer: string, service: string) {
  const key = createPrivateKey(keyPem);
  const certDer = new X509Certificate(certPem).raw.toString("base64");
  const requests: { scope: string[]; user: string | undefined }[] = [];
  const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://token");
    const basic = /^Basic (.+)$/.exec(request.headers.authorization ?? "")?.[1];
    const [user, password] = basic ? Buffer.from(basic, "base64").toString().split(":") : [];
    const scope = url.searchParams.getAll("scope");
    requests.push({ scope, user });
    if (user !== USER || password !== PASSWORD) {
      response.writeHead(401, { "content-type": "application/json" }).end('{"details":"bad credentials"}');
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    const access = scope.map((s) => {
      const [type, name, actions] = s.split(":");
      return { type, name, actions: (actions ?? "").split(",") };
    });
    const header = b64({ typ: "JWT", alg: "ES256", x5c: [certDer] });
    const claims = b64({
      iss: issuer,
      sub: user,
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    });
    const signature = sign("sha256", Buffer.from(`${header}.${claims}`), { key, dsaEncoding: "ieee-p1363" });
    response
      .writeHead(200, { "content-type": "application/json" })
      .end(
        JSON.stringify({ token: `${header}.${claims}.${signature.toString("base64url")}`, expires_in: 300 }),
      );
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  return {
    realm: `http://127.0.0.1:${port}/token`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe("OCI store against a registry with Bearer token auth", () => {
  let dir: string;
  let registry: RegistryProcess;
  let tokens: Awaited<ReturnType<typeof startTokenServer>>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atomix-token-"));
    const keyPath = join(dir, "key.pem");
    const certPath = join(dir, "cert.pem");
    await promisify(execFile)("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...["-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", "/CN=atomix-test-token-issuer"],
    ]);
    const [keyPem, certPem] = await Promise.all([readFile(keyPath, "utf8"), readFile(certPath, "utf8")]);
    tokens = await startTokenServer(keyPem, certPem, "atomix-test-issuer", "atomix-test-registry");
    registry = await startRegistry({
      auth: {
        token: {
          realm: tokens.realm,
          service: "atomix-test-registry",
          issuer: "atomix-test-issuer",
          rootCertBundle: certPath,
        },
      },
    });
  });
  after(async () => {
    await registry?.dispose();
    await tokens?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("follows the challenge to the token endpoint and stores and reads with the token", async () => {
    await roundTrip(await storeFor(registry.storeUrl("bearer/store"), credentials));
    const scopes = tokens.requests.filter((r) => r.user === USER).flatMap((r) => r.scope);
    assert.ok(scopes.includes("repository:bearer/store:pull"), scopes.join(" "));
    assert.ok(
      scopes.some((s) => /^repository:bearer\/store:(pull,push|push,pull|push)$/.test(s)),
      scopes.join(" "),
    );
  });

  it("answers UNAVAILABLE when the token endpoint refuses the credentials", async () => {
    const anonymous = await storeFor(registry.storeUrl("bearer/anonymous"), undefined);
    const missing = await failure(anonymous.get(keyOf("guarded")));
    assert.equal(missing.code, Code.Unavailable);
    assert.match(missing.message, /requires credentials/);
    const wrong = await storeFor(registry.storeUrl("bearer/wrong"), wrongPassword);
    const refused = await failure(wrong.get(keyOf("guarded")));
    assert.equal(refused.code, Code.Unavailable);
    assert.match(refused.message, /refused the configured credentials/);
  });
});
