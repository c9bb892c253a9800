/**
 * One backup run (runBackup), the library behind `ploopvault backup`:
 *
 *   host run lock -> recovery of what a crashed run left -> discovery -> (no-incremental:
 *   release kept snapshots) -> repository -> registration (prune protocol) -> containers
 *   -> unregister
 *
 * Each container is snapshotted through its DiskDescriptor.xml, its frozen chain streamed
 * through the pipeline, and the snapshot merged back whatever happens
 * (snapshot-lifecycle.ts). Containers run with bounded parallelism; every container gets
 * its own result, a failure of one does not stop the others (exit 3 = partial success).
 * A lapsed registration stops the whole run at once: no container may publish after it.
 * `--disk` backs up stopped containers' disks directly (no snapshot, no host lock).
 */
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { errorLine, PloopvaultError } from "../errors.js";
import { forEachConcurrent } from "../util/limiter.js";
import type { BackupAnnotations } from "../manifest/format.js";
import { openLogicalDisk, type LogicalDisk } from "../ploop/disk.js";
import { PloopCli } from "./ploop-cli.js";
import { BackupRegistration } from "../prune/registration.js";
import { ManifestCache } from "../repository/known-chunks.js";
import type { Repository } from "../repository/repository.js";
import { acquireHostLock } from "./host-lock.js";
import { listContainers, resolveContainers, type ContainerInfo } from "./containers.js";
import { findContainerConfig, readDescriptorBytes, CONTAINER_CONFIG_NAME } from "./disk-source.js";
import { SnapshotJournal } from "./journal.js";
import { backupDisk, type BackupOptions, type BackupProgress, type BackupResult } from "../backup/pipeline.js";
import { ChunkWorkerPool } from "../backup/worker-processor.js";
import { FrozenChainChangedError, recoverInterrupted, recoverUnjournaled, withFrozenDisk, type FrozenDisk } from "./snapshot-lifecycle.js";
import { decideIncremental, keepSnapshot, keptDeltaEmptyAndIdle, releaseKeptSnapshot, type IncrementalDecision } from "./incremental.js";
import { descriptorChainImages, KeptSnapshots, sameStamps, stampImagesAtAndBelow, type KeptSnapshot } from "./kept-snapshot.js";
import { findFreeClusters } from "../backup/free-space.js";
import { CostTally, withCostTally } from "../util/cost-tally.js";

export interface ContainerResult {
  ct: string;
  status: "ok" | "error";
  backup?: string;
  snapshotGuid?: string;
  /** "incremental" (read only what changed since `baseBackup`) or "full". */
  mode?: "incremental" | "full";
  baseBackup?: string;
  /** Why a full read was needed, when incremental mode was on. */
  fullReason?: string;
  reusedChunks?: number;
  /** --skip-free: allocated bytes not read because their filesystem blocks are free. */
  skippedFreeBytes?: number;
  logicalBytes?: number;
  readBytes?: number;
  dataBytes?: number;
  holeBytes?: number;
  chunks?: number;
  newChunks?: number;
  newBytesStored?: number;
  seconds: number;
  error?: string;
}

export interface RunOptions {
  repo: Repository;
  cache: ManifestCache;
  ploop: PloopCli;
  journal: SnapshotJournal;
  host: string;
  /** Fixed backup time (--time); null = each container's own start time. */
  time: Date | null;
  workerThreads: number;
  uploadConcurrency: number;
  parallel: number;
  signal: AbortSignal;
  log: (line: string) => void;
  /** -v lines: each container's fixed costs (ploop calls, fsyncs, manifest reads, store requests). */
  debug?: (line: string) => void;
  /** The prune protocol's guard of each manifest PUT (the run's registration). */
  publish?: BackupRegistration;
  onResult?: (result: ContainerResult) => void;
  /** Per-container read progress (live display) and the image-read throttle (--limit-read). */
  onProgress?: (ct: string, progress: BackupProgress) => void;
  readThrottle?: (bytes: number) => Promise<void>;
  readBlockBytes?: number;
  /** Incremental mode: keep each backup's snapshot and read only what changed next time. */
  kept: KeptSnapshots | null;
  /** Read the whole disk this time even if an incremental backup is possible. */
  forceFull: boolean;
  /** Chunks stored by this run so far (shared by its containers). */
  storedThisRun?: Map<string, Promise<void>>;
  /** The run's chunk workers, kept from container to container (backupContainers makes one if absent). */
  chunkWorkers?: ChunkWorkerPool;
  /** --skip-free: store clusters the disk's ext filesystems leave free as holes. */
  skipFree?: boolean;
  /** Tags and note for every backup of the run (`backup --tag/--note`). */
  annotations?: BackupAnnotations;
}

export function resultOf(ct: string, result: BackupResult, snapshotGuid: string | null): ContainerResult {
  const { metadata } = result.manifest;
  const s = result.stats;
  return {
    ct,
    status: "ok",
    backup: metadata.id,
    ...(snapshotGuid === null ? {} : { snapshotGuid }),
    logicalBytes: metadata.disk.logicalBytes,
    readBytes: s.readBytes,
    dataBytes: s.dataBytes,
    holeBytes: s.holeBytes,
    chunks: s.chunks,
    newChunks: s.newChunks,
    newBytesStored: s.newBytesStored,
    reusedChunks: s.reusedChunks ?? 0,
    ...(metadata.freeSpace ? { skippedFreeBytes: metadata.freeSpace.skippedBytes } : {}),
    seconds: s.seconds,
  };
}

async function readConfig(path: string | null): Promise<{ name: string; body: Buffer } | null> {
  if (path === null) return null;
  try {
    return { name: CONTAINER_CONFIG_NAME, body: await readFile(path) };
  } catch {
    return null;
  }
}

export async function backupOneContainer(container: ContainerInfo, options: RunOptions): Promise<ContainerResult> {
  if (options.debug === undefined) return backupOneContainerTallied(container, options);
  const tally = new CostTally();
  const started = performance.now();
  try {
    return await withCostTally(tally, () => backupOneContainerTallied(container, options));
  } finally {
    options.debug(`container ${container.ct}: ${((performance.now() - started) / 1000).toFixed(3)} s; ${tally.summary()}`);
  }
}

async function backupOneContainerTallied(container: ContainerInfo, options: RunOptions): Promise<ContainerResult> {
  const started = performance.now();
  const { ct, descriptorPath } = container;
  try {
    const kept = options.kept ? await options.kept.get(ct) : null;
    if (kept !== null && !options.forceFull && container.status !== "running" && (await keptDeltaEmptyAndIdle(kept, descriptorPath))) {
      const again = await backupKeptSnapshotAgain(container, options, kept);
      if (again !== null) return again;
    }
    let backupId: string | null = null;
    const keepOnSuccess = options.kept
      ? async (snapshotGuid: string): Promise<void> => {
          if (backupId === null) throw new Error("no backup was written");
          await keepSnapshot(
            { ct, descriptorPath, repo: options.repo, ploop: options.ploop, journal: options.journal, kept: options.kept!, log: options.log },
            kept,
            snapshotGuid,
            backupId,
          );
        }
      : undefined;
    return await withFrozenDisk(
      {
        ct,
        descriptorPath,
        ploop: options.ploop,
        journal: options.journal,
        log: options.log,
        signal: options.signal,
        ...(keepOnSuccess ? { keepOnSuccess } : {}),
      },
      async (frozen) => {
        const disk = await openLogicalDisk(frozen.descriptorPath, { topGuid: frozen.snapshotGuid });
        try {
          let decision: IncrementalDecision | null = null;
          if (options.kept) {
            decision = options.forceFull ? { base: null, reason: "--full given" } : await decideIncremental(kept, disk, options.repo, ct);
            if (decision.base) options.log(`container ${ct}: incremental backup: reading only what changed since backup ${decision.base.backupId}`);
            else options.log(`container ${ct}: reading the whole disk: ${decision.reason}`);
          }
          const out = await backupChain(container, options, disk, frozen, decision);
          backupId = out.backup ?? null;
          return out;
        } finally {
          await disk.close();
        }
      },
    );
  } catch (error) {
    return { ct, status: "error", seconds: (performance.now() - started) / 1000, error: errorLine(error) };
  }
}

/**
 * A stopped container with nothing written since its kept snapshot S_N
 * (keptDeltaEmptyAndIdle): back up S_N's chain again, relative to backup N, without a new
 * snapshot or a merge, then point the kept record at the new backup. Null when backup N
 * cannot serve as the base: the snapshot path then reads the whole disk and says why.
 */
async function backupKeptSnapshotAgain(container: ContainerInfo, options: RunOptions, kept: KeptSnapshot): Promise<ContainerResult | null> {
  const { ct } = container;
  const descriptorPath = resolve(container.descriptorPath);
  const disk = await openLogicalDisk(descriptorPath, { topGuid: kept.snapshotGuid });
  let out: ContainerResult;
  try {
    const decision = await decideIncremental(kept, disk, options.repo, ct);
    if (decision.base === null) return null;
    options.log(
      `container ${ct}: not running and nothing written since backup ${kept.backupId}: backing up its kept snapshot ${kept.snapshotGuid} again (no new snapshot)`,
    );
    // As after a snapshot (verifyUnchanged): the images read must not have changed meanwhile.
    const verifyUnchanged = async (): Promise<void> => {
      const now = await stampImagesAtAndBelow(await descriptorChainImages(descriptorPath, kept.snapshotGuid), kept.snapshotGuid).catch(() => null);
      if (now === null || kept.frozenImages === null || !sameStamps(now, kept.frozenImages)) {
        throw new FrozenChainChangedError(
          `container ${ct}: the images at and below kept snapshot ${kept.snapshotGuid} changed during the backup (another tool rewrote the disk; the backup is not consistent)`,
        );
      }
    };
    out = await backupChain(container, options, disk, { snapshotGuid: kept.snapshotGuid, descriptorPath, verifyUnchanged }, decision);
  } finally {
    await disk.close();
  }
  // Not fsynced (and no journal entry: no snapshot was taken or merged): if a crash loses
  // this update, the record still names S_N with backup N, which stays a valid base.
  try {
    await options.kept!.put({ ...kept, backupId: out.backup!, keptAt: new Date().toISOString() }, { durable: false });
  } catch (error) {
    options.log(
      `warning: container ${ct}: cannot record backup ${out.backup} as the base of the next incremental backup (${errorLine(error)}); the next one uses ${kept.backupId}`,
    );
  }
  return out;
}

/** What a run's settings (RunOptions or a BackupRunRequest) give every backupDisk() of the run. */
type PipelineSettings = Pick<
  RunOptions,
  "host" | "time" | "workerThreads" | "uploadConcurrency" | "annotations" | "onProgress" | "readThrottle" | "readBlockBytes"
>;

/** backupDisk() options from the run's settings, for the disk of container `ct` (the rest is per kind of run). */
function pipelineOptions(settings: PipelineSettings, ct: string): Omit<BackupOptions, "signal"> {
  const { onProgress } = settings;
  return {
    host: settings.host,
    time: settings.time ?? new Date(),
    workerThreads: settings.workerThreads,
    uploadConcurrency: settings.uploadConcurrency,
    ...(settings.annotations ? { annotations: settings.annotations } : {}),
    ...(onProgress ? { onProgress: (p: BackupProgress) => onProgress(ct, p) } : {}),
    ...(settings.readThrottle ? { readThrottle: settings.readThrottle } : {}),
    ...(settings.readBlockBytes ? { readBlockBytes: settings.readBlockBytes } : {}),
  };
}

/** Back up `disk` (the frozen chain of `frozen.snapshotGuid`), relative to `decision`'s base if any. */
async function backupChain(
  container: ContainerInfo,
  options: RunOptions,
  disk: LogicalDisk,
  frozen: Pick<FrozenDisk, "snapshotGuid" | "descriptorPath" | "verifyUnchanged">,
  decision: IncrementalDecision | null,
): Promise<ContainerResult> {
  const { ct } = container;
  const result = await backupDisk(
    options.repo,
    options.cache,
    {
      disk,
      ct,
      previous: decision?.base ?? null,
      descriptorXml: await readDescriptorBytes(frozen.descriptorPath),
      containerConfig: await readConfig(container.configPath),
      snapshotGuid: frozen.snapshotGuid,
      sourceFormatVersion: disk.formatVersion,
      free: options.skipFree ? await findFreeClusters(disk, (line) => options.log(`container ${ct}: ${line}`)) : null,
    },
    {
      ...pipelineOptions(options, ct),
      ...(options.storedThisRun ? { storedThisRun: options.storedThisRun } : {}),
      ...(options.chunkWorkers ? { chunkWorkers: options.chunkWorkers } : {}),
      signal: options.signal,
      // The frozen images must not have changed while we read them (docs/ploop.md 3.6).
      beforeManifest: () => frozen.verifyUnchanged(),
      ...(options.publish ? { publish: options.publish } : {}),
    },
  );
  const out = resultOf(ct, result, frozen.snapshotGuid);
  if (decision) {
    out.mode = decision.base ? "incremental" : "full";
    if (decision.base) out.baseBackup = decision.base.backupId;
    else out.fullReason = decision.reason;
  }
  return out;
}

export async function backupContainers(containers: readonly ContainerInfo[], options: RunOptions): Promise<ContainerResult[]> {
  const results: ContainerResult[] = new Array<ContainerResult>(containers.length);
  const chunkWorkers = options.chunkWorkers ?? new ChunkWorkerPool(options.repo.chunkCodec, options.workerThreads);
  try {
    await forEachConcurrent(containers, options.parallel, async (container, index) => {
      if (options.signal.aborted) {
        results[index] = { ct: container.ct, status: "error", seconds: 0, error: `not started: ${errorLine(options.signal.reason ?? "run interrupted")}` };
      } else {
        options.log(`backing up container ${container.ct} (${container.status})`);
        results[index] = await backupOneContainer(container, { ...options, chunkWorkers });
      }
      options.onResult?.(results[index]!);
    });
  } finally {
    if (options.chunkWorkers === undefined) await chunkWorkers.close();
  }
  return results;
}

/** A stopped container's disk, read directly (`backup --disk`). */
export interface DirectDisk {
  descriptorPath: string;
  ct: string;
}

export interface BackupRunRequest {
  /** Containers by id, every container found, or disks given directly. */
  targets: { kind: "containers"; ctids: string[] } | { kind: "all" } | { kind: "disks"; disks: DirectDisk[] };
  openRepository: () => Promise<Repository>;
  stateDir: string;
  /** Seconds to wait for another run's host lock (then exit 4). */
  lockWaitSeconds: number;
  host: string;
  time: Date | null;
  incremental: boolean;
  forceFull: boolean;
  workerThreads: number;
  uploadConcurrency: number;
  parallel: number;
  ploopBin: string;
  vzlistBin: string;
  privateRoot: string;
  /** SIGINT/SIGTERM. */
  signal: AbortSignal;
  log: (line: string) => void;
  warn: (line: string) => void;
  debug: (line: string) => void;
  onResult?: (result: ContainerResult) => void;
  onProgress?: (ct: string, progress: BackupProgress) => void;
  readThrottle?: (bytes: number) => Promise<void>;
  readBlockBytes?: number;
  /** --skip-free (docs/skip-free.md). */
  skipFree?: boolean;
  /** Tags and note for every backup of the run (`backup --tag/--note`). */
  annotations?: BackupAnnotations;
}

/**
 * The whole backup run; one result per container (or disk), in order. Throws only for
 * what stops the run before any container (host lock busy, no repository, nothing found).
 */
export async function runBackup(request: BackupRunRequest): Promise<ContainerResult[]> {
  if (request.targets.kind === "disks")
    return withRegistration(request, (repo, registration, signal) =>
      backupDirectDisks(request, request.targets.kind === "disks" ? request.targets.disks : [], repo, registration, signal),
    );
  // Overlapping cron runs on one host: the second waits, then gives up with exit 4.
  const lock = await acquireHostLock(join(request.stateDir, "run.lock"), { waitSeconds: request.lockWaitSeconds });
  // The lock is gone if its flock helper dies: stop as for a signal, and say why.
  const stopIfLockLost = (): void => {
    if (lock.lost.aborted) throw lock.lost.reason;
  };
  try {
    const ploop = new PloopCli({ bin: request.ploopBin, log: request.debug, trace: request.debug });
    const journal = new SnapshotJournal(request.stateDir);
    const kept = new KeptSnapshots(request.stateDir);
    // Whatever a crashed or killed run left behind is cleaned up before anything else.
    await recoverInterrupted(journal, ploop, request.log, {
      isKept: async (ct, guid) => (await kept.get(ct))?.snapshotGuid.toLowerCase() === guid.toLowerCase(),
    });
    const discovery = { vzlistBin: request.vzlistBin, privateRoot: request.privateRoot, log: request.debug };
    // `backup 101 999`: an unknown id is that container's failure, the others are backed up (exit 3)
    const unknown: ContainerResult[] = [];
    const containers =
      request.targets.kind === "all"
        ? await listContainers(discovery)
        : await resolveContainers(request.targets.ctids, {
            ...discovery,
            onUnknown: (ct, error) => unknown.push({ ct, status: "error", seconds: 0, error: errorLine(error) }),
          });
    for (const r of unknown) request.onResult?.(r);
    if (containers.length === 0 && unknown.length > 0) return unknown;
    if (containers.length === 0)
      throw new PloopvaultError(`no containers found (vzlist "${request.vzlistBin}" or ${request.privateRoot}/*/root.hdd/DiskDescriptor.xml)`);
    // Snapshots of this state dir that no journal entry or kept record explains (lost state dir).
    await recoverUnjournaled(containers, journal, ploop, request.log, { keptGuids: new Set((await kept.list()).map((k) => k.snapshotGuid.toLowerCase())) });
    if (!request.incremental) {
      // No kept deltas in this mode: give containers back a disk without ours.
      for (const c of containers) {
        const released = await releaseKeptSnapshot({ ct: c.ct, descriptorPath: c.descriptorPath, ploop, journal, kept, log: request.log });
        if (released) request.log(`container ${c.ct}: kept snapshot ${released} of an earlier incremental backup merged (--no-incremental)`);
      }
    }
    stopIfLockLost();
    const results = await withRegistration({ ...request, signal: AbortSignal.any([request.signal, lock.lost]) }, (repo, registration, signal) =>
      backupContainers(containers, {
        publish: registration,
        repo,
        cache: ManifestCache.forRun(repo, request.stateDir),
        ploop,
        journal,
        host: request.host,
        time: request.time,
        workerThreads: request.workerThreads,
        uploadConcurrency: request.uploadConcurrency,
        parallel: request.parallel,
        signal,
        log: request.log,
        debug: request.debug,
        kept: request.incremental ? kept : null,
        forceFull: request.forceFull,
        storedThisRun: new Map<string, Promise<void>>(),
        skipFree: request.skipFree === true,
        ...(request.annotations ? { annotations: request.annotations } : {}),
        ...(request.onResult ? { onResult: request.onResult } : {}),
        ...(request.onProgress ? { onProgress: request.onProgress } : {}),
        ...(request.readThrottle ? { readThrottle: request.readThrottle } : {}),
        ...(request.readBlockBytes ? { readBlockBytes: request.readBlockBytes } : {}),
      }),
    );
    stopIfLockLost();
    return [...unknown, ...results];
  } finally {
    await lock.release();
  }
}

/**
 * Open the repository and register the run with it (prune protocol, docs/prune.md)
 * before anything reads what the repository holds; the run's signal also fires when the
 * registration lapses, so every container stops at once.
 */
async function withRegistration(
  request: BackupRunRequest,
  body: (repo: Repository, registration: BackupRegistration, signal: AbortSignal) => Promise<ContainerResult[]>,
): Promise<ContainerResult[]> {
  const repo = await request.openRepository();
  try {
    return await withBackupRegistration(repo, request, (registration, signal) => body(repo, registration, signal));
  } finally {
    await repo.close();
  }
}

/**
 * Run `body` registered with the repository like a backup (prune protocol,
 * docs/prune.md): the registration is written before `body` reads anything the
 * repository holds, and `signal` also fires when it lapses. Object lock: the config and
 * keys are kept retained for this run first. Used by backup and copy.
 */
export async function withBackupRegistration<T>(
  repo: Repository,
  options: { host: string; signal: AbortSignal; log: (line: string) => void; warn: (line: string) => void },
  body: (registration: BackupRegistration, signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const registration = await BackupRegistration.start(repo, options.host, { log: options.log, warn: options.warn });
  try {
    await repo.keepRepositoryRetained();
    return await body(registration, AbortSignal.any([options.signal, registration.signal]));
  } finally {
    if (!(await registration.stop())) {
      options.warn(
        `backup registration ${registration.key} lapsed during the run: every backup published before it was checked when its manifest landed; the others failed`,
      );
    }
  }
}

async function backupDirectDisks(
  request: BackupRunRequest,
  disks: readonly DirectDisk[],
  repo: Repository,
  registration: BackupRegistration,
  signal: AbortSignal,
): Promise<ContainerResult[]> {
  const results: ContainerResult[] = [];
  const storedThisRun = new Map<string, Promise<void>>();
  const cache = ManifestCache.forRun(repo, request.stateDir);
  const chunkWorkers = new ChunkWorkerPool(repo.chunkCodec, request.workerThreads);
  if (request.workerThreads > 0) chunkWorkers.prestart(); // every disk given is read
  try {
    for (const { descriptorPath, ct } of disks) {
      const started = performance.now();
      let result: ContainerResult;
      try {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new PloopvaultError("run interrupted");
        const disk = await openLogicalDisk(descriptorPath);
        try {
          if (disk.inUseImages.length > 0) {
            throw new PloopvaultError(
              `${disk.inUseImages[0]}: image is marked in use (container running, or not shut down cleanly); back up a running container by CTID so a snapshot is taken, or run "ploop check" on a stopped one`,
            );
          }
          const backup = await backupDisk(
            repo,
            cache,
            {
              disk,
              ct,
              descriptorXml: await readDescriptorBytes(descriptorPath),
              containerConfig: await findContainerConfig(descriptorPath),
              snapshotGuid: null,
              sourceFormatVersion: disk.formatVersion,
              free: request.skipFree ? await findFreeClusters(disk, (line) => request.log(`disk ${ct}: ${line}`)) : null,
            },
            { ...pipelineOptions(request, ct), storedThisRun, chunkWorkers, signal, publish: registration },
          );
          result = resultOf(ct, backup, null);
        } finally {
          await disk.close();
        }
      } catch (error) {
        result = { ct, status: "error", seconds: (performance.now() - started) / 1000, error: errorLine(error) };
      }
      results.push(result);
      request.onResult?.(result);
    }
  } finally {
    await chunkWorkers.close();
  }
  return results;
}
