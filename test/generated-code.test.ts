import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { tempDir } from "./helpers/server-process.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

/**
 * Runs `script <temporary dir>` and checks that `inOutput` there holds
 * exactly the files committed in `committed`.
 */
async function assertFresh(
  script: string,
  inOutput: string,
  committed: string,
  advice: string,
): Promise<void> {
  const out = await tempDir("atomix-gen-");
  try {
    execFileSync("bash", [join(ROOT, script), out.path], { stdio: "pipe" });
    const fresh = join(out.path, inOutput);
    const where = relative(ROOT, committed);
    assert.deepEqual(await files(fresh), await files(committed), `${where}: other files (${advice})`);
    for (const file of await files(committed)) {
      const made = await readFile(join(fresh, file), "utf8");
      assert.equal(
        await readFile(join(committed, file), "utf8"),
        made,
        `${where}/${file} is stale (${advice})`,
      );
    }
  } finally {
    await out.remove();
  }
}

describe("generated code", () => {
  it("packages/core/src/gen matches what ts-proto makes from proto/", async () => {
    await assertFresh(
      "scripts/generate.sh",
      ".",
      join(ROOT, "packages/core/src/gen"),
      "run `npm run generate`",
    );
  });

  it("the Go client package's clients (runtime and admin API) match what protoc-gen-go makes from proto/", async () => {
    await assertFresh(
      "clients/go/generate.sh",
      "internal",
      join(ROOT, "clients/go/internal"),
      "run clients/go/generate.sh",
    );
  });
});
