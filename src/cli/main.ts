#!/usr/bin/env node
import { Command } from "commander";
import { EXIT } from "./cli-common.js";
import { serveCommand } from "./serve-command.js";
import { lsCommand, pullCommand, pushCommand } from "./transfer-commands.js";

const program = new Command("atomix-plugins")
  .description("plugin registry and compiler for atomix runtime proxies")
  .exitOverride((error) => {
    // commander's own exits: help and version are success, the rest are usage errors.
    if (
      error.code === "commander.helpDisplayed" ||
      error.code === "commander.version" ||
      error.code === "commander.help"
    ) {
      process.exit(EXIT.ok);
    }
    process.exit(EXIT.usage);
  })
  .showHelpAfterError("(run with --help for usage)")
  .addCommand(serveCommand())
  .addCommand(pushCommand())
  .addCommand(pullCommand())
  .addCommand(lsCommand());

await program.parseAsync(process.argv);
