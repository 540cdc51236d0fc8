import { existsSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import { visibleText } from "atomix-plugins-core/errors/visible-text";
import type { PrewarmProgress, RuntimeRelease } from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { plural } from "atomix-plugins-core/model/plural";
import { checkRuntimeVersion, RUNTIME_DESCRIPTOR_FILE } from "atomix-plugins-core/model/runtime-release";
import { Command } from "commander";
import { gatherRuntimeRelease } from "../runtime-releases/runtime-release-layout.js";
import {
  action,
  type ClientFlags,
  fieldLines,
  formatBytes,
  keyFromArgs,
  PLUGIN_ARGUMENT_HELP,
  printJson,
  printText,
  table,
  withClientOf,
  withClientOptions,
  withRuntimeOptions,
} from "./cli-common.js";
import type { RuntimeAdminClient } from "./runtime-admin-client.js";

/** Like withClient, with the admin API's runtime client; Ctrl-C cancels. */
export function withRuntimeClient<T>(
  flags: ClientFlags,
  use: (client: RuntimeAdminClient, control: { signal: AbortSignal; timeoutMs?: number }) => Promise<T>,
): Promise<T> {
  return withClientOf(
    async (connection) => (await import("./runtime-admin-client.js")).createRuntimeAdminClient(connection),
    flags,
    use,
  );
}

/** A release as `--json` prints it. */
export function releaseJson(release: RuntimeRelease) {
  return {
    version: release.version,
    toolchain: release.toolchain,
    digest: release.digest,
    registeredAt: release.registeredAt,
    fileCount: release.fileCount,
    size: release.size,
    description: release.description,
    buildVersions: release.buildVersions,
    prewarm: release.prewarm ? prewarmJson(release.prewarm) : null,
  };
}

function prewarmJson(prewarm: PrewarmProgress) {
  return {
    state: prewarm.state,
    previousVersion: prewarm.previousVersion,
    planned: prewarm.planned,
    built: prewarm.built,
    skipped: prewarm.skipped,
    failed: prewarm.failed,
    failures: prewarm.failures.map((failure) => ({
      plugin: `${failure.plugin?.name}@${failure.plugin?.version}`,
      buildVersion: failure.buildVersion,
      code: failure.code,
      message: failure.message,
    })),
  };
}

function prewarmLine(prewarm: PrewarmProgress | undefined): string {
  if (!prewarm || prewarm.state === "none") return "none";
  if (prewarm.state === "off") return "off";
  const from = prewarm.previousVersion ? ` (plugins of ${prewarm.previousVersion})` : "";
  return `${prewarm.state}${from}: ${prewarm.built + prewarm.skipped + prewarm.failed}/${prewarm.planned} done, ${prewarm.built} built, ${prewarm.skipped} already stored, ${prewarm.failed} failed`;
}

function addCommand(): Command {
  return withClientOptions(
    new Command("add")
      .description("register a runtime release: its runtime.json and the files it refers to")
      .argument(
        "<dir>",
        "the release's directory, holding runtime.json; named by its version unless --version",
      )
      .option("-r, --runtime <version>", "the release's version (default: the directory's name)"),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins runtime add ./runtimes/2.1.0
  atomix-plugins runtime add ./build/runtime --runtime 2.1.0 --json`,
    )
    .action(
      action(async (dir: string, flags: ClientFlags & { runtime?: string }) => {
        checkReleaseDirectory(dir, flags.runtime);
        const release = await gatherRuntimeRelease(dir, flags.runtime);
        const outcome = await withRuntimeClient(flags, (client, control) =>
          client.register(release, control),
        );
        const registered = outcome.release as RuntimeRelease;
        if (flags.json) {
          printJson({ ...releaseJson(registered), created: outcome.created });
          return;
        }
        printText(
          `${outcome.created ? "registered" : "already registered:"} runtime ${registered.version} (${registered.toolchain}) ${registered.digest}, ${plural(registered.fileCount, "file")}, ${formatBytes(registered.size)}\n`,
        );
      }),
    );
}

/**
 * What `runtime add` needs of DIR, checked before anything is read or sent,
 * each failure one line naming DIR: it exists, is a directory, holds a
 * runtime.json, and is named by a version unless --runtime gives one.
 */
function checkReleaseDirectory(dir: string, version: string | undefined): void {
  const shown = quoted(dir, 200);
  let isDirectory: boolean;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch {
    throw new PluginError(Code.InvalidArgument, `the directory ${shown} does not exist`);
  }
  if (!isDirectory) {
    throw new PluginError(
      Code.InvalidArgument,
      `${shown} is a file; give the release's directory, the one holding its ${RUNTIME_DESCRIPTOR_FILE}`,
    );
  }
  if (!existsSync(join(dir, RUNTIME_DESCRIPTOR_FILE))) {
    throw new PluginError(
      Code.InvalidArgument,
      `${shown} holds no ${RUNTIME_DESCRIPTOR_FILE}: a runtime release's directory holds its ${RUNTIME_DESCRIPTOR_FILE} and the files it names (README, The runtime lifecycle)`,
    );
  }
  if (version !== undefined) return;
  const name = basename(resolve(dir));
  try {
    checkRuntimeVersion(name);
  } catch {
    throw new PluginError(
      Code.InvalidArgument,
      `the directory's name ${quoted(name)} is not a version: give the release's version with --runtime (such as --runtime 2.1.0), or name the directory after it`,
    );
  }
}

function lsCommand(): Command {
  return withClientOptions(new Command("ls").description("list the registered runtime releases"))
    .addHelpText("after", "\nExamples:\n  atomix-plugins runtime ls\n  atomix-plugins runtime ls --json")
    .action(
      action(async (flags: ClientFlags) => {
        const releases = await withRuntimeClient(flags, (client, control) => client.list(control));
        if (flags.json) {
          printJson(releases.map(releaseJson));
          return;
        }
        const rows = releases.map((release) => [
          release.version,
          release.toolchain,
          release.buildVersions.join(","),
          `${release.digest.slice(0, 19)}…`,
          release.registeredAt,
          prewarmLine(release.prewarm).split(":")[0] ?? "",
        ]);
        printText(table(["VERSION", "TOOLCHAIN", "BUILDS", "DIGEST", "REGISTERED", "PREWARM"], rows));
      }),
    );
}

function inspectCommand(): Command {
  return withClientOptions(
    new Command("inspect").description("show one registered runtime release").argument("<version>"),
  )
    .addHelpText(
      "after",
      "\nExamples:\n  atomix-plugins runtime inspect 2.1.0\n  atomix-plugins runtime inspect 2.1.0 --json",
    )
    .action(
      action(async (version: string, flags: ClientFlags) => {
        const release = await withRuntimeClient(flags, (client, control) => client.inspect(version, control));
        if (flags.json) {
          printJson(releaseJson(release));
          return;
        }
        const fields: [string, string][] = [
          ["version", release.version],
          ["toolchain", release.toolchain],
          ["builds", release.buildVersions.join(", ")],
          ["digest", release.digest],
          ["registered", release.registeredAt],
          ["files", `${release.fileCount} (${formatBytes(release.size)})`],
          ["description", release.description],
          ["prewarm", prewarmLine(release.prewarm)],
        ];
        let out = fieldLines(fields, 13);
        for (const failure of release.prewarm?.failures ?? []) {
          // A failure's message quotes what the plugin's build printed.
          out += `  failed ${visibleText(`${failure.plugin?.name}@${failure.plugin?.version} for ${failure.buildVersion}: ${failure.code}: ${failure.message.split("\n")[0]}`)}\n`;
        }
        printText(out);
      }),
    );
}

function rmCommand(): Command {
  return withClientOptions(
    new Command("rm")
      .description(
        "remove a registered runtime release that no stored artifact records (remove those first with rm)",
      )
      .argument("<version>"),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins runtime rm 2.1.0
  atomix-plugins ls --runtime 2.1.0 --all   # the artifacts that keep it`,
    )
    .action(
      action(async (version: string, flags: ClientFlags) => {
        const removed = await withRuntimeClient(flags, (client, control) => client.remove(version, control));
        if (flags.json) {
          printJson(releaseJson(removed));
          return;
        }
        printText(`removed runtime ${removed.version} (${removed.toolchain}) ${removed.digest}\n`);
      }),
    );
}

export function runtimeCommand(): Command {
  return new Command("runtime")
    .description("register, list, inspect and remove runtime releases")
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins runtime add ./runtimes/2.1.0 --token-file admin.token
  atomix-plugins runtime ls
  atomix-plugins runtime inspect 2.1.0
  atomix-plugins runtime rm 2.1.0 --token-file admin.token

A release's directory holds its runtime.json and the files it names; see
"The runtime lifecycle" in the README.`,
    )
    .addCommand(addCommand())
    .addCommand(lsCommand())
    .addCommand(inspectCommand())
    .addCommand(rmCommand());
}

/** `logs <plugin> -r V -b B`: the last build's record and output. */
export function logsCommand(): Command {
  return withClientOptions(
    withRuntimeOptions(
      new Command("logs")
        .description("show the record and output of the last build of a plugin for a runtime")
        .argument("<plugin>", PLUGIN_ARGUMENT_HELP),
    ),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins logs counter@1.0.0 --runtime 2.0.0 --build node20
  atomix-plugins logs counter@1.0.0 -r 2.0.0 -b node20 --json | jq -r .output`,
    )
    .action(
      action(async (spec: string, flags: ClientFlags & { runtime?: string; build?: string }) => {
        const { key } = keyFromArgs(spec, flags);
        const record = await withRuntimeClient(flags, (client, control) => client.buildLog(key, control));
        if (flags.json) {
          printJson(record);
          return;
        }
        const fields: [string, string][] = [
          ["plugin", `${record.plugin?.name}@${record.plugin?.version}`],
          ["runtime", `${record.runtime?.version} (${record.runtime?.buildVersion})`],
          ["outcome", `${record.outcome} (${record.code})`],
          ["finished", record.finishedAt],
          ["duration", `${record.durationMs} ms`],
          ["runtime digest", record.runtimeDigest || "none"],
          ...(record.artifactDigest ? [["artifact", record.artifactDigest] as [string, string]] : []),
          ...Object.entries(record.toolchain).sort(([a], [b]) => a.localeCompare(b)),
        ];
        let out = fieldLines(fields, 30);
        // The message and output are the build's: their lines stay lines, their escape sequences text (printText).
        if (record.message) out += `message:\n${record.message}\n`;
        out += `output${record.outputTruncated ? " (its last 64 KiB)" : ""}:\n${record.output}`;
        printText(out.endsWith("\n") ? out : `${out}\n`);
      }),
    );
}
