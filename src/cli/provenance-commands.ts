import { createPublicKey } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { keyId, type ProvenanceStatement } from "atomix-plugins-core/model/provenance";
import { Command, Option } from "commander";
import { generateSigningKey, KEY_ALGORITHMS, type KeyAlgorithm } from "../provenance/signing-key.js";
import {
  action,
  type ClientFlags,
  checkOutputFile,
  fieldLines,
  keyFromArgs,
  PLUGIN_ARGUMENT_HELP,
  printJson,
  printText,
  withClient,
  withClientOptions,
  withRuntimeOptions,
  withTrustOptions,
} from "./cli-common.js";

export function keygenCommand(): Command {
  return new Command("keygen")
    .description("write a new key pair for signing provenance (serve --signing-key, pull --trust-key)")
    .requiredOption("-o, --output <prefix>", "writes <prefix>.key (private, mode 600) and <prefix>.pub")
    .addOption(
      new Option("--algorithm <name>", "key algorithm").choices([...KEY_ALGORITHMS]).default("ecdsa-p256"),
    )
    .option("--json", "print machine-readable JSON on stdout")
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins keygen -o /etc/atomix-plugins/signing
  atomix-plugins serve --signing-key /etc/atomix-plugins/signing.key
  atomix-plugins pull counter@1.0.0 -r 1.0.0 -b node20 -o counter.mjs --trust-key signing.pub`,
    )
    .action(
      action(async (flags: { output: string; algorithm: KeyAlgorithm; json?: boolean }) => {
        checkOutputFile("-o", `${flags.output}.key`);
        const pair = generateSigningKey(flags.algorithm);
        const privatePath = `${flags.output}.key`;
        const publicPath = `${flags.output}.pub`;
        // "wx": an existing key is never overwritten; losing one orphans every signature made with it.
        for (const [path, text, mode] of [
          [privatePath, pair.privateKeyPem, 0o600],
          [publicPath, pair.publicKeyPem, 0o644],
        ] as const) {
          await writeFile(path, text, { flag: "wx", mode }).catch((error: unknown) => {
            if ((error as NodeJS.ErrnoException).code === "EEXIST") {
              throw new PluginError(Code.AlreadyExists, `${path} exists; keygen never overwrites a key`);
            }
            throw PluginError.from(error, `writing ${path}`);
          });
        }
        const id = keyId(createPublicKey(pair.publicKeyPem));
        if (flags.json)
          printJson({
            privateKey: privatePath,
            publicKey: publicPath,
            keyId: id,
            algorithm: flags.algorithm,
          });
        else printText(`wrote ${privatePath} and ${publicPath} (${flags.algorithm}, key id ${id})\n`);
      }),
    );
}

export function provenanceCommand(): Command {
  return withTrustOptions(
    withClientOptions(
      withRuntimeOptions(
        new Command("provenance")
          .description("show (and with --trust-key verify) the signed provenance of one stored artifact")
          .argument("<plugin>", PLUGIN_ARGUMENT_HELP),
      ).option("-o, --output <file>", "also write the Sigstore bundle to this file, for other verifiers"),
    ),
  )
    .addHelpText(
      "after",
      `
Examples:
  atomix-plugins provenance counter@1.0.0 -r 1.0.0 -b node20 --trust-key signing.pub
  atomix-plugins provenance counter@1.0.0 -r 1.0.0 -b node20 -o counter.sigstore.json --json`,
    )
    .action(
      action(
        async (spec: string, flags: ClientFlags & { runtime?: string; build?: string; output?: string }) => {
          const { key, digest: pinned } = keyFromArgs(spec, flags);
          if (flags.output) checkOutputFile("-o", flags.output);
          const answer = await withClient(flags, (client, control) => client.provenance(key, control));
          if (pinned && pinned !== answer.digest) {
            throw new PluginError(
              Code.FailedPrecondition,
              `the server holds ${answer.digest} for this key, not the reference's ${pinned}`,
            );
          }
          if (flags.output) {
            await writeFile(flags.output, answer.bundle).catch((error: unknown) => {
              throw PluginError.from(error, `writing ${flags.output}`);
            });
          }
          const envelope = JSON.parse(answer.bundle.toString("utf8")) as {
            verificationMaterial?: { publicKey?: { hint?: string } };
            dsseEnvelope?: { payload?: string };
          };
          const statement =
            answer.statement ??
            (JSON.parse(
              Buffer.from(envelope.dsseEnvelope?.payload ?? "", "base64").toString("utf8"),
            ) as ProvenanceStatement);
          const signedBy = envelope.verificationMaterial?.publicKey?.hint ?? "";
          const verified = answer.statement !== undefined;
          if (flags.json) {
            printJson({ digest: answer.digest, signedBy, verified, mediaType: answer.mediaType, statement });
            return;
          }
          printText(describe(answer.digest, signedBy, verified, statement));
        },
      ),
    );
}

/** The statement as a person reads it: who built what, from what, when, and whether it was checked. */
function describe(
  digest: string,
  signedBy: string,
  verified: boolean,
  statement: ProvenanceStatement,
): string {
  const { buildDefinition, runDetails } = statement.predicate;
  const pushed = buildDefinition.buildType.endsWith("/push/v1");
  const lines: [string, string][] = [
    ["subject", `${statement.subject[0]?.name ?? "?"} ${digest}`],
    [
      "signed by",
      `${signedBy} (${verified ? "verified with a trusted key" : "not verified: give --trust-key"})`,
    ],
    ["builder", runDetails.builder.id],
    ["build type", buildDefinition.buildType],
  ];
  if (pushed) lines.push(["pushed by", String(buildDefinition.internalParameters?.pushedBy ?? "?")]);
  for (const dependency of buildDefinition.resolvedDependencies ?? []) {
    const role = dependency.annotations?.role ?? "input";
    const digests = Object.entries(dependency.digest ?? {}).map(
      ([algorithm, value]) => `${algorithm}:${value}`,
    );
    const version = dependency.annotations?.version ? ` ${dependency.annotations.version}` : "";
    lines.push([role, [dependency.name, dependency.uri, ...digests].filter(Boolean).join(" ") + version]);
  }
  const { startedOn, finishedOn } = runDetails.metadata ?? {};
  if (startedOn) lines.push([pushed ? "received" : "started", startedOn]);
  if (finishedOn && !pushed) lines.push(["finished", finishedOn]);
  return fieldLines(lines, 12);
}
