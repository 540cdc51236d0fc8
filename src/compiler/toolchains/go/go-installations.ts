import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { runProcess } from "../../run-process.js";

/** One Go toolchain on this machine. */
export interface GoInstallation {
  /** What `go version` reports: `go1.19.8`. */
  readonly release: string;
  readonly goroot: string;
  /** Absolute path of its `go` command. */
  readonly go: string;
}

export interface GoInstallations {
  readonly found: readonly GoInstallation[];
  /** Configured entries that are not usable Go installations, with the reason. */
  readonly problems: readonly string[];
}

/**
 * Asks each configured entry which Go it is. An entry is a GOROOT directory
 * (its `bin/go` is used) or a `go` command (a path, or a name looked up on
 * PATH). Entries that fail are reported in `problems`, not thrown: one broken
 * installation must not hide the others.
 */
export async function probeGoInstallations(entries: readonly string[]): Promise<GoInstallations> {
  const found: GoInstallation[] = [];
  const problems: string[] = [];
  for (const entry of entries) {
    try {
      const installation = await probe(entry);
      if (!found.some((other) => other.goroot === installation.goroot)) found.push(installation);
    } catch (error) {
      problems.push(`${entry}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return { found, problems };
}

/**
 * The installation whose `go version` is exactly `release`. None:
 * FAILED_PRECONDITION listing what is installed, so that the caller sees which
 * build_versions this server can build for.
 */
export function selectGoInstallation(installations: GoInstallations, release: string): GoInstallation {
  const match = installations.found.find((installation) => installation.release === release);
  if (match) return match;
  const available = installations.found.map((installation) => installation.release);
  const problems = installations.problems.length
    ? `; unusable installations: ${installations.problems.join("; ")}`
    : "";
  throw new PluginError(
    Code.FailedPrecondition,
    `no Go installation for ${release} on this server (installed: ${available.join(", ") || "none"}${problems}); install ${release} and list its GOROOT in the server's Go installations`,
  );
}

async function probe(entry: string): Promise<GoInstallation> {
  const isRoot = await stat(entry).then(
    (info) => info.isDirectory(),
    () => false,
  );
  const command = isRoot ? join(entry, "bin", "go") : entry;
  const env = {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: tmpdir(),
    GOENV: "off",
    GOTOOLCHAIN: "local",
  };
  const version = await runProcess(command, ["version"], { cwd: tmpdir(), env });
  const release = /^go version (\S+) /.exec(version.stdout)?.[1];
  if (version.exitCode !== 0 || !release) {
    throw new Error(`"${command} version" failed: ${(version.stderr || version.stdout).trim()}`);
  }
  const goenv = await runProcess(command, ["env", "GOROOT"], { cwd: tmpdir(), env });
  const goroot = goenv.stdout.trim();
  if (goenv.exitCode !== 0 || !goroot) {
    throw new Error(`"${command} env GOROOT" failed: ${goenv.stderr.trim()}`);
  }
  return { release, goroot, go: join(goroot, "bin", "go") };
}
