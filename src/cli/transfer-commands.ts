import { Command } from "commander";
import { createPluginClient } from "../client/plugin-client.js";
import { action, formatBytes, keyFromArgs, serverOption, withRuntimeOptions } from "./cli-common.js";

interface KeyOptions {
  runtime: string;
  build: string;
  server: string;
}

export function pushCommand(): Command {
  return withRuntimeOptions(
    new Command("push")
      .description("publish a prebuilt artifact for a runtime")
      .argument("<name@version>", "plugin, e.g. counter@1.0.0 or @acme/driver@1.2.0")
      .argument("<file>", "the artifact file"),
  )
    .addOption(serverOption())
    .option("--media-type <type>", "media type recorded in the manifest")
    .addHelpText(
      "after",
      "\nExample:\n  atomix-plugins push counter@1.0.0 counter.mjs --runtime 1.0.0 --build node20",
    )
    .action(
      action(async (spec: string, file: string, options: KeyOptions & { mediaType?: string }) => {
        const key = keyFromArgs(spec, options);
        const client = createPluginClient({ address: options.server });
        try {
          const manifest = await client.pushFile(
            key,
            file,
            options.mediaType ? { mediaType: options.mediaType } : {},
          );
          process.stdout.write(`${manifest.digest} ${formatBytes(manifest.size)}\n`);
        } finally {
          client.close();
        }
      }),
    );
}

export function pullCommand(): Command {
  return withRuntimeOptions(
    new Command("pull")
      .description("download a plugin artifact, verified against its digest")
      .argument("<name@version>", "plugin, e.g. counter@1.0.0"),
  )
    .requiredOption("-o, --output <file>", "where to write the artifact")
    .addOption(serverOption())
    .addHelpText(
      "after",
      "\nExample:\n  atomix-plugins pull counter@1.0.0 --runtime 1.0.0 --build node20 -o counter.mjs",
    )
    .action(
      action(async (spec: string, options: KeyOptions & { output: string }) => {
        const key = keyFromArgs(spec, options);
        const client = createPluginClient({ address: options.server });
        try {
          const result = await client.pull(key, { to: options.output });
          process.stdout.write(`${result.digest} ${formatBytes(result.size)} ${result.path}\n`);
        } finally {
          client.close();
        }
      }),
    );
}

export function lsCommand(): Command {
  return new Command("ls")
    .description("list the artifacts the server stores")
    .addOption(serverOption())
    .option("--plugin <name>", "only this plugin")
    .option("--runtime <version>", "only this runtime release")
    .addHelpText("after", "\nExample:\n  atomix-plugins ls --plugin counter")
    .action(
      action(async (options: { server: string; plugin?: string; runtime?: string }) => {
        const client = createPluginClient({ address: options.server });
        try {
          const manifests = await client.list({
            ...(options.plugin ? { pluginName: options.plugin } : {}),
            ...(options.runtime ? { runtimeVersion: options.runtime } : {}),
          });
          const rows = manifests.map((m) => [
            `${m.plugin?.name}@${m.plugin?.version}`,
            m.runtime?.version ?? "",
            m.runtime?.buildVersion ?? "",
            formatBytes(m.size),
            m.digest.slice(0, 19),
            m.createdAt,
          ]);
          process.stdout.write(table(["PLUGIN", "RUNTIME", "BUILD", "SIZE", "DIGEST", "CREATED"], rows));
        } finally {
          client.close();
        }
      }),
    );
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    `${cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd()}\n`;
  return [header, ...rows].map(line).join("");
}
