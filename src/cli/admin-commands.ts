import { Command } from "commander";
import { Code, PluginError } from "../errors/plugin-error.js";
import { visibleText } from "../errors/visible-text.js";
import { formatBuildKey } from "../model/build-key.js";
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
  withClient,
  withClientOptions,
  withRuntimeOptions,
} from "./cli-common.js";
import { manifestJson } from "./transfer-commands.js";

type KeyFlags = ClientFlags & { runtime?: string; build?: string };

export function lsCommand(): Command {
  return withClientOptions(
    new Command("ls")
      .description("list the artifacts the server stores")
      .option("--plugin <name>", "only this plugin")
      .option("--runtime <version>", "only this runtime release"),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins ls
  atomix-plugins ls --plugin counter --runtime 1.0.0
  atomix-plugins ls --json | jq -r '.[].digest'`,
    )
    .action(
      action(async (flags: ClientFlags & { plugin?: string; runtime?: string }) => {
        const manifests = await withClient(flags, (client, control) =>
          client.list(
            {
              ...(flags.plugin ? { pluginName: flags.plugin } : {}),
              ...(flags.runtime ? { runtimeVersion: flags.runtime } : {}),
            },
            control,
          ),
        );
        if (flags.json) {
          printJson(manifests.map(manifestJson));
          return;
        }
        const rows = manifests.map((m) => [
          `${m.plugin?.name}@${m.plugin?.version}`,
          m.runtime?.version ?? "",
          m.runtime?.buildVersion ?? "",
          formatBytes(m.size),
          `${m.digest.slice(0, 19)}…`,
          m.createdAt,
        ]);
        printText(table(["PLUGIN", "RUNTIME", "BUILD", "SIZE", "DIGEST", "CREATED"], rows));
      }),
    );
}

export function inspectCommand(): Command {
  return withClientOptions(
    withRuntimeOptions(
      new Command("inspect")
        .description("show the manifest of one stored artifact")
        .argument("<plugin>", PLUGIN_ARGUMENT_HELP),
    ),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins inspect counter@1.0.0 --runtime 1.0.0 --build node20
  atomix-plugins inspect counter@1.0.0 -r 1.0.0 -b node20 --json | jq .annotations`,
    )
    .action(
      action(async (spec: string, flags: KeyFlags) => {
        const { key } = keyFromArgs(spec, flags);
        const manifest = manifestJson(
          await withClient(flags, (client, control) => client.inspect(key, control)),
        );
        if (flags.json) {
          printJson(manifest);
          return;
        }
        const fields: [string, string][] = [
          ["plugin", `${manifest.plugin.name}@${manifest.plugin.version}`],
          ["runtime", `${manifest.runtime.version} (${manifest.runtime.buildVersion})`],
          ["digest", manifest.digest],
          ["size", `${formatBytes(manifest.size)} (${manifest.size} bytes)`],
          ["media type", manifest.mediaType],
          ["created", manifest.createdAt],
        ];
        let out = fieldLines(fields, 12);
        // Anyone who can push sets annotations: each name and value stays one line of text.
        const annotations = Object.entries(manifest.annotations)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([name, value]) => [visibleText(name), visibleText(value)] as const);
        if (annotations.length > 0) {
          out += "annotations:\n";
          const width = Math.max(...annotations.map(([name]) => name.length));
          out += annotations.map(([name, value]) => `  ${name.padEnd(width)}  ${value}\n`).join("");
        }
        printText(out);
      }),
    );
}

export function rmCommand(): Command {
  return withClientOptions(
    withRuntimeOptions(
      new Command("rm")
        .description("remove a build key from the store (its bytes stay until gc)")
        .argument("<plugin>", PLUGIN_ARGUMENT_HELP)
        .option("-f, --force", "succeed even if nothing is stored for the key"),
    ),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins rm counter@1.0.0 --runtime 1.0.0 --build node20
  atomix-plugins rm counter@1.0.0 -r 1.0.0 -b node20 --force && atomix-plugins gc`,
    )
    .action(
      action(async (spec: string, flags: KeyFlags & { force?: boolean }) => {
        const { key } = keyFromArgs(spec, flags);
        const removed = await withClient(flags, (client, control) => client.remove(key, control));
        if (!removed && !flags.force) {
          throw new PluginError(Code.NotFound, `no artifact stored for ${formatBuildKey(key)}`);
        }
        if (flags.json) printJson({ key, removed });
        else printText(`${removed ? "removed" : "not stored:"} ${formatBuildKey(key)}\n`);
      }),
    );
}

export function gcCommand(): Command {
  return withClientOptions(
    new Command("gc").description(
      "remove stored blobs that no build key refers to, and report what was freed",
    ),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins gc
  atomix-plugins gc --json`,
    )
    .action(
      action(async (flags: ClientFlags) => {
        const report = await withClient(flags, (client, control) => client.collectGarbage(control));
        if (flags.json) printJson(report);
        else
          printText(
            `removed ${report.removedBlobs} blob${report.removedBlobs === 1 ? "" : "s"}, freed ${formatBytes(report.freedBytes)}\n`,
          );
      }),
    );
}
