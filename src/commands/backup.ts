import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { Command, Option } from "commander";
import { containerIdForDisk } from "../host/disk-source.js";
import { runBackup, type BackupRunRequest, type ContainerResult } from "../host/run.js";
import { EXIT_PARTIAL, PloopvaultError, UsageError } from "../errors.js";
import { annotationProblem } from "../manifest/format.js";
import { durationSecondsOption } from "../prune/duration.js";
import { validateName } from "../repository/layout.js";
import { formatBytes, formatSeconds } from "../util/format.js";
import { addBackupOpsOptions, backupRunOps, recordResult, type BackupOpsOptions } from "../ops/backup-ops.js";
import {
  addCommonOptions,
  withInterrupts,
  defaultHost,
  keepRunningWithoutStdout,
  openRepository,
  Output,
  parsePositiveInt,
  type GlobalOptions,
} from "./common.js";

interface BackupOptions extends GlobalOptions, BackupOpsOptions {
  all?: boolean;
  disk?: string[];
  name?: string;
  host: string;
  time?: string;
  uploadConcurrency: number;
  threads: number;
  parallel: number;
  privateRoot: string;
  ploopBin: string;
  vzlistBin: string;
  lockWait: number;
  incremental: boolean;
  full?: boolean;
  skipFree?: boolean;
  tag?: string[];
  note?: string;
}

function parseThreads(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new UsageError(`--threads must be 0..64, got "${value}"`);
  return n;
}

export function backupCommand(): Command {
  return addBackupOpsOptions(addCommonOptions(new Command("backup")))
    .description("back up containers (snapshot, read the frozen disk, merge back) or one ploop disk")
    .argument("[ctid...]", "containers to back up (resolved with vzlist, else <private-root>/<CTID>)")
    .option("--all", "back up every container found (vzlist -a, else <private-root>/*/root.hdd)")
    .option(
      "--disk <path>",
      "DiskDescriptor.xml of a ploop disk to read directly (stopped container, no snapshot); repeat for several",
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .option("--name <ct>", "container id recorded for --disk (default: the descriptor's folder's parent name)")
    .addOption(new Option("--private-root <dir>", "where container private areas live").default("/vz/private"))
    .addOption(new Option("--ploop-bin <path>", "ploop command line to drive").env("PLOOPVAULT_PLOOP").default("ploop"))
    .addOption(new Option("--vzlist-bin <path>", "vzlist binary (the private root is scanned if it is missing)").default("vzlist"))
    .addOption(new Option("--host <name>", "host name recorded in the backup").default(defaultHost()))
    .option("--time <iso8601>", "record this time instead of now (imports, tests)")
    .addOption(new Option("--parallel <n>", "containers backed up at the same time").default(1).argParser(parsePositiveInt("--parallel")))
    .addOption(new Option("--upload-concurrency <n>", "parallel uploads").default(8).argParser(parsePositiveInt("--upload-concurrency")))
    .addOption(
      new Option("--threads <n>", "worker threads for hashing and compression (0 = main thread only)").default(availableParallelism()).argParser(parseThreads),
    )
    .option("--no-incremental", "merge each backup's snapshot back at once and read the whole disk every time (no kept delta)")
    .option("--full", "read the whole disk this time (the snapshot is still kept for the next incremental backup)")
    .option("--skip-free", "do not read or store clusters that the disk's ext4 filesystems leave free (restored as zeros; docs/skip-free.md)")
    .option("--tag <tag>", "label the backups (repeat for several; filters: snapshots --tag, prune --tag)", (value: string, previous: string[] | undefined) => [
      ...(previous ?? []),
      value,
    ])
    .option("--note <text>", "a one-line note stored with the backups (shown by snapshots)")
    .addOption(
      new Option("--lock-wait <duration>", "how long to wait for another ploopvault run on this host (e.g. 10m; a plain number is seconds)")
        .default(600, "10m")
        .argParser(durationSecondsOption("--lock-wait", { allowZero: true })),
    )
    .addHelpText(
      "after",
      `
Examples:
  ploopvault backup --repo s3://backups/node1 --all
  ploopvault backup --repo /srv/backup 101 102 --parallel 2
  ploopvault backup --repo /srv/backup --disk /vz/private/101/root.hdd/DiskDescriptor.xml
  # before an upgrade: a labelled backup to find (snapshots --tag) and keep (protect)
  ploopvault backup --repo /srv/backup 101 --tag pre-upgrade --note "before PHP 8.3"
  # from cron: silent unless something fails, gentle on the host, monitored
  ploopvault backup --all -q --limit-read 100M --limit-upload 20M \\
      --metrics-file /var/lib/node_exporter/textfile/ploopvault.prom \\
      --hook-failure 'mail -s "backup failed on $(hostname)" root < "$3"'

Progress is shown on a terminal (not with -q, --no-progress, or when stderr is not a
TTY). Reads run at idle I/O priority (ionice -c3) unless --no-ionice. Hooks run as
/bin/sh -c CMD ploopvault-hook STATUS EXIT_CODE RESULTS_JSON_FILE, with PLOOPVAULT_STATUS,
PLOOPVAULT_EXIT_CODE and PLOOPVAULT_RESULTS_JSON in the environment (docs/operations.md).
`,
    )
    .action(async (ctids: string[], options: BackupOptions) => {
      const out = new Output(options);
      keepRunningWithoutStdout(); // snapshots must be merged back even if `| head` went away
      const disks = options.disk ?? [];
      const modes = [ctids.length > 0, options.all === true, disks.length > 0].filter(Boolean).length;
      if (modes !== 1) throw new UsageError("give container ids, --all, or --disk PATH/DiskDescriptor.xml (exactly one of them)");
      if (options.name !== undefined && disks.length !== 1)
        throw new UsageError(disks.length === 0 ? "--name only applies to --disk" : "--name applies to a single --disk");
      for (const ct of ctids) validateName("container id", ct);
      const annotations = { ...(options.tag === undefined ? {} : { tags: options.tag }), ...(options.note === undefined ? {} : { note: options.note }) };
      const annotationError = annotationProblem(annotations);
      if (annotationError !== null) throw new UsageError(`--tag/--note: ${annotationError}`);
      const time = options.time === undefined ? null : new Date(options.time);
      if (time !== null && Number.isNaN(time.getTime())) throw new UsageError(`--time: "${options.time}" is not an ISO 8601 time`);
      const targets: BackupRunRequest["targets"] =
        disks.length > 0
          ? { kind: "disks", disks: disks.map((d) => ({ descriptorPath: resolve(d), ct: containerIdForDisk(resolve(d), options.name) })) }
          : options.all
            ? { kind: "all" }
            : { kind: "containers", ctids };

      // one target: its failure is the run's one error line, not printed twice
      const targetCount = targets.kind === "containers" ? targets.ctids.length : targets.kind === "disks" ? targets.disks.length : Infinity;
      let interrupt: AbortSignal | undefined;
      const results: ContainerResult[] = await withInterrupts(out, "stopping, merging snapshots back, writing no manifest", (signal) => {
        interrupt = signal;
        return runBackup({
          targets,
          openRepository: () => openRepository(options),
          stateDir: options.stateDir,
          lockWaitSeconds: options.lockWait,
          host: options.host,
          time,
          incremental: options.incremental,
          forceFull: options.full === true,
          skipFree: options.skipFree === true,
          workerThreads: options.threads,
          uploadConcurrency: options.uploadConcurrency,
          parallel: options.parallel,
          ploopBin: options.ploopBin,
          vzlistBin: options.vzlistBin,
          privateRoot: options.privateRoot,
          annotations,
          signal,
          log: (line) => out.info(line),
          warn: (line) => out.warn(line),
          debug: (line) => out.debug(line),
          onResult: (r) => report(out, r, targetCount),
          ...backupRunOps(options),
        });
      });
      const failed = results.filter((r) => r.status !== "ok");
      if (interrupt?.aborted) throw interrupt.reason instanceof Error ? interrupt.reason : new PloopvaultError("interrupted");
      if (failed.length === 0) return;
      const summary = failed.map((r) => `${r.ct}: ${r.error ?? "failed"}`).join("; ");
      if (failed.length === results.length)
        throw new PloopvaultError(failed.length === 1 ? `backup of container ${summary}` : `all ${failed.length} backups failed: ${summary}`);
      throw new PloopvaultError(`${failed.length} of ${results.length} backups failed: ${summary}`, { exitCode: EXIT_PARTIAL });
    });
}

function report(out: Output, r: ContainerResult, targetCount: number): void {
  recordResult(r);
  if (out.json) out.jsonResult(r);
  if (r.status === "ok") {
    const mode =
      (r.mode === "incremental" ? `, incremental since ${r.baseBackup}` : r.mode === "full" ? ", full read" : "") +
      (r.skippedFreeBytes !== undefined ? `, ${formatBytes(r.skippedFreeBytes)} free space skipped` : "");
    out.info(
      `backup ${r.ct}/${r.backup}: ${formatBytes(r.logicalBytes ?? 0)} disk, ${formatBytes(r.readBytes ?? 0)} read${mode}, ${r.newChunks} new of ${r.chunks} chunks (${formatBytes(r.newBytesStored ?? 0)} stored) in ${formatSeconds(r.seconds)}`,
    );
  } else if (targetCount > 1) {
    out.info(`backup of container ${r.ct} FAILED: ${r.error ?? "unknown error"}`);
  }
}
