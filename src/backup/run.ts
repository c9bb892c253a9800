/**
 * One backup run over several containers: each one is snapshotted through its
 * DiskDescriptor.xml, its frozen chain streamed through the pipeline, and the snapshot
 * merged back whatever happens (snapshot-lifecycle.ts). Containers run with bounded
 * parallelism; every container gets its own result, a failure of one does not stop the
 * others (exit 3 = partial success).
 */
import { readFile } from "node:fs/promises";
import { errorLine } from "../errors.js";
import { openLogicalDisk } from "../ploop/disk.js";
import type { PloopCli } from "../ploop/driver.js";
import type { ManifestCache } from "../repository/known-chunks.js";
import type { Repository } from "../repository/repository.js";
import type { ContainerInfo } from "./containers.js";
import { readDescriptorBytes, CONTAINER_CONFIG_NAME } from "./disk-source.js";
import type { SnapshotJournal } from "./journal.js";
import { backupDisk, type BackupProgress, type BackupResult } from "./pipeline.js";
import { withFrozenDisk } from "./snapshot-lifecycle.js";
import { decideIncremental, keepSnapshot } from "./incremental.js";
import type { KeptSnapshots } from "./kept-snapshot.js";

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
  beforeManifest?: () => Promise<void>;
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
  const started = performance.now();
  const { ct, descriptorPath } = container;
  const kept = options.kept ? await options.kept.get(ct) : null;
  let backupId: string | null = null;
  const keepOnSuccess = options.kept
    ? async (snapshotGuid: string): Promise<void> => {
        if (backupId === null) throw new Error("no backup was written");
        await keepSnapshot({ ct, descriptorPath, repo: options.repo, ploop: options.ploop, journal: options.journal, kept: options.kept!, log: options.log }, kept, snapshotGuid, backupId);
      }
    : undefined;
  try {
    return await withFrozenDisk(
      { ct, descriptorPath, ploop: options.ploop, journal: options.journal, log: options.log, signal: options.signal, ...(keepOnSuccess ? { keepOnSuccess } : {}) },
      async (frozen) => {
        const disk = await openLogicalDisk(frozen.descriptorPath, { topGuid: frozen.snapshotGuid });
        try {
          let decision: Awaited<ReturnType<typeof decideIncremental>> | null = null;
          if (options.kept) {
            decision = options.forceFull ? { base: null, reason: "--full given" } : await decideIncremental(kept, disk, options.repo, ct);
            if (decision.base) options.log(`container ${ct}: incremental backup: reading only what changed since backup ${decision.base.backupId}`);
            else options.log(`container ${ct}: reading the whole disk: ${decision.reason}`);
          }
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
            },
            {
              host: options.host,
              time: options.time ?? new Date(),
              workerThreads: options.workerThreads,
              uploadConcurrency: options.uploadConcurrency,
              storedThisRun: options.storedThisRun,
              signal: options.signal,
              ...(options.onProgress ? { onProgress: (p: BackupProgress) => options.onProgress!(ct, p) } : {}),
              ...(options.readThrottle ? { readThrottle: options.readThrottle } : {}),
              ...(options.readBlockBytes ? { readBlockBytes: options.readBlockBytes } : {}),
              // The frozen images must not have changed while we read them (ploop.md 3.6).
              beforeManifest: async () => {
                await frozen.verifyUnchanged();
                await options.beforeManifest?.();
              },
            },
          );
          backupId = result.manifest.metadata.id;
          const out = resultOf(ct, result, frozen.snapshotGuid);
          if (decision) {
            out.mode = decision.base ? "incremental" : "full";
            if (decision.base) out.baseBackup = decision.base.backupId;
            else out.fullReason = decision.reason;
          }
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

export async function backupContainers(containers: readonly ContainerInfo[], options: RunOptions): Promise<ContainerResult[]> {
  const results: ContainerResult[] = new Array<ContainerResult>(containers.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < containers.length) {
      const index = next++;
      const container = containers[index]!;
      if (options.signal.aborted) {
        results[index] = { ct: container.ct, status: "error", seconds: 0, error: "not started: run interrupted" };
      } else {
        options.log(`backing up container ${container.ct} (${container.status})`);
        results[index] = await backupOneContainer(container, options);
      }
      options.onResult?.(results[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.parallel, containers.length)) }, worker));
  return results;
}
