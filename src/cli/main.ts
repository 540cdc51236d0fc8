#!/usr/bin/env -S node --max-semi-space-size=4
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
// The young generation capped at 2 x 4 MiB: Node.js 20 lets it grow to 2 x 16
// MiB, and a long pull touches all of it, so a server's resident memory grew
// with the size of what it streamed (README, Performance). Measured: no loss
// of pull or CompilePlugin throughput. `npm start` and the benchmark pass it too.
import { Command, type CommanderError } from "commander";
import { SERVER_VERSION } from "../version.js";
import { gcCommand, inspectCommand, lsCommand, rmCommand } from "./admin-commands.js";
import { EXIT, fail } from "./cli-common.js";
import { compileCommand } from "./compile-command.js";
import { keygenCommand, provenanceCommand } from "./provenance-commands.js";
import { logsCommand, runtimeCommand } from "./runtime-commands.js";
import { serveCommand } from "./serve-command.js";
import { pullCommand, pushCommand } from "./transfer-commands.js";

/**
 * commander's own exits: help and version are success; a usage error is
 * reported like every other failure (`atomix-plugins: INVALID_ARGUMENT: ...`,
 * or JSON on stderr under --json) and exits 2.
 */
function exitFor(error: CommanderError): never {
  const success = ["commander.helpDisplayed", "commander.version", "commander.help"];
  if (success.includes(error.code)) process.exit(EXIT.ok);
  const message = error.message.replace(/^error: /, "");
  fail(
    new PluginError(Code.InvalidArgument, `${message} (run with --help for usage)`),
    process.argv.includes("--json"),
  );
}

const program = new Command("atomix-plugins")
  .description("plugin registry and compiler for atomix runtime proxies")
  .version(SERVER_VERSION, "-V, --version", "print the version")
  .addCommand(pullCommand())
  .addCommand(compileCommand())
  .addCommand(pushCommand())
  .addCommand(lsCommand())
  .addCommand(inspectCommand())
  .addCommand(rmCommand())
  .addCommand(gcCommand())
  .addCommand(provenanceCommand())
  .addCommand(keygenCommand())
  .addCommand(runtimeCommand())
  .addCommand(logsCommand())
  .addCommand(serveCommand())
  .addHelpText(
    "after",
    `
Client commands find the server with --server host:port or $ATOMIX_PLUGINS_SERVER
(default 127.0.0.1:5679), print JSON with --json, and exit with a code per failure:
  0 ok  1 other  2 usage/INVALID_ARGUMENT  3 NOT_FOUND  4 FAILED_PRECONDITION
  5 UNAVAILABLE/DEADLINE_EXCEEDED  6 DATA_LOSS  7 UNAUTHENTICATED/PERMISSION_DENIED
  8 RESOURCE_EXHAUSTED  9 untrusted (provenance missing, unsigned or not matching)
  130 CANCELLED (interrupted)

Examples:
  atomix-plugins serve --data ./data
  atomix-plugins push counter@1.0.0 counter.mjs --runtime 1.0.0 --build node20
  atomix-plugins compile counter@1.0.0 --runtime 1.0.0 --build node20
  atomix-plugins pull counter@1.0.0 --runtime 1.0.0 --build node20 -o counter.mjs`,
  );

// addCommand does not pass these settings down: every command gets them.
for (const command of [program, ...program.commands, ...program.commands.flatMap((c) => c.commands)]) {
  // commander prints nothing of its own for an error: exitFor reports it.
  command.exitOverride(exitFor).configureOutput({ outputError: () => {} });
}

await program.parseAsync(process.argv);
