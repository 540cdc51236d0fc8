import { formatBuildKey } from "atomix-plugins-core/model/build-key";
import { Command } from "commander";
import {
  action,
  type ClientFlags,
  keyFromArgs,
  printJson,
  printText,
  withClient,
  withClientOptions,
  withRuntimeOptions,
} from "./cli-common.js";
import { showsProgress, spinner } from "./progress.js";

export function compileCommand(): Command {
  return withClientOptions(
    withRuntimeOptions(
      new Command("compile")
        .description("build a plugin for a runtime build (or find it built) and print its reference")
        .argument("<plugin>", "name@version, e.g. counter@1.0.0 or @acme/driver@1.2.0"),
    ),
  )
    .addHelpText(
      "after",
      `
The reference pins the artifact's bytes; pull or load it to get exactly them:
  atomix-plugin://<runtime>/<build>/<name>@<version>@sha256:<64 hex>
Another server of the API may answer any string: it is printed as it came.

Examples:
  atomix-plugins compile counter@1.0.0 --runtime 1.0.0 --build node20
  REF=$(atomix-plugins compile counter@1.0.0 -r 1.0.0 -b node20) && atomix-plugins pull "$REF" -o counter.mjs
  atomix-plugins compile example.com/drivers/kv@v1.2.0 -r 1.0.0 -b go1.19.8 --json`,
    )
    .action(
      action(async (spec: string, flags: ClientFlags & { runtime?: string; build?: string }) => {
        const { key } = keyFromArgs(spec, flags);
        const started = Date.now();
        const compiled = await withClient(flags, async (client, control) => {
          const stop = spinner(`compiling ${formatBuildKey(key)}`);
          try {
            return await client.compile(key, control);
          } finally {
            stop();
          }
        });
        const elapsedMs = Date.now() - started;
        if (flags.json) {
          // `reference` and `digest` only when the answer is an atomix-plugin:// reference.
          printJson({
            plugin: compiled.plugin,
            ...(compiled.reference ? { reference: compiled.plugin, digest: compiled.reference.digest } : {}),
            key: compiled.key,
            elapsedMs,
          });
          return;
        }
        if (showsProgress()) {
          printText(`compiled ${formatBuildKey(key)} in ${(elapsedMs / 1000).toFixed(1)}s\n`, process.stderr);
        }
        // The server's answer as it came: a reference from atomix-plugins, any string from another server.
        printText(`${compiled.plugin}\n`);
      }),
    );
}
