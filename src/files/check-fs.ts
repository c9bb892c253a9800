/**
 * `check --fs [BACKUP...]`: the filesystem walk of src/fs/fsck.ts over backups read lazily
 * from the repository (only metadata chunks are fetched), for the given backups or, by
 * default, the newest backup of every container. Every ext filesystem of a disk is
 * checked. A disk without one, or whose filesystem cannot be opened (a damaged
 * superblock), is reported, never skipped silently.
 */
import { PloopvaultError } from "../errors.js";
import { ExtFilesystem } from "../fs/ext/filesystem.js";
import { FilesystemError, UnsupportedFilesystemError } from "../fs/errors.js";
import { checkFilesystem, type FsCheckReport } from "../fs/fsck.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { resolveBackup } from "../restore/resolve.js";
import { backupLabel, fetchStats, loadBackupManifest, openBackupFilesystems } from "./backup-fs.js";

export interface BackupFsCheck {
  ct: string;
  /** The host that made the backup. */
  host: string;
  backup: string;
  /** When the backup was taken (ISO 8601 UTC). */
  time: string;
  status: "ok" | "damaged" | "unsupported";
  filesystems: FsCheckReport[];
  errorCount: number;
  /** Why the disk could not be walked at all (no ext filesystem, a damaged superblock). */
  problem?: string;
  chunksFetched: number;
  bytesFetched: number;
  seconds: number;
}

export interface CheckFsOptions {
  stateDir: string;
  /** Only backups of this container (check --ct). */
  ct?: string;
  /** Only backups made on this host (check --host; also how BACKUP arguments resolve). */
  host?: string;
  maxErrors?: number;
  onBackup?: (result: BackupFsCheck) => void;
  onProgress?: (label: string, inodes: number) => void;
}

/**
 * The backups to check: as given (BACKUP arguments, resolved as restore does), or the
 * newest backup of every container of every host (several nodes share a repository and
 * container ids repeat across them), narrowed by `filter` (--ct, --host; given backups resolve on --host).
 */
export async function backupsToCheck(
  repo: Repository,
  specs: readonly string[],
  stateDir: string,
  filter: { ct?: string; host?: string } = {},
): Promise<BackupRef[]> {
  const cache = ManifestCache.forRepository(repo, stateDir);
  const metadata = (r: BackupRef) => cache.metadata(r);
  if (specs.length > 0) {
    const refs: BackupRef[] = [];
    for (const s of specs) refs.push(await resolveBackup(repo, s, { metadata, ...(filter.host === undefined ? {} : { host: filter.host }) }));
    return refs;
  }
  const newest = new Map<string, BackupRef>();
  // sorted by container, then id (= time): the last one of a (host, container) is its newest
  for (const ref of await repo.listBackups(filter.ct)) {
    const host = (await cache.metadata(ref)).host;
    if (filter.host === undefined || host === filter.host) newest.set(`${host}\0${ref.ct}`, ref);
  }
  return [...newest.values()];
}

export async function checkBackupFilesystem(repo: Repository, ref: BackupRef, options: CheckFsOptions): Promise<BackupFsCheck> {
  const started = performance.now();
  const manifest = await loadBackupManifest(repo, ref, options.stateDir);
  const { disk, found } = await openBackupFilesystems(repo, ref, manifest);
  const result: BackupFsCheck = {
    ct: ref.ct,
    host: manifest.metadata.host,
    backup: ref.id,
    time: manifest.metadata.time,
    status: "ok",
    filesystems: [],
    errorCount: 0,
    chunksFetched: 0,
    bytesFetched: 0,
    seconds: 0,
  };
  if (found.length === 0) {
    result.status = "unsupported";
    result.problem = `no ext2/ext3/ext4 filesystem found on the disk of ${backupLabel(ref)}`;
  }
  for (const f of found) {
    try {
      const fs = await ExtFilesystem.open(f.device, f.label);
      const report = await checkFilesystem(fs, { maxErrors: options.maxErrors ?? 100, onProgress: (n) => options.onProgress?.(f.label, n) });
      result.filesystems.push(report);
      result.errorCount += report.errorCount;
    } catch (error) {
      if (error instanceof UnsupportedFilesystemError) {
        result.status = "unsupported";
        result.problem = error.message;
      } else if (error instanceof FilesystemError || (error instanceof PloopvaultError && error.name === "IntegrityError")) {
        result.errorCount++;
        result.problem = error.message;
      } else {
        throw error;
      }
    }
  }
  if (result.status === "ok" && result.errorCount > 0) result.status = "damaged";
  Object.assign(result, fetchStats(disk.stats));
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

export async function checkBackupFilesystems(repo: Repository, specs: readonly string[], options: CheckFsOptions): Promise<BackupFsCheck[]> {
  const results: BackupFsCheck[] = [];
  for (const ref of await backupsToCheck(repo, specs, options.stateDir, options)) {
    const r = await checkBackupFilesystem(repo, ref, options);
    options.onBackup?.(r);
    results.push(r);
  }
  return results;
}
