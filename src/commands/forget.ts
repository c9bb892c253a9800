import { Command, Option } from "commander";
import { parseDuration } from "../prune/duration.js";
import { lockTiming } from "../prune/locks.js";
import { forgetBackups } from "../prune/protection.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { resolveBackups } from "../restore/resolve.js";
import { formatBytes } from "../util/format.js";
import { addCommonOptions, defaultHost, openRepository, Output, type GlobalOptions } from "./common.js";
import { DEFAULT_PRUNE_WAIT } from "./prune.js";

interface ForgetOptions extends GlobalOptions {
  host?: string;
  dryRun?: boolean;
  wait: string;
  lockHost: string;
}

export function forgetCommand(): Command {
  return addCommonOptions(new Command("forget"))
    .description("remove single backups by id (their chunks go with the next prune); protected backups are refused")
    .argument("<backup...>", "backup ids (or unique prefixes, or CT/ID) as snapshots shows them")
    .option("--host <name>", "only look among backups made on this host")
    .option("--dry-run", "show what would be forgotten; change nothing")
    .addOption(new Option("--wait <duration>", "how long to wait for a running prune or forget").default(DEFAULT_PRUNE_WAIT))
    .addOption(new Option("--lock-host <name>", "this host's name in lock objects").default(defaultHost()))
    .addHelpText(
      "after",
      `
Examples:
  # the last backup of a container that no longer exists (prune keeps a group's newest)
  ploopvault forget --repo s3://backups/node1 101/20250302T023004Z-8f2a91c3
  # by unique id prefix, several at once, after looking first
  ploopvault forget --repo /srv/backup 20250302T0230 20250301T0230 --dry-run
  # then free the space
  ploopvault prune --repo /srv/backup --keep-daily 7 --grace 0

forget takes backup ids, not CT:latest. A protected backup is refused (ploopvault
unprotect first) and then nothing is forgotten.
`,
    )
    .action(async (specs: string[], options: ForgetOptions) => {
      const out = new Output(options);
      const waitMs = parseDuration(options.wait, "--wait");
      const repo = await openRepository(options);
      try {
        const cache = ManifestCache.forRepository(repo, options.stateDir);
        const refs = await resolveBackups(repo, specs, {
          metadata: (r) => cache.metadata(r),
          allowLatest: false,
          ...(options.host === undefined ? {} : { host: options.host }),
        });
        const forgotten = await forgetBackups(repo, refs, {
          host: options.lockHost,
          timing: lockTiming(),
          waitMs,
          dryRun: options.dryRun === true,
          log: (line) => out.info(line),
          warn: (line) => out.warn(line),
        });
        if (out.json) out.jsonResult({ dryRun: options.dryRun === true, forgotten, status: "ok" });
        // a dry run's list is what was asked for (shown with -q)
        const say = options.dryRun ? (line: string): void => out.listing(line) : (line: string): void => out.result(line);
        for (const f of forgotten)
          say(
            `${options.dryRun ? "would forget" : "forgot"} ${f.ct}/${f.id} (${f.objects} objects, ${formatBytes(f.bytes)}; its chunks go with the next prune)`,
          );
      } finally {
        await repo.close();
      }
    });
}
