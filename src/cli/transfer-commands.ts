import { stat } from "node:fs/promises";
import type { PluginManifest } from "atomix-plugins-client/plugin-client";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import { formatBuildKey } from "atomix-plugins-core/model/build-key";
import { Command } from "commander";
import {
  action,
  CACHE_ENV,
  CACHE_MAX_ENV,
  type ClientFlags,
  checkFolder,
  checkLocalFile,
  checkOutputFile,
  formatBytes,
  keyFromArgs,
  numberFlag,
  PLUGIN_ARGUMENT_HELP,
  printJson,
  printText,
  withClient,
  withClientOptions,
  withRuntimeOptions,
  withTrustOptions,
} from "./cli-common.js";
import { transferProgress } from "./progress.js";

interface KeyFlags extends ClientFlags {
  runtime?: string;
  build?: string;
}

export function pushCommand(): Command {
  return withClientOptions(
    withRuntimeOptions(
      new Command("push")
        .description("publish a prebuilt artifact for a runtime build")
        .argument("<plugin>", "name@version, e.g. counter@1.0.0 or @acme/driver@1.2.0")
        .argument("<file>", "the artifact file"),
    )
      .option("--media-type <type>", "media type recorded in the manifest (default application/octet-stream)")
      .option("--annotation <key=value>", "annotation recorded in the manifest (repeatable)", collect, []),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins push counter@1.0.0 dist/counter.mjs --runtime 1.0.0 --build node20
  atomix-plugins push example.com/drivers/kv@v1.2.0 kv.so -r 1.0.0 -b go1.19.8 \\
      --media-type application/x-sharedlib --annotation dev.atomix.source=ci`,
    )
    .action(
      action(
        async (
          spec: string,
          file: string,
          flags: KeyFlags & { mediaType?: string; annotation: string[] },
        ) => {
          const { key } = keyFromArgs(spec, flags);
          const annotations = parseAnnotations(flags.annotation);
          checkLocalFile("the artifact file", file);
          const manifest = await withClient(flags, async (client, control) => {
            const progress = transferProgress(`push ${key.plugin.name}@${key.plugin.version}`);
            const total = await stat(file).then(
              (s) => s.size,
              (error: unknown) => {
                throw PluginError.from(error, `reading ${file}`);
              },
            );
            try {
              return await client.pushFile(key, file, {
                ...control,
                annotations,
                ...(flags.mediaType ? { mediaType: flags.mediaType } : {}),
                onProgress: (sent) => progress.update(sent, total),
              });
            } finally {
              progress.stop();
            }
          });
          if (flags.json) printJson(manifestJson(manifest));
          else printText(`pushed ${formatBuildKey(key)}: ${manifest.digest} ${formatBytes(manifest.size)}\n`);
        },
      ),
    );
}

export function pullCommand(): Command {
  return withTrustOptions(
    withClientOptions(
      withRuntimeOptions(
        new Command("pull")
          .description(
            "download a plugin artifact, verified against its digest (resumes after network failures)",
          )
          .argument("<plugin>", PLUGIN_ARGUMENT_HELP),
      )
        .requiredOption("-o, --output <file>", "where to write the artifact (replaced only once verified)")
        .option("--digest <sha256:hex>", "refuse any other artifact (implied by a reference)")
        .option(
          "--cache <dir>",
          `local cache: a current cached copy is not transferred again [env ${CACHE_ENV}]`,
        )
        .option(
          "--cache-max-bytes <bytes>",
          `evict the least recently used cached artifacts beyond this size [env ${CACHE_MAX_ENV}]`,
        )
        .option(
          "--max-bytes <bytes>",
          "refuse an artifact larger than this, whatever the server announces (default 1 GiB)",
        )
        .option(
          "--retries <n>",
          "retries after UNAVAILABLE or a broken stream, each resuming where it broke",
          "5",
        ),
    ),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins pull counter@1.0.0 --runtime 1.0.0 --build node20 -o counter.mjs
  atomix-plugins pull atomix-plugin://1.0.0/node20/counter@1.0.0@sha256:9f86d0... -o counter.mjs
  atomix-plugins pull counter@1.0.0 -r 1.0.0 -b node20 -o counter.mjs --trust-key signing.pub
  ATOMIX_PLUGINS_SERVER=registry:5679 atomix-plugins pull counter@1.0.0 -r 1.0.0 -b node20 \\
      -o counter.mjs --cache ~/.cache/atomix-plugins --json`,
    )
    .action(
      action(
        async (
          spec: string,
          flags: KeyFlags & {
            output: string;
            digest?: string;
            cache?: string;
            cacheMaxBytes?: string;
            maxBytes?: string;
            retries: string;
          },
        ) => {
          const { key, digest: pinned } = keyFromArgs(spec, flags);
          const expectedDigest = expectedDigestFrom(flags.digest, pinned);
          checkOutputFile("-o", flags.output);
          const maxAttempts = numberFlag("--retries", flags.retries, "count", 0, 9999) + 1;
          const cacheDir = flags.cache ?? process.env[CACHE_ENV];
          if (cacheDir !== undefined)
            checkFolder(flags.cache === undefined ? CACHE_ENV : "--cache", cacheDir);
          const cacheMaxText = flags.cacheMaxBytes ?? process.env[CACHE_MAX_ENV];
          const cacheMax =
            cacheMaxText === undefined
              ? undefined
              : numberFlag(
                  flags.cacheMaxBytes === undefined ? CACHE_MAX_ENV : "--cache-max-bytes",
                  cacheMaxText,
                  "bytes",
                  0,
                );
          const maxBytes =
            flags.maxBytes === undefined ? undefined : numberFlag("--max-bytes", flags.maxBytes, "bytes", 0);
          const result = await withClient(flags, async (client, control) => {
            const progress = transferProgress(`pull ${key.plugin.name}@${key.plugin.version}`);
            try {
              return await client.pull(key, {
                ...control,
                to: flags.output,
                retry: { maxAttempts },
                ...(expectedDigest ? { expectedDigest } : {}),
                ...(cacheDir ? { cacheDir } : {}),
                ...(cacheMax !== undefined ? { cacheMaxBytes: cacheMax } : {}),
                ...(maxBytes !== undefined ? { maxBytes } : {}),
                onProgress: ({ received, total }) => progress.update(received, total ?? received),
              });
            } finally {
              progress.stop();
            }
          });
          if (result.verifiedBy === "none") {
            process.stderr.write(
              `atomix-plugins: warning: ${formatBuildKey(key)} is unverified: the server announced no digest, and none was pinned (--digest, a reference) nor trusted keys given (--trust-key)\n`,
            );
          }
          if (flags.json) {
            printJson({ key, ...result });
          } else {
            const source = result.fromCache ? " (from cache)" : "";
            printText(
              `pulled ${formatBuildKey(key)} to ${result.path}: ${result.digest} ${formatBytes(result.size)}${source}\n`,
            );
          }
        },
      ),
    );
}

function expectedDigestFrom(flag: string | undefined, pinned: Digest | undefined): Digest | undefined {
  if (flag === undefined) return pinned;
  if (!DIGEST_PATTERN.test(flag)) {
    throw new PluginError(Code.InvalidArgument, `--digest "${flag}" must be sha256:<64 lowercase hex>`);
  }
  if (pinned && pinned !== flag) {
    throw new PluginError(Code.InvalidArgument, `--digest ${flag} contradicts the reference's ${pinned}`);
  }
  return flag as Digest;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function parseAnnotations(pairs: string[]): Record<string, string> {
  const annotations: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new PluginError(Code.InvalidArgument, `--annotation "${pair}" must be key=value`);
    annotations[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return annotations;
}

/** A manifest as the CLI prints it under --json: the admin API's message, plain. */
export function manifestJson(manifest: PluginManifest) {
  return {
    plugin: { name: manifest.plugin?.name ?? "", version: manifest.plugin?.version ?? "" },
    runtime: { version: manifest.runtime?.version ?? "", buildVersion: manifest.runtime?.buildVersion ?? "" },
    digest: manifest.digest,
    size: manifest.size,
    mediaType: manifest.mediaType,
    createdAt: manifest.createdAt,
    annotations: manifest.annotations,
    heldHere: manifest.heldHere,
  };
}
