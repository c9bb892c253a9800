import { Command, Option } from "commander";
import { checkRepository, parseDataSubset, type DataSubset } from "../check/check.js";
import type { ObjectLockScan } from "../check/object-lock-scan.js";
import { PloopvaultError, UsageError } from "../errors.js";
import { checkBackupFilesystems } from "../files/check-fs.js";
import { recordFsCheck } from "../ops/session.js";
import { formatBytes } from "../util/format.js";
import { progressDisplay } from "../ops/progress.js";
import { validateName } from "../repository/layout.js";
import { addCommonOptions, openRepository, Output, parsePositiveInt, type GlobalOptions } from "./common.js";

interface CheckOptions extends GlobalOptions {
  readData?: boolean;
  readDataSubset?: DataSubset;
  ct?: string;
  host?: string;
  repair?: boolean;
  concurrency: number;
  fs?: boolean;
  metricsFile?: string;
}

export function checkCommand(): Command {
  return addCommonOptions(new Command("check"))
    .description("verify that every backup's manifest and chunks are present (and, with --read-data, intact)")
    .argument("[backup...]", "with --fs: backups to walk (default: the newest of every container)")
    .option("--read-data", "download, decompress and re-hash every referenced chunk")
    .option("--fs", "walk the filesystem in backups (every inode, extent, folder reachable) and report damage (docs/file-restore.md)")
    .addOption(new Option("--metrics-file <path>", "write Prometheus textfile metrics here after the run (atomically)"))
    .addOption(
      new Option("--read-data-subset <N/M|P%>", "like --read-data, for slice N of M of the chunks (by id) or a random P percent").argParser((v: string) =>
        parseDataSubset(v),
      ),
    )
    .option("--ct <id>", "only backups of this container (also with --fs)")
    .option("--host <name>", "only backups made on this host (also with --fs)")
    .option(
      "--repair",
      "object-lock repository: remove delete markers and junk versions someone put in the bucket (needs credentials that may delete object versions)",
    )
    .addOption(new Option("--concurrency <n>", "chunks read in parallel").default(8).argParser(parsePositiveInt("--concurrency")))
    .addHelpText(
      "after",
      `
Examples:
  # every manifest decodes and every chunk it references exists (cheap: listings only)
  ploopvault check --repo /srv/backup
  # also download, decompress and re-hash every referenced chunk (reads the whole repository)
  ploopvault check --repo s3://backups/node1 --read-data --limit-download 50M
  ploopvault check --repo s3://backups/node1 --json | jq .damaged
  # prove that last night's backup of every container holds a sound filesystem
  ploopvault check --repo s3://backups/node1 --fs --metrics-file /var/lib/node_exporter/ploopvault-fs.prom
  # nightly, a seventh of the data each day: every chunk read once a week
  ploopvault check --repo s3://backups/node1 --read-data-subset "$(( $(date +%u) ))/7"
  # one container of one node, 5 % of its chunks at random
  ploopvault check --repo s3://backups/all --ct 101 --host node1 --read-data-subset 5%

Exit code 1 when a backup is damaged (each one is listed on stderr and under "damaged"
with --json), or when objects of an object-lock repository were hidden or overwritten
(listed on stderr; --repair removes the intruder's delete markers and versions). Missing
and corrupt chunks are recorded in the repository (missing/) so
that the next backups upload them again from the containers' disks. Unreferenced chunks
are normal after an interrupted backup; prune removes them.
`,
    )
    .action(async (backups: string[], options: CheckOptions) => {
      const out = new Output(options);
      if (backups.length > 0 && options.fs !== true)
        throw new UsageError("backups to check are given only with --fs (the repository check covers every backup)");
      if (options.fs === true && (options.readData === true || options.readDataSubset !== undefined)) {
        throw new UsageError(`--fs and ${options.readData === true ? "--read-data" : "--read-data-subset"} are separate checks: run them one after the other`);
      }
      if (backups.length > 0 && options.ct !== undefined) throw new UsageError("give backups to check or --ct, not both (a backup names its container)");
      if (options.fs === true && options.repair === true)
        throw new UsageError("--repair belongs to the repository check, not --fs: run them one after the other");
      if (options.fs === true) return checkFilesystems(backups, options, out);
      const repo = await openRepository(options);
      try {
        const progress = progressDisplay();
        const readData = options.readData === true || options.readDataSubset !== undefined;
        const report = await checkRepository(repo, {
          readData,
          ...(options.readDataSubset === undefined ? {} : { dataSubset: options.readDataSubset }),
          ...(options.ct === undefined ? {} : { ct: validateName("container id", options.ct) }),
          ...(options.host === undefined ? {} : { host: options.host }),
          concurrency: options.concurrency,
          recordForRepair: true,
          repair: options.repair === true,
          warn: (line) => out.warn(line),
          ...(progress === null ? {} : { onProgress: (done: number, total: number) => progress.update("check", "check", { done, total }, "chunks") }),
        });
        progress?.remove("check");
        if (out.json) out.jsonResult({ ...report, status: report.damaged.length === 0 ? "ok" : "damaged" });
        out.info(
          `checked ${report.backups} backups, ${report.chunksReferenced} referenced chunks${readData ? ` (${report.chunksRead} read and verified)` : ""}, ${report.chunksUnreferenced} unreferenced`,
        );
        for (const l of report.locks.filter((x) => x.expired)) {
          out.warn(
            `expired lock ${l.key}${l.holder ? ` of ${l.holder}` : ""}, last refreshed ${l.ageSeconds} s ago (by this host's clock): its process died; it blocks nobody, the next prune removes it`,
          );
        }
        for (const d of report.damaged) for (const p of d.problems) out.info(`damaged backup ${d.ct}/${d.id}: ${p}`);
        if (report.chunksRecordedForRepair > 0) {
          out.warn(
            `${report.chunksRecordedForRepair} missing or corrupt chunk(s) recorded under missing/: the next backup of a disk that still holds their data uploads them again, which repairs every backup using them (docs/operations.md, "Repairing a repository")`,
          );
        }
        const intrusion = report.objectLock === null ? null : describeIntrusion(report.objectLock);
        if (intrusion !== null) {
          const s = report.objectLock!;
          for (const key of s.hidden.slice(0, 20)) out.warn(`hidden by a delete marker: ${key} (the data under it is intact and still read)`);
          for (const key of s.overwritten.slice(0, 20)) out.warn(`overwritten: ${key} has newer versions of other content (its first version is what is read)`);
          if (s.chunksNotVerified > 0)
            out.info(`${s.chunksNotVerified} chunks have versions of different content: check --read-data (or --repair) tells junk from re-uploads`);
          if (s.repaired !== null) {
            out.info(
              `repair: removed ${s.repaired.markersRemoved} delete markers and ${s.repaired.versionsRemoved} extra versions${s.repaired.retained > 0 ? `; ${s.repaired.retained} junk versions are under retention and stay until it ends` : ""}`,
            );
          }
        }
        if (report.damaged.length > 0) {
          const names = report.damaged.map((d) => `${d.ct}/${d.id}`);
          throw new PloopvaultError(
            `check failed: ${names.length} damaged backup${names.length === 1 ? "" : "s"}: ${names.slice(0, 10).join(", ")}${names.length > 10 ? ", ..." : ""}`,
          );
        }
        if (intrusion !== null && (report.objectLock!.repaired === null || report.objectLock!.repaired.retained > 0)) {
          throw new PloopvaultError(
            `check: ${intrusion} in ${repo.location}; every backup still reads what was written, but someone with write access changed the bucket: ${report.objectLock!.repaired === null ? "run check --repair with credentials that may delete object versions" : "the rest goes once its retention ends"}`,
          );
        }
      } finally {
        await repo.close();
      }
    });
}

async function checkFilesystems(backups: string[], options: CheckOptions, out: Output): Promise<void> {
  const repo = await openRepository(options);
  try {
    const results = await checkBackupFilesystems(repo, backups, {
      stateDir: options.stateDir,
      ...(options.ct === undefined ? {} : { ct: validateName("container id", options.ct) }),
      ...(options.host === undefined ? {} : { host: options.host }),
      onBackup: (r) => {
        const files = r.filesystems.reduce((n, f) => n + f.files, 0);
        const dirs = r.filesystems.reduce((n, f) => n + f.directories, 0);
        recordFsCheck({
          ct: r.ct,
          backupHost: r.host,
          ok: r.status === "ok",
          errors: r.errorCount,
          files,
          directories: dirs,
          bytesFetched: r.bytesFetched,
          seconds: r.seconds,
          backupTime: r.time,
        });
        const what = `filesystem of ${r.ct}/${r.backup}`;
        if (r.status === "ok")
          out.info(
            `${what}: ok: ${files} files, ${dirs} folders in ${r.filesystems.length} filesystem${r.filesystems.length === 1 ? "" : "s"}; fetched ${formatBytes(r.bytesFetched)}`,
          );
        else out.warn(`${what}: ${r.status}: ${r.problem ?? `${r.errorCount} errors`}`);
        for (const f of r.filesystems) {
          for (const w of f.warnings) out.warn(w);
          for (const e of f.errors) out.info(`damaged ${f.filesystem}: ${e}`);
          if (f.errorCount > f.errors.length) out.info(`damaged ${f.filesystem}: ${f.errorCount - f.errors.length} more errors`);
        }
      },
    });
    const bad = results.filter((r) => r.status !== "ok");
    if (out.json) out.jsonResult({ filesystems: results, damaged: bad.map((r) => `${r.ct}/${r.backup}`), status: bad.length === 0 ? "ok" : "damaged" });
    if (bad.length > 0) {
      const names = bad.map((r) => `${r.ct}/${r.backup}`);
      throw new PloopvaultError(
        `check --fs failed: ${names.length} backup${names.length === 1 ? "" : "s"} without a sound filesystem: ${names.slice(0, 10).join(", ")}${names.length > 10 ? ", ..." : ""}`,
      );
    }
  } finally {
    await repo.close();
  }
}

/** "3 objects hidden by delete markers, 1 overwritten", or null when nothing was done to the bucket. */
function describeIntrusion(s: ObjectLockScan): string | null {
  const parts: string[] = [];
  if (s.hidden.length > 0) parts.push(`${s.hidden.length} object${s.hidden.length === 1 ? "" : "s"} hidden by delete markers`);
  if (s.overwritten.length > 0) parts.push(`${s.overwritten.length} overwritten`);
  if (s.junkChunkVersions > 0) parts.push(`${s.junkChunkVersions} junk chunk version${s.junkChunkVersions === 1 ? "" : "s"}`);
  return parts.length === 0 ? null : parts.join(", ");
}
