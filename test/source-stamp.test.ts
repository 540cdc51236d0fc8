import assert from "node:assert/strict";
import * as fsPromises from "node:fs/promises";
import { mkdir, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createSourceStamp, type StampFs } from "../src/compiler/sources/source-stamp.js";
import { tempDir } from "./helpers/server-process.js";

/** The real file system, counting the calls a stamp makes. */
function countingFs(): StampFs & { calls: number } {
  const counting = {
    calls: 0,
    lstat: ((...args: Parameters<typeof fsPromises.lstat>) => {
      counting.calls++;
      return fsPromises.lstat(...args);
    }) as StampFs["lstat"],
    readdir: ((...args: Parameters<typeof fsPromises.readdir>) => {
      counting.calls++;
      return fsPromises.readdir(...args);
    }) as StampFs["readdir"],
  };
  return counting;
}

/** Writes `content` to `file` in place, and moves its time on so that the edit shows whatever the clock's grain. */
async function editInPlace(file: string, content: string): Promise<void> {
  await writeFile(file, content);
  const later = new Date(Date.now() + 60_000);
  await utimes(file, later, later);
}

/**
 * The catalog's change check, on real folders: a remembered build failure is
 * answered again only while the plugin's folder is unchanged, and answering
 * it must not cost a walk of a large folder per call.
 */
describe("the catalog's change check", () => {
  const FILES = 8_000;
  let dir: { path: string; remove: () => Promise<void> };
  const small = { name: "small", version: "1.0.0" };
  const large = { name: "vendored", version: "1.0.0" };

  before(async () => {
    dir = await tempDir("atomix-stamp-");
    const smallDir = join(dir.path, "small", "1.0.0");
    await mkdir(join(smallDir, "src"), { recursive: true });
    await writeFile(join(smallDir, "package.json"), '{"name":"small","version":"1.0.0"}');
    await writeFile(join(smallDir, "src", "index.ts"), "export const a = 1;\n");
    const largeDir = join(dir.path, "vendored", "1.0.0");
    await mkdir(largeDir, { recursive: true });
    await writeFile(join(largeDir, "package.json"), "{}");
    for (let folder = 0; folder < FILES / 100; folder++) {
      const sub = join(largeDir, "vendor", `m${folder}`);
      await mkdir(sub, { recursive: true });
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => writeFile(join(sub, `f${i}.js`), `// ${folder}/${i}\n`)),
      );
    }
  });
  after(() => dir.remove());

  it("sees an in-place edit of a small folder at the very next call", async () => {
    const stamp = createSourceStamp([dir.path]);
    const before = await stamp(small);
    assert.match(before ?? "", /^catalog:[0-9a-f]{64}$/);
    assert.equal(await stamp(small), before, "unchanged, the same stamp");
    await editInPlace(join(dir.path, "small", "1.0.0", "src", "index.ts"), "export const a = 2;\n");
    const after = await stamp(small);
    assert.notEqual(after, before);
    assert.equal(await stamp({ name: "absent", version: "1.0.0" }), "registry");
  });

  it("answers a thousand calls about a folder of thousands of files without a walk per call", async () => {
    const fs = countingFs();
    const stamp = createSourceStamp([dir.path], { fs });
    // The build's own check (fresh) walks it once, as the build then copies it.
    const built = await stamp(large, { fresh: true });
    assert.match(built ?? "", /^catalog:/);
    const oneWalk = fs.calls;
    assert.ok(oneWalk > FILES, `a walk reads every entry: ${oneWalk} calls`);

    fs.calls = 0;
    const concurrent = await Promise.all(Array.from({ length: 500 }, () => stamp(large)));
    for (let i = 0; i < 500; i++) concurrent.push(await stamp(large));
    assert.ok(
      concurrent.every((answer) => answer === built),
      "every answer is the stamp of the folder as it is",
    );
    // One lstat a call to find the folder, and at most the one background check that may be under
    // way; a walk per call would be 1,000 walks.
    assert.ok(fs.calls <= 1_000 + 2 * oneWalk, `${fs.calls} calls for 1,000 answers; one walk is ${oneWalk}`);
  });

  it("shares one walk among concurrent fresh checks, each from a walk that began after it asked", async () => {
    const fs = countingFs();
    const stamp = createSourceStamp([dir.path], { fs });
    await stamp(large, { fresh: true });
    const oneWalk = fs.calls;
    fs.calls = 0;
    await Promise.all(Array.from({ length: 200 }, () => stamp(large, { fresh: true })));
    // Each call finds the folder (one lstat); the first starts a walk, the other 199 arrived while it
    // ran and share the one after it.
    assert.ok(
      fs.calls <= 200 + 2 * oneWalk,
      `${fs.calls} calls for 200 fresh checks; one walk is ${oneWalk}`,
    );
  });

  it("sees an in-place edit of a large folder once the background check after it has finished", async () => {
    const stamp = createSourceStamp([dir.path]);
    const before = await stamp(large, { fresh: true });
    await editInPlace(join(dir.path, "vendored", "1.0.0", "vendor", "m7", "f7.js"), "// edited\n");
    // The check runs in the background, idle between walks ten times as long as one took: ask until it has run.
    let seen = before;
    for (let attempt = 0; attempt < 2_400 && seen === before; attempt++) {
      await sleep(50);
      seen = await stamp(large);
    }
    assert.notEqual(seen, before, "the edit is seen");
    assert.equal(await stamp(large, { fresh: true }), seen, "and a build's own check agrees");
  });
});
