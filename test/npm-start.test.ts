import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { generateSigningKey } from "../src/provenance/signing-key.js";
import { REPO_ROOT } from "./helpers/go-fixtures.js";

/**
 * `npm start` (scripts/start.sh) with a data folder whose signing key it
 * must not use: each is refused before anything is built or served. A run
 * that is not refused would start a server, so it is stopped after a while
 * and reported as accepted.
 */
function npmStart(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(
      "bash",
      // Should one be accepted, its server takes no port another needs.
      [join(REPO_ROOT, "scripts", "start.sh"), ...args, "--listen", "127.0.0.1:0", "--http", "off"],
      {
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: tmpdir(),
          ATOMIX_PLUGINS_NO_INSTALL: "1",
          ...env,
        },
        timeout: 120_000,
      },
      (error, _stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : null) : 0, stderr }),
    );
  });
}

describe("npm start's signing key", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "atomix-npm-start-"));
  });
  after(() => rm(work, { recursive: true, force: true }));

  /** A data folder of this user's holding signing.key with `mode`. */
  async function dataWithKey(name: string, mode: number): Promise<string> {
    const data = join(work, name);
    await mkdir(data, { mode: 0o700 });
    await writeFile(join(data, "signing.key"), generateSigningKey("ecdsa-p256").privateKeyPem, { mode });
    await chmod(join(data, "signing.key"), mode);
    return data;
  }

  const refused = (run: { code: number | null; stderr: string }, pattern: RegExp) => {
    assert.equal(run.code, 2, `npm start was not refused: ${run.stderr}`);
    assert.match(run.stderr, pattern);
  };

  it("refuses a signing.key in the data folder that other users can read", async () => {
    const data = await dataWithKey("readable", 0o644);
    refused(
      await npmStart(["--data", data]),
      new RegExp(`${join(data, "signing.key")} is not a private key`),
    );
  });

  it("refuses a signing.key that is a symbolic link, wherever it points", async () => {
    const elsewhere = await dataWithKey("elsewhere", 0o600);
    const data = join(work, "linked");
    await mkdir(data, { mode: 0o700 });
    await symlink(join(elsewhere, "signing.key"), join(data, "signing.key"));
    refused(await npmStart([`--data=${data}`]), /signing\.key is not a private key/);
  });

  it("reads the data folder from -d and ATOMIX_PLUGINS_DATA as serve does", async () => {
    const data = await dataWithKey("short-flag", 0o640);
    const pattern = new RegExp(`${join(data, "signing.key")} is not a private key`);
    refused(await npmStart(["-d", data]), pattern);
    refused(await npmStart([`-d${data}`]), pattern);
    refused(await npmStart([], { ATOMIX_PLUGINS_DATA: data }), pattern);
  });

  it("refuses a data folder other users can write, where the key could be swapped", async () => {
    const data = join(work, "shared");
    await mkdir(data);
    await chmod(data, 0o777);
    refused(await npmStart(["--data", data]), /other users can write to .*shared/);
  });
});
