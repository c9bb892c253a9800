#!/usr/bin/env node
/**
 * ploopvault command line. Exit codes (design.md): 0 ok, 1 failure, 2 usage, 3 partial.
 * A failure prints exactly one line on stderr naming what failed and why.
 */
import { Command, CommanderError } from "commander";
import { backupCommand } from "./commands/backup.js";
import { checkCommand } from "./commands/check.js";
import { initCommand } from "./commands/init.js";
import { restoreCommand } from "./commands/restore.js";
import { snapshotsCommand } from "./commands/snapshots.js";
import { EXIT_FAILURE, EXIT_USAGE, errorLine, PloopvaultError } from "./errors.js";
import { TOOL_VERSION } from "./version.js";

function buildProgram(): Command {
  const program = new Command("ploopvault")
    .description("deduplicating backups of OpenVZ/Virtuozzo ploop container disks to S3 or a local directory")
    .version(TOOL_VERSION, "-V, --version")
    .showHelpAfterError(false)
    .exitOverride();
  for (const cmd of [initCommand(), backupCommand(), snapshotsCommand(), restoreCommand(), checkCommand()]) {
    program.addCommand(cmd.exitOverride());
  }
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith("error:") ? `ploopvault: ${s}` : s) });
  try {
    await program.parseAsync(argv);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version" || error.code === "commander.help") return 0;
      return EXIT_USAGE;
    }
    process.stderr.write(`ploopvault: ${errorLine(error)}\n`);
    if (process.env.PLOOPVAULT_DEBUG && error instanceof Error) process.stderr.write(`${error.stack ?? ""}\n`);
    return error instanceof PloopvaultError ? error.exitCode : EXIT_FAILURE;
  }
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`ploopvault: ${errorLine(error)}\n`);
    process.exitCode = EXIT_FAILURE;
  },
);
