import { Command, Option } from "commander";
import { EXIT_PARTIAL, PloopvaultError, UsageError } from "../errors.js";
import { formatDuration, parseDuration } from "../prune/duration.js";
import { lockTiming } from "../prune/locks.js";
import { policyIsEmpty, type KeepPolicy } from "../prune/policy.js";
import { planPrune, runPrune, type PruneOptions, type PruneReport } from "../prune/prune.js";
import { requireConditionalWrites } from "../repository/conditional-writes.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { validateName } from "../repository/layout.js";
import { formatBytes } from "../util/format.js";
import {
  addCommonOptions,
  conditionalWritesProbe,
  defaultHost,
  openRepository,
  Output,
  parsePositiveInt,
  withInterrupts,
  type GlobalOptions,
} from "./common.js";

interface PruneCliOptions extends GlobalOptions {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
  ct?: string;
  grace: string;
  wait: string;
  dryRun?: boolean;
  host?: string;
  tag?: string[];
  lockHost: string;
  lockTtl?: string;
  lockRefresh?: string;
}

export const DEFAULT_GRACE = "1h";
export const DEFAULT_PRUNE_WAIT = "15m";

export function pruneCommand(): Command {
  const keep = (flag: string, what: string): Option => new Option(`${flag} <n>`, what).argParser(parsePositiveInt(flag));
  return addCommonOptions(new Command("prune"))
    .description("forget backups outside a keep policy (per container and host) and delete chunks no remaining backup references")
    .addOption(keep("--keep-last", "keep the N newest backups"))
    .addOption(keep("--keep-hourly", "keep the newest backup of each of the last N hours that have one (UTC)"))
    .addOption(keep("--keep-daily", "keep the newest backup of each of the last N days that have one (UTC)"))
    .addOption(keep("--keep-weekly", "keep the newest backup of each of the last N ISO weeks that have one (UTC)"))
    .addOption(keep("--keep-monthly", "keep the newest backup of each of the last N months that have one (UTC)"))
    .addOption(keep("--keep-yearly", "keep the newest backup of each of the last N years that have one (UTC)"))
    .option("--keep-within <duration>", "keep every backup less than DURATION older than the group's newest (e.g. 7d, 36h)")
    .option("--ct <id>", "only forget backups of this container")
    .addOption(new Option("--grace <duration>", "leave unreferenced chunks younger than this alone (0 = delete at once)").default(DEFAULT_GRACE))
    .addOption(new Option("--wait <duration>", "how long to wait for running backups (or another prune) before deferring deletion").default(DEFAULT_PRUNE_WAIT))
    .option("--dry-run", "show what would be forgotten and freed; change nothing")
    .option("--host <name>", "only forget backups made on this host (the sweep always considers every backup)")
    .option("--tag <tag>", "only forget backups with this tag (repeat: any of them)", (value: string, previous: string[] | undefined) => [
      ...(previous ?? []),
      value,
    ])
    .addOption(new Option("--lock-host <name>", "this host's name in lock objects").default(defaultHost()))
    .addOption(new Option("--lock-ttl <duration>", "lock TTL (tests)").hideHelp())
    .addOption(new Option("--lock-refresh <duration>", "lock refresh interval (tests)").hideHelp())
    .addHelpText(
      "after",
      "\nBackups are grouped by container and host; a backup kept by any rule is kept (restic's forget semantics, buckets in UTC); a protected backup (ploopvault protect) is always kept." +
        "\nExit codes: 0 done; 3 backups forgotten but chunk deletion deferred because backups kept running (run again later)." +
        "\n\nExamples:\n  ploopvault prune --repo s3://backups --keep-daily 7 --keep-weekly 4 --keep-monthly 6\n  ploopvault prune --repo /srv/backup --keep-last 3 --ct 101 --dry-run\n  ploopvault prune --repo /srv/backup --keep-last 24 --tag hourly --wait 10m\n",
    )
    .action(async (options: PruneCliOptions) => {
      const out = new Output(options);
      const policy: KeepPolicy = {};
      if (options.keepLast !== undefined) policy.last = options.keepLast;
      if (options.keepHourly !== undefined) policy.hourly = options.keepHourly;
      if (options.keepDaily !== undefined) policy.daily = options.keepDaily;
      if (options.keepWeekly !== undefined) policy.weekly = options.keepWeekly;
      if (options.keepMonthly !== undefined) policy.monthly = options.keepMonthly;
      if (options.keepYearly !== undefined) policy.yearly = options.keepYearly;
      if (options.keepWithin !== undefined) {
        policy.withinMs = parseDuration(options.keepWithin, "--keep-within");
        if (policy.withinMs <= 0) throw new UsageError("--keep-within must be longer than 0");
      }
      if (policyIsEmpty(policy)) {
        throw new UsageError(
          "no keep policy given: use at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within (prune refuses to forget every backup)",
        );
      }
      if (options.ct !== undefined) validateName("container id", options.ct);
      const graceMs = parseDuration(options.grace, "--grace");
      const waitMs = parseDuration(options.wait, "--wait");
      const timingOverrides: { ttlMs?: number; refreshMs?: number } = {};
      if (options.lockTtl !== undefined) timingOverrides.ttlMs = parseDuration(options.lockTtl, "--lock-ttl");
      if (options.lockRefresh !== undefined) timingOverrides.refreshMs = parseDuration(options.lockRefresh, "--lock-refresh");
      const timing = lockTiming(timingOverrides);

      const report: PruneReport = await withInterrupts(out, "stopping after the current step, removing our locks", async (signal) => {
        const repo = await openRepository(options);
        try {
          // prune's lock takeovers and the safety of deletion rest on conditional writes of
          // lock objects: probed where those go (an object-lock repository's lock bucket)
          const locks = repo.store.controlChannel?.() ?? repo.store;
          if (options.dryRun !== true)
            await requireConditionalWrites(locks, repo.config.id, { ...conditionalWritesProbe(options, repo.store, out), purpose: "prune" });
          const pruneOptions: PruneOptions = {
            policy,
            ...(options.ct === undefined ? {} : { ct: options.ct }),
            graceMs,
            waitMs,
            host: options.lockHost,
            ...(options.host === undefined ? {} : { onlyHost: options.host }),
            ...(options.tag === undefined ? {} : { tags: options.tag }),
            timing,
            cache: ManifestCache.forRepository(repo, options.stateDir),
            signal,
            log: (line) => out.info(line),
            warn: (line) => out.warn(line),
          };
          // --dry-run is the plan alone: it writes nothing, not even a lock object
          if (options.dryRun === true) return (await planPrune(repo, pruneOptions)).report;
          return await runPrune(repo, pruneOptions);
        } finally {
          await repo.close();
        }
      });
      printReport(out, report, options.verbose === true);
      if (report.sweep === "skipped") {
        throw new PloopvaultError(`prune: chunk deletion skipped, damaged manifests: ${report.damagedManifests.slice(0, 3).join("; ")}`);
      }
      if (report.sweep === "deferred") {
        throw new PloopvaultError(
          `prune: forgot ${report.forgotten} backup${report.forgotten === 1 ? "" : "s"}, but chunk deletion was deferred: backups are running (${report.deferredBy.slice(0, 3).join(", ")}); run prune again later`,
          { exitCode: EXIT_PARTIAL },
        );
      }
    });
}

function printReport(out: Output, r: PruneReport, verbose: boolean): void {
  if (out.json) {
    out.jsonResult({ ...r, status: r.sweep === "deferred" ? "deferred" : r.sweep === "skipped" ? "damaged" : "ok" });
    return;
  }
  const would = r.dryRun ? "would " : "";
  // a dry run's report is what was asked for (shown with -q); a real run's is silent with -q
  const line = (text: string): void => (r.dryRun ? out.listing(text) : out.result(text));
  for (const g of r.groups) {
    line(`container ${g.ct} on ${g.host}: keep ${g.kept.length}, ${would}forget ${g.forgotten.length}`);
    if (verbose) for (const k of g.kept) line(`  keep    ${g.ct}/${k.id}  ${k.time}  (${k.reasons.join(", ")})`);
    for (const f of g.forgotten) line(`  ${r.dryRun ? "would forget" : "forget"}  ${g.ct}/${f.id}  ${f.time}`);
  }
  const chunks = `${r.chunksDeleted} chunk${r.chunksDeleted === 1 ? "" : "s"}`;
  if (r.dryRun) {
    line(
      `dry run: would forget ${r.forgotten} backup${r.forgotten === 1 ? "" : "s"}, delete ${chunks} and ${r.filesDeleted} other files, freeing ${formatBytes(r.bytesFreed)}; nothing changed`,
    );
  } else {
    line(
      `forgot ${r.forgotten} backup${r.forgotten === 1 ? "" : "s"}, deleted ${chunks} and ${r.filesDeleted} other files, freed ${formatBytes(r.bytesFreed)} in ${formatDuration(r.seconds * 1000)}`,
    );
  }
  if (r.chunksSparedByGrace > 0)
    line(`${r.chunksSparedByGrace} unreferenced chunk${r.chunksSparedByGrace === 1 ? " is" : "s are"} younger than --grace and stay for now`);
  if (r.backupsRetained.length > 0) {
    line(
      `${r.backupsRetained.length} backup${r.backupsRetained.length === 1 ? "" : "s"} the policy would forget ${r.backupsRetained.length === 1 ? "is" : "are"} kept: still under S3 Object Lock retention (a prune after it ends forgets ${r.backupsRetained.length === 1 ? "it" : "them"})`,
    );
  }
  if (r.chunksRetained > 0 || r.filesRetained > 0) {
    line(
      `not deleted yet, still under S3 Object Lock retention: ${r.chunksRetained} unreferenced chunk${r.chunksRetained === 1 ? "" : "s"} (${formatBytes(r.chunkBytesRetained)})${r.filesRetained > 0 ? ` and ${r.filesRetained} other files` : ""}; a prune after the retention ends deletes them`,
    );
  }
}
