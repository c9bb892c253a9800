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
import { backupDisk, type BackupResult } from "./pipeline.js";
import { withFrozenDisk } from "./snapshot-lifecycle.js";

export interface ContainerResult {
  ct: string;
  status: "ok" | "error";
  backup?: string;
  snapshotGuid?: string;
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
  try {
    return await withFrozenDisk(
      { ct: container.ct, descriptorPath: container.descriptorPath, ploop: options.ploop, journal: options.journal, log: options.log, signal: options.signal },
      async (frozen) => {
        const disk = await openLogicalDisk(frozen.descriptorPath, { topGuid: frozen.snapshotGuid });
        try {
          const result = await backupDisk(
            options.repo,
            options.cache,
            {
              disk,
              ct: container.ct,
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
              signal: options.signal,
              // The frozen images must not have changed while we read them (ploop.md 3.6).
              beforeManifest: async () => {
                await frozen.verifyUnchanged();
                await options.beforeManifest?.();
              },
            },
          );
          return resultOf(container.ct, result, frozen.snapshotGuid);
        } finally {
          await disk.close();
        }
      },
    );
  } catch (error) {
    return { ct: container.ct, status: "error", seconds: (performance.now() - started) / 1000, error: errorLine(error) };
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
