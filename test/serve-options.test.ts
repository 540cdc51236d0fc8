import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { SERVE_ENVIRONMENT, SERVE_OPTIONS, serveConfigSchema } from "../src/config.js";
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
