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

describe("generated code", () => {
  it("matches what the code generator makes from proto/ (run `npm run generate` if this fails)", async () => {
    const out = await tempDir("atomix-gen-");
    try {
      execFileSync("bash", [join(ROOT, "scripts/generate.sh"), out.path], { stdio: "pipe" });
      const committed = join(ROOT, "src/gen");
      assert.deepEqual(await files(out.path), await files(committed));
      for (const file of await files(committed)) {
        const fresh = await readFile(join(out.path, file), "utf8");
        assert.equal(await readFile(join(committed, file), "utf8"), fresh, `src/gen/${file} is stale`);
      }
    } finally {
      await out.remove();
    }
  });
});
