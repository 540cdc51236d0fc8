import { randomUUID } from "node:crypto";
import { link, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  checkRuntimeVersion,
  type RuntimeReleaseSummary,
  releaseIndexBytes,
} from "atomix-plugins-core/model/runtime-release";
import { syncDirectory, writeFileAtomic } from "./atomic-file.js";
import type { RuntimeReleaseStore, StagedRuntimeRelease } from "./runtime-release-store.js";

/**
 * Runtime releases in the embedded store's data directory:
 *
 *   <dir>/runtimes/releases/<64 hex>/        the release's files, immutable
 *   <dir>/runtimes/releases/<64 hex>.index.json  its index (what the digest hashes)
 *   <dir>/runtimes/versions/<version>.json   which release a version names
 *   <dir>/runtimes/staging/                  uploads being checked; emptied at start
 *
 * A version file is created with link(2), which fails when it exists: two
 * registrations of one version at once cannot both win.
 */
export async function createFsRuntimeReleaseStore(options: { dir: string }): Promise<RuntimeReleaseStore> {
  const root = join(options.dir, "runtimes");
  const releasesDir = join(root, "releases");
  const versionsDir = join(root, "versions");
  const stagingDir = join(root, "staging");
  await Promise.all([releasesDir, versionsDir, stagingDir].map((d) => mkdir(d, { recursive: true })));
  for (const leftover of await readdir(stagingDir))
    await rm(join(stagingDir, leftover), { recursive: true, force: true });

  const hexOf = (release: { digest: string }) => release.digest.slice("sha256:".length);
  const versionPath = (version: string) => join(versionsDir, `${checkRuntimeVersion(version)}.json`);

  async function readVersion(version: string): Promise<RuntimeReleaseSummary | undefined> {
    try {
      return JSON.parse(await readFile(versionPath(version), "utf8")) as RuntimeReleaseSummary;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw PluginError.from(error, `reading runtime ${version} from the store`);
    }
  }

  return {
    stagingDir,

    async putRuntimeRelease(staged: StagedRuntimeRelease) {
      const { version } = staged.index;
      const existing = await readVersion(version);
      if (existing) return settle(existing, staged);
      const hex = hexOf(staged);
      const target = join(releasesDir, hex);
      try {
        await rename(staged.dir, target);
      } catch (error) {
        // The same release stored before (or by a registration racing this one): its files are there.
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST")
          throw PluginError.from(error, `storing runtime ${version}`);
      }
      await writeFileAtomic(
        join(releasesDir, `${hex}.index.json`),
        releaseIndexBytes(staged.index),
        stagingDir,
      );
      await syncDirectory(releasesDir);
      const release: RuntimeReleaseSummary = {
        version,
        toolchain: staged.index.toolchain,
        digest: staged.digest,
        registeredAt: new Date().toISOString(),
        fileCount: staged.index.files.length,
        size: staged.index.files.reduce((sum, file) => sum + file.size, 0),
        description: staged.description,
        buildVersions: staged.buildVersions,
      };
      const tmp = join(stagingDir, `${randomUUID()}.json`);
      await writeFile(tmp, `${JSON.stringify(release, null, 2)}\n`);
      try {
        await link(tmp, versionPath(version));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST")
          throw PluginError.from(error, `storing runtime ${version}`);
        const winner = await readVersion(version);
        if (winner) return settle(winner, staged);
      } finally {
        await rm(tmp, { force: true });
      }
      await syncDirectory(versionsDir);
      return { release, created: true };
    },

    getRuntimeRelease: readVersion,

    async listRuntimeReleases() {
      const names = (await readdir(versionsDir)).filter((name) => name.endsWith(".json"));
      const found = await Promise.all(names.map((name) => readVersion(name.slice(0, -".json".length))));
      return found.filter((release): release is RuntimeReleaseSummary => release !== undefined);
    },

    async removeRuntimeRelease(version) {
      const release = await readVersion(version);
      if (!release) return undefined;
      // The version file first: once it is gone nothing names the release's
      // files (its digest hashes its version, so no other version shares them).
      await rm(versionPath(version), { force: true });
      await syncDirectory(versionsDir);
      const hex = hexOf(release);
      await rm(join(releasesDir, `${hex}.index.json`), { force: true });
      await rm(join(releasesDir, hex), { recursive: true, force: true });
      return release;
    },

    async openRuntimeRelease(release) {
      return join(releasesDir, hexOf(release));
    },
  };
}

/** The answer for a version already stored: the same release, or ALREADY_EXISTS naming both. */
export function settle(
  existing: RuntimeReleaseSummary,
  staged: Pick<StagedRuntimeRelease, "digest">,
): { release: RuntimeReleaseSummary; created: boolean } {
  if (existing.digest === staged.digest) return { release: existing, created: false };
  throw new PluginError(
    Code.AlreadyExists,
    `runtime ${existing.version} is registered as ${existing.digest} (since ${existing.registeredAt}); this release is ${staged.digest}. A release never changes: register the new one under a new version`,
  );
}
