import type { CacheReport, PluginManifest } from "atomix-plugins-client/plugin-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { visibleText } from "atomix-plugins-core/errors/visible-text";
import { formatBuildKey } from "atomix-plugins-core/model/build-key";
import { plural } from "atomix-plugins-core/model/plural";
import { Command } from "commander";
import {
  action,
  type ClientFlags,
  fieldLines,
  formatBytes,
  jsonArrayWriter,
  keyFromArgs,
  numberFlag,
  PLUGIN_ARGUMENT_HELP,
  printJson,
  printText,
  tableWriter,
  withClient,
  withClientOptions,
  withRuntimeOptions,
} from "./cli-common.js";
import { manifestJson } from "./transfer-commands.js";

type KeyFlags = ClientFlags & { runtime?: string; build?: string };

type LsFlags = ClientFlags & {
  plugin?: string;
  runtime?: string;
  limit?: string;
  pageToken?: string;
  all?: boolean;
};

/** HERE: whether the server that answered holds the bytes on its own disk (a replica's content cache). */
const LS_HEADER = ["PLUGIN", "RUNTIME", "BUILD", "SIZE", "DIGEST", "CREATED", "HERE"];

export function lsCommand(): Command {
  return withClientOptions(
    new Command("ls")
      .description("list the artifacts the server stores, a page at a time")
      .option("--plugin <name>", "only this plugin")
      .option("--runtime <version>", "only this runtime release")
      .option("--limit <n>", "at most this many artifacts per page (the server sends at most 1000)")
      .option("--page-token <token>", "start where a previous page ended (the token it printed)")
      .option("--all", "every page, printed as it arrives"),
  )
    .addHelpText(
      "after",
      `
Without --all, ls prints one page and, when more follow, the command for the
next one on stderr. Artifacts come in the store's stable order (an OCI store:
by plugin name; the filesystem store: by a hash of the key).

Examples:
  atomix-plugins ls
  atomix-plugins ls --plugin counter --runtime 1.0.0
  atomix-plugins ls --limit 50 --page-token <token from the previous page>
  atomix-plugins ls --all --json | jq -r '.[].digest'`,
    )
    .action(
      action(async (flags: LsFlags) => {
        const pageSize = pageSizeFlag(flags.limit);
        const filter = {
          ...(flags.plugin ? { pluginName: flags.plugin } : {}),
          ...(flags.runtime ? { runtimeVersion: flags.runtime } : {}),
        };
        const next = await withClient(flags, async (client, control) => {
          const out = flags.json ? jsonArrayWriter() : tableWriter(LS_HEADER);
          let pageToken = flags.pageToken;
          do {
            const page = await client.listPage({ ...filter, pageSize, pageToken }, control);
            // Each page is written before the next is asked for: memory holds one page.
            await out.write(page.manifests.map((m) => (flags.json ? manifestJson(m) : lsRow(m))));
            pageToken = page.nextPageToken;
          } while (flags.all && pageToken);
          await out.end();
          return pageToken;
        });
        if (next) {
          const more = [
            "atomix-plugins ls",
            ...(flags.plugin ? ["--plugin", shellWord(flags.plugin)] : []),
            ...(flags.runtime ? ["--runtime", shellWord(flags.runtime)] : []),
            ...(flags.limit ? ["--limit", flags.limit] : []),
            "--page-token",
            next,
          ].join(" ");
          process.stderr.write(`more artifacts follow: ${visibleText(more)} (or --all)\n`);
        }
      }),
    );
}

function lsRow(m: PluginManifest): string[] {
  return [
    `${m.plugin?.name}@${m.plugin?.version}`,
    m.runtime?.version ?? "",
    m.runtime?.buildVersion ?? "",
    formatBytes(m.size),
    `${m.digest.slice(0, 19)}…`,
    m.createdAt,
    m.heldHere ? "yes" : "no",
  ];
}

function pageSizeFlag(limit: string | undefined): number | undefined {
  if (limit === undefined) return undefined;
  return numberFlag("--limit", limit, "count");
}

/** `word` quoted for a POSIX shell when it holds anything but safe characters. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9@%+=:,./_-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
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
          ["held here", manifest.heldHere ? "yes" : "no (pulls of it fetch from upstream first)"],
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
      "remove stored blobs that no build key refers to, bring the build caches within their bounds, and report what was freed and what each cache holds",
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
            `removed ${plural(report.removedBlobs, "blob")}, freed ${formatBytes(report.freedBytes)}\n${report.caches.map(cacheLine).join("")}`,
          );
      }),
    );
}

/** `go-build: 120.0 MiB in 9 entries (bound 10.0 GiB), freed 14.0 MiB of 1 entry` */
function cacheLine(cache: CacheReport): string {
  const bound = cache.maxBytes > 0 ? formatBytes(cache.maxBytes) : `${cache.maxEntries} entries`;
  const freed =
    cache.removedEntries > 0
      ? `, freed ${formatBytes(cache.freedBytes)} of ${cache.removedEntries} entr${cache.removedEntries === 1 ? "y" : "ies"}`
      : "";
  return `${cache.name}: ${formatBytes(cache.bytes)} in ${cache.entries} entr${cache.entries === 1 ? "y" : "ies"} (bound ${bound})${freed}\n`;
}
