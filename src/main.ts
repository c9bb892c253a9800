/**
 * ploopvault command line. Exit codes (docs/operations.md, "Exit codes"): 0 ok, 1 failure,
 * 2 usage, 3 partial, 4 host lock busy, 5 wrong password. A failure prints exactly one
 * line on stderr naming what failed and why.
 *
 * Around every command (src/ops/session.ts): before it, the config file fills unset
 * options and logging/progress/limits are set up; after it, with the exit code known,
 * the metrics file is written and the success or failure hook runs.
 */
import { Command, CommanderError } from "commander";
import { COMMANDS, loadAllCommands } from "./commands/all.js";
import { installStdoutGuard } from "./commands/common.js";
import { EXIT_FAILURE, EXIT_USAGE, errorLine, PloopvaultError } from "./errors.js";
import { afterCommand, beforeCommand } from "./ops/session.js";
import { activeZstdBinding } from "./util/zstd.js";
import { TOOL_VERSION } from "./version.js";

const PROGRAM_HELP = `
Examples:
  ploopvault init --repo s3://backups/node1 --endpoint http://10.0.0.5:9000
  ploopvault backup --repo s3://backups/node1 --all -q
  ploopvault snapshots --repo s3://backups/node1 --ct 101
  ploopvault restore --repo s3://backups/node1 101:latest --target /vz/private/201/root.hdd
  ploopvault check --repo s3://backups/node1 --read-data

Configuration: options not given on the command line or in the environment come from
the config file (--config FILE, env PLOOPVAULT_CONFIG, default
/etc/ploopvault/ploopvault.conf): "key = value" lines named like the long options
(repo = s3://backups/node1, limit-upload = 20M), optional [command] sections. Secrets
are never read from it: S3 credentials come from the AWS SDK chain (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles), repository passwords from
PLOOPVAULT_PASSWORD, --password-file or a prompt.

Environment: PLOOPVAULT_REPO, PLOOPVAULT_CONFIG, PLOOPVAULT_STATE, PLOOPVAULT_PLOOP,
PLOOPVAULT_PASSWORD, PLOOPVAULT_PASSWORD_FILE, AWS_ENDPOINT_URL, AWS_REGION,
PLOOPVAULT_ZSTD (napi or zlib: force one zstd binding; default zstd-napi where
installed, else node:zlib).

Exit codes: 0 ok, 1 failure, 2 usage error, 3 partial success (some containers failed),
4 another run holds the host lock, 5 wrong repository password.

Run "ploopvault help COMMAND" for a command's options. Operations guide (install, cron,
systemd, S3 policies, monitoring): docs/operations.md.
`;

function versionText(): string {
  return `ploopvault ${TOOL_VERSION} (Node.js ${process.version}, ${process.platform}/${process.arch})`;
}

/**
 * The commands `argv` needs: the one it names, none for --version, all of them otherwise
 * (help, completion, an unknown command: its error suggests the known ones).
 */
async function commandsFor(argv: readonly string[]): Promise<Command[]> {
  const first = argv[2];
  if (first === "-V" || first === "--version") return [];
  const named = COMMANDS.find(([name]) => name === first && name !== "completion");
  if (named) return [await named[1]()];
  return loadAllCommands();
}

function buildProgram(commands: readonly Command[]): Command {
  const program = new Command("ploopvault")
    .description("deduplicating backups of OpenVZ/Virtuozzo ploop container disks to S3 or a local directory")
    .version(versionText(), "-V, --version", "print the version and exit")
    .showHelpAfterError(false)
    .addHelpText("after", PROGRAM_HELP)
    .exitOverride();
  program.hook("preAction", (_program, actionCommand) => {
    // a wrong PLOOPVAULT_ZSTD fails here, before the command has done anything
    if (process.env.PLOOPVAULT_ZSTD) activeZstdBinding();
    return beforeCommand(program, actionCommand);
  });
  for (const cmd of commands) program.addCommand(cmd.exitOverride());
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram(await commandsFor(argv));
  program.configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith("error:") ? `ploopvault: ${s}` : s) });
  let code: number;
  let failure: unknown;
  try {
    await program.parseAsync(argv);
    code = process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (error) {
    if (error instanceof CommanderError) {
      const done = error.code === "commander.helpDisplayed" || error.code === "commander.version" || error.code === "commander.help";
      code = done ? 0 : EXIT_USAGE;
    } else {
      failure = error;
      code = error instanceof PloopvaultError ? error.exitCode : EXIT_FAILURE;
    }
  }
  // Prints the error line (after erasing any progress), writes metrics, runs hooks.
  await afterCommand(code, failure);
  if (process.env.PLOOPVAULT_DEBUG && failure instanceof Error) process.stderr.write(`${failure.stack ?? ""}\n`);
  return code;
}

installStdoutGuard((code) => process.exit(code));
main(process.argv).then(
  (code) => {
    process.exitCode = code;
    // Backstop: a handle leaked by a bug (a worker, a socket) must not keep a cron run,
    // and the host lock it held, alive for ever. Unref'd: it only fires if something else
    // still keeps the process up, and it says so, so that tests notice the leak.
    setTimeout(() => {
      process.stderr.write(`ploopvault: internal error: still running 10 s after finishing (${process.getActiveResourcesInfo().join(", ")}); exiting\n`);
      process.exit(code === 0 ? EXIT_FAILURE : code);
    }, 10_000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`ploopvault: ${errorLine(error)}\n`);
    process.exitCode = EXIT_FAILURE;
  },
);
