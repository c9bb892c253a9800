/**
 * Incremental backups from the ploop delta (rolling snapshot, docs/ploop.md 3.9).
 * After backup N its snapshot S_N is kept; the container writes into the delta above it.
 * Backup N+1 takes S_{N+1}: the images between S_N and S_{N+1} list exactly the clusters
 * written in between, so only those (and the chunks around them) are read; everything else
 * is taken from backup N's manifest. Then S_N is merged away, so the chain holds the
 * container's own images + one kept delta (+ one more during a backup).
 * Whenever the chain is not what the last backup left, the backup reads the whole disk
 * and says why.
 */
import { errorLine } from "../errors.js";
import type { LogicalDisk } from "../ploop/disk.js";
import type { PloopCli } from "./ploop-cli.js";
import type { Repository } from "../repository/repository.js";
import type { SnapshotJournal } from "./journal.js";
import { descriptorChainImages, sameStamps, stampImagesAtAndBelow, type KeptSnapshot, type KeptSnapshots } from "./kept-snapshot.js";
import type { PreviousBackup } from "../backup/plan.js";
import { openLogicalDisk } from "../ploop/disk.js";
import { mergeChildOf } from "./snapshot-lifecycle.js";

export type IncrementalBase = PreviousBackup & { backupId: string; snapshotGuid: string };

export type IncrementalDecision = { base: IncrementalBase; reason: null } | { base: null; reason: string };

/** Can the disk (opened at the new snapshot) be backed up relative to the kept snapshot? */
export async function decideIncremental(kept: KeptSnapshot | null, disk: LogicalDisk, repo: Repository, ct: string): Promise<IncrementalDecision> {
  const full = (reason: string): IncrementalDecision => ({ base: null, reason });
  if (kept === null) return full("no kept snapshot from an earlier backup (first backup of this container here)");
  if (kept.repositoryId !== repo.config.id) return full(`the kept snapshot ${kept.snapshotGuid} belongs to another repository`);
  if (kept.descriptorPath !== disk.descriptorPath) return full(`the disk moved (${kept.descriptorPath} -> ${disk.descriptorPath})`);
  const written = disk.clustersWrittenAbove(kept.snapshotGuid);
  if (written === null) return full(`the kept snapshot ${kept.snapshotGuid} is no longer in the disk's chain (merged or deleted by an admin)`);
  if (kept.frozenImages === null) return full("the images below the kept snapshot were not recorded after the last backup");
  const stamps = await stampImagesAtAndBelow(disk.images, kept.snapshotGuid);
  if (stamps === null || !sameStamps(stamps, kept.frozenImages)) return full("the images at or below the kept snapshot changed since the last backup");
  let manifest;
  try {
    manifest = await repo.loadManifest({ ct, id: kept.backupId });
  } catch (error) {
    return full(`the previous backup ${ct}/${kept.backupId} cannot be used (${errorLine(error)})`);
  }
  const m = manifest.metadata;
  if (m.source.snapshotGuid?.toLowerCase() !== kept.snapshotGuid.toLowerCase())
    return full(`the previous backup ${kept.backupId} was not taken from the kept snapshot`);
  if (m.disk.logicalBytes !== disk.sizeBytes) return full(`the disk was resized (${m.disk.logicalBytes} -> ${disk.sizeBytes} bytes)`);
  if (m.disk.clusterBytes !== disk.clusterBytes) return full("the cluster size changed");
  const p = repo.config.chunker;
  if (m.chunker.minSize !== p.minSize || m.chunker.avgSize !== p.avgSize || m.chunker.maxSize !== p.maxSize || m.chunker.algorithm !== p.algorithm) {
    return full("the previous backup used other chunking parameters");
  }
  return {
    base: { entries: manifest.entries, written, clusterBytes: disk.clusterBytes, backupId: kept.backupId, snapshotGuid: kept.snapshotGuid },
    reason: null,
  };
}

export interface KeepContext {
  ct: string;
  descriptorPath: string;
  repo: Repository;
  ploop: PloopCli;
  journal: SnapshotJournal;
  kept: KeptSnapshots;
  log: (line: string) => void;
}

/**
 * After backup N+1 (manifest written): record S_{N+1} as kept, then merge S_N away.
 * Order for crash safety: S_N is journaled for merging before the kept record moves to
 * S_{N+1}; recovery never merges the snapshot the kept record names.
 */
export async function keepSnapshot(ctx: KeepContext, previous: KeptSnapshot | null, snapshotGuid: string, backupId: string): Promise<void> {
  const { ct, descriptorPath, journal, ploop, log } = ctx;
  const old = previous !== null && previous.descriptorPath === descriptorPath && previous.snapshotGuid !== snapshotGuid ? previous.snapshotGuid : null;
  let oldPresent = false;
  if (old !== null) {
    oldPresent = (await descriptorChainImages(descriptorPath).catch(() => [])).some((i) => i.guid === old);
    if (oldPresent) await journal.record({ ct, descriptorPath, snapshotGuid: old, state: "merging", mergeChild: await mergeChildOf(descriptorPath, old) });
  }
  const record: KeptSnapshot = {
    version: 1,
    ct,
    repositoryId: ctx.repo.config.id,
    descriptorPath,
    snapshotGuid,
    backupId,
    frozenImages: null,
    keptAt: new Date().toISOString(),
  };
  await ctx.kept.put(record);
  await journal.remove(snapshotGuid);
  if (old !== null && oldPresent) {
    try {
      await ploop.snapshotDelete(descriptorPath, old);
      await journal.remove(old);
      log(`container ${ct}: previous kept snapshot ${old} merged`);
    } catch (error) {
      // The backup is valid; the journal keeps `old` and the next run's recovery merges it.
      log(`warning: container ${ct}: previous kept snapshot ${old} could not be merged yet (${errorLine(error)}); the next run retries`);
      return;
    }
  }
  // Not fsynced: if a crash loses it, the record above (frozenImages null) or none is left,
  // and the next backup reads the whole disk (docs/incremental.md); nothing is merged wrongly.
  const frozenImages = await stampImagesAtAndBelow(await descriptorChainImages(descriptorPath, snapshotGuid), snapshotGuid);
  await ctx.kept.put({ ...record, frozenImages }, { durable: false });
}

/** Give the container back its disk without our kept delta (before a resize, compact...). */
export async function releaseKeptSnapshot(ctx: Omit<KeepContext, "repo">): Promise<string | null> {
  const { ct, journal, ploop } = ctx;
  const kept = await ctx.kept.get(ct);
  if (kept === null) return null;
  const disk = await openLogicalDisk(kept.descriptorPath).catch(() => null);
  const present = disk?.images.some((i) => i.guid === kept.snapshotGuid) ?? false;
  await disk?.close();
  if (present) {
    await journal.record({
      ct,
      descriptorPath: kept.descriptorPath,
      snapshotGuid: kept.snapshotGuid,
      state: "merging",
      mergeChild: await mergeChildOf(kept.descriptorPath, kept.snapshotGuid),
    });
    await ctx.kept.remove(ct);
    await ploop.snapshotDelete(kept.descriptorPath, kept.snapshotGuid);
    await journal.remove(kept.snapshotGuid);
  } else {
    await ctx.kept.remove(ct);
  }
  return kept.snapshotGuid;
}

/**
 * A stopped container whose kept delta is still empty: its disk holds exactly what the
 * kept snapshot S_N froze, which backup N read. Then backup N+1 is taken from S_N's chain
 * again, without a new snapshot and without merging S_N (no ploop call, no journal entry:
 * the chain is not touched, so a crash at any point leaves nothing to recover). True only if
 *   - the live top is the only image above S_N (the chain the previous run left),
 *   - no image of the chain is in use: the kernel marks the top image in use while it has it
 *     open read-write (docs/ploop.md 1.7), so the container is not running, and no write can
 *     sit in its page cache that a snapshot (which freezes the filesystem) would have
 *     flushed; a running container always takes the snapshot path,
 *   - the top's BAT allocates no cluster: nothing was written since S_N, and the disk
 *     still has S_N's size.
 * The images at and below S_N are checked as usual (decideIncremental, and again before the
 * manifest). If the container starts right after this check, the backup is its disk as of
 * the check: a state the disk really had.
 */
export async function keptDeltaEmptyAndIdle(kept: KeptSnapshot, descriptorPath: string): Promise<boolean> {
  let live: LogicalDisk;
  try {
    live = await openLogicalDisk(descriptorPath);
  } catch {
    return false; // the snapshot path reports what is wrong
  }
  try {
    const k = live.images.findIndex((image) => image.guid === kept.snapshotGuid.toLowerCase());
    if (k < 0 || k !== live.images.length - 2 || live.inUseImages.length > 0) return false;
    if (live.sizeBytes !== live.images[k]!.sizeBytes) return false; // resized since S_N
    return live.clustersWrittenAbove(kept.snapshotGuid)?.every((written) => written === 0) === true;
  } finally {
    await live.close();
  }
}
