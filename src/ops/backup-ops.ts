/**
 * The operational options of `backup` and what the backup pipeline gets from them:
 * a read throttle (--limit-read), live progress per container, idle I/O priority
 * (--no-ionice to keep the normal class), Prometheus metrics and hooks after the run.
 * backup.ts wires these in with a few lines; session.ts acts on the options around it.
 */
import { Option, type Command } from "commander";
import type { BackupProgress } from "../backup/pipeline.js";
import { durationSecondsOption } from "../prune/duration.js";
import { progressDisplay } from "./progress.js";
import { rateOption, readThrottle } from "../uploader/rate-limit.js";

export { recordResult } from "./session.js";

export interface BackupOpsOptions {
  limitRead?: number;
  ionice?: boolean;
  metricsFile?: string;
  hookSuccess?: string;
  hookFailure?: string;
  hookTimeout?: number;
}

export function addBackupOpsOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--limit-read <rate>", "limit image reads to RATE bytes/s (e.g. 50M), shared by all containers").argParser(rateOption("--limit-read")),
    )
    .addOption(new Option("--no-ionice", "keep the normal I/O priority (default: idle class via ionice -c3)"))
    .addOption(new Option("--metrics-file <path>", "write Prometheus textfile metrics here after the run (atomically)"))
    .addOption(new Option("--hook-success <cmd>", "run CMD with /bin/sh -c after a successful run"))
    .addOption(new Option("--hook-failure <cmd>", "run CMD with /bin/sh -c after a failed or partial run"))
    .addOption(
      new Option("--hook-timeout <duration>", "kill a hook running longer than this (e.g. 5m; a plain number is seconds)")
        .default(300, "5m")
        .argParser(durationSecondsOption("--hook-timeout", { allowZero: false })),
    );
}

export interface DiskOps {
  readThrottle?: (bytes: number) => Promise<void>;
  readBlockBytes?: number;
  onProgress?: (progress: BackupProgress) => void;
}

export interface RunOps {
  readThrottle?: (bytes: number) => Promise<void>;
  readBlockBytes?: number;
  onProgress?: (ct: string, progress: BackupProgress) => void;
}

/**
 * Under --limit-read, read in blocks of about 1/8 s of the rate (256 KiB .. 8 MiB; the
 * pipeline rounds to whole clusters), so the disk sees a steady trickle instead of a
 * full-speed 8 MiB burst every few seconds.
 */
export function throttledReadBlock(rate: number): number {
  const target = Math.min(8 << 20, Math.max(256 << 10, rate / 8));
  return 2 ** Math.floor(Math.log2(target));
}

function showProgress(ct: string, p: BackupProgress): void {
  progressDisplay()?.update(`ct:${ct}`, `CT ${ct}`, { done: p.readBytes, total: p.totalBytes, newBytes: p.newBytesStored });
}

/** For backupContainers(): per-container progress, the shared read throttle. */
export function backupRunOps(options: BackupOpsOptions): RunOps {
  const ops: RunOps = {};
  const throttle = readThrottle(options.limitRead);
  if (throttle !== undefined) {
    ops.readThrottle = throttle;
    ops.readBlockBytes = throttledReadBlock(options.limitRead!);
  }
  if (progressDisplay() !== null) ops.onProgress = showProgress;
  return ops;
}

/** For a direct backupDisk() (--disk). */
export function diskRunOps(options: BackupOpsOptions, ct: string): DiskOps {
  const ops: DiskOps = {};
  const throttle = readThrottle(options.limitRead);
  if (throttle !== undefined) {
    ops.readThrottle = throttle;
    ops.readBlockBytes = throttledReadBlock(options.limitRead!);
  }
  if (progressDisplay() !== null) ops.onProgress = (p) => showProgress(ct, p);
  return ops;
}
