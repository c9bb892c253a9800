/**
 * The filesystem inside a backup, read lazily from the repository: the backup's logical
 * disk (LazyBackupDisk: only the chunks that reads touch are fetched), its partition
 * table, and the ext2/3/4 filesystem found there.
 */
import { findExtFilesystem, findExtFilesystems, type FoundFilesystem } from "../fs/partitions.js";
import { ExtFilesystem } from "../fs/ext/filesystem.js";
import { decodeManifest, type Manifest } from "../manifest/format.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { resolveBackup } from "../restore/resolve.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { LazyBackupDisk, type LazyDiskOptions, type LazyDiskStats } from "../restore/lazy-disk.js";

export interface BackupFilesystem {
  ref: BackupRef;
  disk: LazyBackupDisk;
  fs: ExtFilesystem;
  found: FoundFilesystem;
}

export interface OpenBackupFsOptions extends LazyDiskOptions {
  /** Partition number (default: the only partition holding an ext filesystem). */
  partition?: number;
}

export function backupLabel(ref: BackupRef): string {
  return `backup ${ref.ct}/${ref.id}`;
}

export async function openBackupFilesystem(repo: Repository, ref: BackupRef, manifest: Manifest, options: OpenBackupFsOptions = {}): Promise<BackupFilesystem> {
  const disk = new LazyBackupDisk(repo, ref, manifest, options);
  const found = await findExtFilesystem(disk, backupLabel(ref), options.partition);
  const fs = await ExtFilesystem.open(found.device, found.label);
  return { ref, disk, fs, found };
}

/** Every ext filesystem of a backup's disk (check --fs), sharing one lazy disk. */
export async function openBackupFilesystems(
  repo: Repository,
  ref: BackupRef,
  manifest: Manifest,
  options: LazyDiskOptions = {},
): Promise<{ disk: LazyBackupDisk; found: FoundFilesystem[] }> {
  const disk = new LazyBackupDisk(repo, ref, manifest, options);
  const { found } = await findExtFilesystems(disk, backupLabel(ref));
  return { disk, found };
}

/** What --json results report about the repository reads. */
export function fetchStats(stats: LazyDiskStats): { chunksFetched: number; bytesFetched: number; cacheHits: number } {
  return { chunksFetched: stats.chunksFetched, bytesFetched: stats.bytesFetched, cacheHits: stats.cacheHits };
}

/**
 * Resolve BACKUP (as restore does: ID or prefix, CT, CT:latest, CT/ID, HOST/CT:latest,
 * with --host as a filter), load its manifest through the manifest cache in the state
 * directory, and open its filesystem.
 */
export async function openBackupFilesystemBySpec(
  repo: Repository,
  spec: string,
  stateDir: string,
  options: OpenBackupFsOptions & { host?: string } = {},
): Promise<BackupFilesystem> {
  const cache = ManifestCache.forRepository(repo, stateDir);
  const ref = await resolveBackup(repo, spec, { metadata: (r) => cache.metadata(r), ...(options.host === undefined ? {} : { host: options.host }) });
  const manifest = decodeManifest(await cache.manifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
  return openBackupFilesystem(repo, ref, manifest, options);
}

export async function loadBackupManifest(repo: Repository, ref: BackupRef, stateDir: string): Promise<Manifest> {
  const cache = ManifestCache.forRepository(repo, stateDir);
  return decodeManifest(await cache.manifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
}
