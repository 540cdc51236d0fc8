import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  parseServeConfig,
  resolveServePaths,
  SERVE_ENVIRONMENT,
  SERVE_OPTIONS,
  serveConfigSchema,
} from "../src/config.js";
import { runCli } from "./helpers/run-cli.js";

const README = fileURLToPath(new URL("../../README.md", import.meta.url));

/** The README's "Configuration of `serve`" section. */
async function configurationSection(): Promise<string> {
  const text = await readFile(README, "utf8");
  const start = text.indexOf("## Configuration of `serve`");
  assert.ok(start >= 0, "the README has a configuration section");
  return text.slice(start, text.indexOf("\n## ", start + 1));
}

const longFlag = (flag: string) => /--[a-z-]+/.exec(flag)?.[0] ?? flag;

describe("serve options", () => {
  it("each config option has its environment variable, and a flag unless it is a secret", () => {
    assert.deepEqual(
      SERVE_OPTIONS.map((option) => option.option).sort(),
      Object.keys(serveConfigSchema.shape).sort(),
    );
    const secrets = SERVE_OPTIONS.filter((option) => option.flag === undefined).map(
      (option) => option.option,
    );
    assert.deepEqual(secrets.sort(), ["adminToken", "ociPassword", "ociUsername"]);
    assert.equal(Object.keys(SERVE_ENVIRONMENT).length, SERVE_OPTIONS.length, "one variable per option");
  });

  it("serve --help shows every flag with its environment variable", async () => {
    const help = await runCli(["serve", "--help"]);
    assert.equal(help.code, 0, help.stderr);
    const text = help.stdout.replace(/\s+/g, " "); // commander wraps lines
    for (const option of SERVE_OPTIONS) {
      if (option.flag === undefined) continue;
      assert.ok(text.includes(longFlag(option.flag)), `${option.flag} in --help`);
      assert.ok(text.includes(`[env ${option.env}]`), `${option.env} in --help`);
    }
  });

  it("refuses a key or certificate given as PEM text in place of its file, naming the option and not the value", async () => {
    const pem = generateKeyPairSync("ec", { namedCurve: "prime256v1" })
      .privateKey.export({ type: "pkcs8", format: "pem" })
      .toString();
    const secretLines = pem.split("\n").filter((line) => line && !line.startsWith("-----"));
    const cases: [Record<string, string>, string[], RegExp][] = [
      [
        { ATOMIX_PLUGINS_TLS_CERT: "cert.pem", ATOMIX_PLUGINS_TLS_KEY: pem },
        [],
        /ATOMIX_PLUGINS_TLS_KEY: holds PEM text/,
      ],
      [{}, ["--admin-token-file", `token\n${secretLines[0]}`], /--admin-token-file: holds PEM text/],
      [{ ATOMIX_PLUGINS_OCI_CREDENTIALS: pem }, [], /ATOMIX_PLUGINS_OCI_CREDENTIALS: holds PEM text/],
    ];
    for (const [env, args, pattern] of cases) {
      const run = await runCli(["serve", ...args], env);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, pattern);
      for (const line of secretLines) {
        assert.ok(!`${run.stdout}${run.stderr}`.includes(line), "the key is not printed");
      }
    }
  });

  it("the README's configuration table lists every flag and environment variable", async () => {
    const section = await configurationSection();
    for (const option of SERVE_OPTIONS) {
      assert.ok(section.includes(`\`${option.env}\``), `${option.env} in the README's table`);
      if (option.flag !== undefined) {
        assert.ok(section.includes(`\`${longFlag(option.flag)}\``), `${option.flag} in the README's table`);
      }
    }
  });
});

describe("serve paths", () => {
  it("resolves every path option against the working directory once, and leaves program names to PATH", () => {
    const config = resolveServePaths(
      serveConfigSchema.parse({
        dataDir: "./data",
        cacheDir: "cache",
        runtimes: ["./runtimes", "/opt/runtimes"],
        sources: ["plugins"],
        goCacheDir: "../go-cache",
        adminTokenFile: "token",
        signingKey: "keys/signing.key",
        bwrap: "./tools/bwrap",
        goInstallations: ["go", "./go1.19"],
      }),
      "/srv/atomix",
    );
    assert.equal(config.dataDir, "/srv/atomix/data");
    assert.equal(config.cacheDir, "/srv/atomix/cache");
    assert.deepEqual(config.runtimes, ["/srv/atomix/runtimes", "/opt/runtimes"]);
    assert.deepEqual(config.sources, ["/srv/atomix/plugins"]);
    assert.equal(config.goCacheDir, "/srv/go-cache");
    assert.equal(config.adminTokenFile, "/srv/atomix/token");
    assert.equal(config.signingKey, "/srv/atomix/keys/signing.key");
    assert.equal(config.bwrap, "/srv/atomix/tools/bwrap");
    assert.deepEqual(config.goInstallations, ["go", "/srv/atomix/go1.19"], "a bare name stays a PATH lookup");
    assert.equal(config.tlsCert, undefined, "an option not given stays unset");
    assert.equal(
      parseServeConfig({}, {}).dataDir,
      join(process.cwd(), "data"),
      "serve resolves the default ./data where it was started",
    );
  });
});
