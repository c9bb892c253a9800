import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { Command, Option } from "commander";
import { listContainers, resolveContainers, type ContainerInfo } from "../backup/containers.js";
import { defaultContainerId, findContainerConfig, readDescriptorBytes } from "../backup/disk-source.js";
import { SnapshotJournal } from "../backup/journal.js";
import { backupDisk } from "../backup/pipeline.js";
import { backupContainers, resultOf, type ContainerResult } from "../backup/run.js";
import { recoverInterrupted } from "../backup/snapshot-lifecycle.js";
import { KeptSnapshots } from "../backup/kept-snapshot.js";
import { releaseKeptSnapshot } from "../backup/incremental.js";
import { EXIT_PARTIAL, PloopvaultError, UsageError } from "../errors.js";
import { openLogicalDisk } from "../ploop/disk.js";
import { PloopCli } from "../ploop/driver.js";
import { BackupRegistration } from "../prune/registration.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { validateName } from "../repository/layout.js";
import type { Repository } from "../repository/repository.js";
import { formatBytes, formatSeconds } from "../util/format.js";
import { acquireHostLock } from "../util/host-lock.js";
import { addBackupOpsOptions, backupRunOps, diskRunOps, recordResult, type BackupOpsOptions } from "../ops/backup-ops.js";
import { addCommonOptions, defaultHost, openRepository, Output, parsePositiveInt, type GlobalOptions } from "./common.js";

interface BackupOptions extends GlobalOptions, BackupOpsOptions {
  all?: boolean;
  disk?: string;
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
}

function parseThreads(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new UsageError(`--threads must be 0..64, got "${value}"`);
  return n;
}

function parseSeconds(name: string): (value: string) => number {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name} must be a number of seconds >= 0, got "${value}"`);
    return n;
  };
}

export function backupCommand(): Command {
  return addBackupOpsOptions(addCommonOptions(new Command("backup")))
    .description("back up containers (snapshot, read the frozen disk, merge back) or one ploop disk")
    .argument("[ctid...]", "containers to back up (resolved with vzlist, else <private-root>/<CTID>)")
    .option("--all", "back up every container found (vzlist -a, else <private-root>/*/root.hdd)")
    .option("--disk <path>", "DiskDescriptor.xml of a ploop disk to read directly (stopped container, no snapshot)")
    .option("--name <ct>", "container id recorded for --disk (default: the descriptor's folder's parent name)")
    .addOption(new Option("--private-root <dir>", "where container private areas live").default("/vz/private"))
    .addOption(new Option("--ploop-bin <path>", "ploop command line to drive").env("PLOOPVAULT_PLOOP").default("ploop"))
    .addOption(new Option("--vzlist-bin <path>", "vzlist binary (the private root is scanned if it is missing)").default("vzlist"))
    .addOption(new Option("--host <name>", "host name recorded in the backup").default(defaultHost()))
    .option("--time <iso8601>", "record this time instead of now (imports, tests)")
    .addOption(new Option("--parallel <n>", "containers backed up at the same time").default(1).argParser(parsePositiveInt("--parallel")))
    .addOption(new Option("--upload-concurrency <n>", "parallel uploads").default(8).argParser(parsePositiveInt("--upload-concurrency")))
    .addOption(new Option("--threads <n>", "worker threads for hashing and compression (0 = main thread only)").default(availableParallelism()).argParser(parseThreads))
    .option("--no-incremental", "merge each backup's snapshot back at once and read the whole disk every time (no kept delta)")
    .option("--full", "read the whole disk this time (the snapshot is still kept for the next incremental backup)")
    .addOption(new Option("--lock-wait <seconds>", "how long to wait for another ploopvault run on this host").default(600).argParser(parseSeconds("--lock-wait")))
    .addHelpText(
      "after",
      `
Examples:
  ploopvault backup --repo s3://backups/node1 --all
  ploopvault backup --repo /srv/backup 101 102 --parallel 2
  ploopvault backup --repo /srv/backup --disk /vz/private/101/root.hdd/DiskDescriptor.xml
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
      const modes = [ctids.length > 0, options.all === true, options.disk !== undefined].filter(Boolean).length;
      if (modes !== 1) throw new UsageError("give container ids, --all, or --disk PATH/DiskDescriptor.xml (exactly one of them)");
      if (options.name !== undefined && options.disk === undefined) throw new UsageError("--name only applies to --disk");
      for (const ct of ctids) validateName("container id", ct);
      const time = options.time === undefined ? null : new Date(options.time);
      if (time !== null && Number.isNaN(time.getTime())) throw new UsageError(`--time: "${options.time}" is not an ISO 8601 time`);

      // Overlapping cron runs on one host: the second waits, then gives up with exit 4.
      const lock = await acquireHostLock(join(options.stateDir, "run.lock"), { waitSeconds: options.lockWait });
      const abort = new AbortController();
      const onSignal = (signal: NodeJS.Signals): void => {
        if (!abort.signal.aborted) out.warn(`${signal} received: stopping, merging snapshots back, writing no manifest`);
        abort.abort(new PloopvaultError(`interrupted by ${signal}`));
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      try {
        if (options.disk !== undefined) {
          await backupDirectDisk(options, out, time, abort.signal);
          return;
        }
        const ploop = new PloopCli({ bin: options.ploopBin, log: (line) => out.debug(line) });
        const journal = new SnapshotJournal(options.stateDir);
        // Whatever a crashed or killed run left behind is cleaned up before anything else.
        const kept = new KeptSnapshots(options.stateDir);
        await recoverInterrupted(journal, ploop, (line) => out.info(line), {
          isKept: async (ct, guid) => (await kept.get(ct))?.snapshotGuid.toLowerCase() === guid.toLowerCase(),
        });
        const discovery = { vzlistBin: options.vzlistBin, privateRoot: options.privateRoot, log: (line: string) => out.debug(line) };
        const containers: ContainerInfo[] = options.all ? await listContainers(discovery) : await resolveContainers(ctids, discovery);
        if (containers.length === 0) throw new PloopvaultError(`no containers found (vzlist "${options.vzlistBin}" or ${options.privateRoot}/*/root.hdd/DiskDescriptor.xml)`);
        if (!options.incremental) {
          // No kept deltas in this mode: give containers back a disk without ours.
          for (const c of containers) {
            const released = await releaseKeptSnapshot({ ct: c.ct, descriptorPath: c.descriptorPath, ploop, journal, kept, log: (line) => out.info(line) });
            if (released) out.info(`container ${c.ct}: kept snapshot ${released} of an earlier incremental backup merged (--no-incremental)`);
          }
        }
        const repo = await openRepository(options);
        let results: ContainerResult[];
        let registration: BackupRegistration | null = null;
        try {
          // prune protocol (docs/prune.md): registered before anything reads what the repository holds
          registration = await BackupRegistration.start(repo, options.host, { log: (line) => out.info(line), warn: (line) => out.warn(line) });
          const reg = registration;
          results = await backupContainers(containers, {
            beforeManifest: async () => reg.assertValid(),
            repo,
            cache: ManifestCache.forRepository(repo, options.stateDir),
            ploop,
            journal,
            host: options.host,
            time,
            workerThreads: options.threads,
            uploadConcurrency: options.uploadConcurrency,
            parallel: options.parallel,
            signal: abort.signal,
            log: (line) => out.info(line),
            onResult: (r) => report(out, r),
            kept: options.incremental ? kept : null,
            forceFull: options.full === true,
            storedThisRun: new Map<string, Promise<void>>(),
            ...backupRunOps(options),
          });
        } finally {
          await registration?.stop();
          await repo.close();
        }
        const failed = results.filter((r) => r.status !== "ok");
        if (abort.signal.aborted) throw abort.signal.reason instanceof Error ? abort.signal.reason : new PloopvaultError("interrupted");
        if (failed.length === 0) return;
        const summary = failed.map((r) => `${r.ct}: ${r.error ?? "failed"}`).join("; ");
        if (failed.length === results.length) throw new PloopvaultError(failed.length === 1 ? `backup of container ${summary}` : `all ${failed.length} backups failed: ${summary}`);
        throw new PloopvaultError(`${failed.length} of ${results.length} backups failed: ${summary}`, { exitCode: EXIT_PARTIAL });
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
        await lock.release();
      }
    });
}

function report(out: Output, r: ContainerResult): void {
  recordResult(r);
  if (out.json) out.jsonResult(r);
  if (r.status === "ok") {
    const mode = r.mode === "incremental" ? `, incremental since ${r.baseBackup}` : r.mode === "full" ? ", full read" : "";
    out.info(`backup ${r.ct}/${r.backup}: ${formatBytes(r.logicalBytes ?? 0)} disk, ${formatBytes(r.readBytes ?? 0)} read${mode}, ${r.newChunks} new of ${r.chunks} chunks (${formatBytes(r.newBytesStored ?? 0)} stored) in ${formatSeconds(r.seconds)}`);
  } else {
    out.info(`backup of container ${r.ct} FAILED: ${r.error ?? "unknown error"}`);
  }
}

/** --disk: the disk of a stopped container, read directly without a snapshot. */
async function backupDirectDisk(options: BackupOptions, out: Output, time: Date | null, signal: AbortSignal): Promise<void> {
  const descriptorPath = resolve(options.disk!);
  const ct = validateName("container id", options.name ?? defaultContainerId(descriptorPath));
  const repo: Repository = await openRepository(options);
  let registration: BackupRegistration | null = null;
  try {
    // prune protocol (docs/prune.md): registered before anything reads what the repository holds
    registration = await BackupRegistration.start(repo, options.host, { log: (line) => out.info(line), warn: (line) => out.warn(line) });
    const reg = registration;
    const disk = await openLogicalDisk(descriptorPath);
    try {
      if (disk.inUseImages.length > 0) {
        throw new PloopvaultError(
          `${disk.inUseImages[0]}: image is marked in use (container running, or not shut down cleanly); back up a running container by CTID so a snapshot is taken, or run "ploop check" on a stopped one`,
        );
      }
      const result = await backupDisk(
        repo,
        ManifestCache.forRepository(repo, options.stateDir),
        {
          disk,
          ct,
          descriptorXml: await readDescriptorBytes(descriptorPath),
          containerConfig: await findContainerConfig(descriptorPath),
          snapshotGuid: null,
          sourceFormatVersion: disk.formatVersion,
        },
        { host: options.host, time: time ?? new Date(), workerThreads: options.threads, uploadConcurrency: options.uploadConcurrency, signal, beforeManifest: async () => reg.assertValid(), ...diskRunOps(options, ct) },
      );
      report(out, resultOf(ct, result, null));
    } finally {
      await disk.close();
    }
  } finally {
    await registration?.stop();
    await repo.close();
  }
}

