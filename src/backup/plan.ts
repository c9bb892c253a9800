/**
 * What a backup must read: a pure plan over the logical disk, in disk order.
 *  - full backup: every allocated run is read and chunked; gaps are holes.
 *  - incremental: chunks of the previous backup that lie entirely in clusters nobody wrote
 *    since its snapshot are reused as they are; only the rest of each allocated run is
 *    read and re-chunked. The re-read segments start and end at old chunk boundaries (or
 *    run ends), so the chunker restarts exactly where a full chunking could have cut.
 * Allocation only grows above a snapshot (a delta cannot unallocate a lower cluster), so
 * every old chunk lies inside one current allocated run.
 * An old chunk shorter than the chunker's minimum (the tail of an earlier read segment or
 * run) is read again rather than reused: short chunks then never pile up across backups,
 * which bounds a manifest's entries by its geometry (maxManifestEntries, manifest/format.ts).
 */
import type { ManifestEntry } from "../manifest/format.js";
import type { DataRun } from "../ploop/disk.js";

export type ChunkEntry = Extract<ManifestEntry, { kind: "chunk" }>;

export type Segment =
  | { kind: "hole"; offset: number; length: number }
  | { kind: "reuse"; entry: ChunkEntry }
  | { kind: "read"; offset: number; length: number };

export interface PreviousBackup {
  entries: readonly ManifestEntry[];
  /** One byte per cluster: 1 = written since the previous backup's snapshot. */
  written: Uint8Array;
  clusterBytes: number;
}

export function planBackup(runs: readonly DataRun[], sizeBytes: number, previous: PreviousBackup | null, minChunkBytes: number): Segment[] {
  const plan: Segment[] = [];
  const oldChunks = previous ? previous.entries.filter((e): e is ChunkEntry => e.kind === "chunk") : [];
  let k = 0;
  let logical = 0;
  for (const run of runs) {
    if (run.offset > logical) plan.push({ kind: "hole", offset: logical, length: run.offset - logical });
    const end = run.offset + run.length;
    let pos = run.offset;
    if (previous) {
      while (k < oldChunks.length && oldChunks[k]!.offset < run.offset) k++;
      for (; k < oldChunks.length && oldChunks[k]!.offset < end; k++) {
        const entry = oldChunks[k]!;
        if (entry.offset + entry.length > end || entry.length < minChunkBytes || !isClean(entry, previous)) continue;
        if (entry.offset > pos) plan.push({ kind: "read", offset: pos, length: entry.offset - pos });
        plan.push({ kind: "reuse", entry });
        pos = entry.offset + entry.length;
      }
    }
    if (end > pos) plan.push({ kind: "read", offset: pos, length: end - pos });
    logical = end;
  }
  if (sizeBytes > logical) plan.push({ kind: "hole", offset: logical, length: sizeBytes - logical });
  return plan;
}

function isClean(entry: ChunkEntry, previous: PreviousBackup): boolean {
  const first = Math.floor(entry.offset / previous.clusterBytes);
  const last = Math.floor((entry.offset + entry.length - 1) / previous.clusterBytes);
  for (let c = first; c <= last; c++) if (previous.written[c] === 1) return false;
  return true;
}

/**
 * The previous backup with every chunk the repository is not known to hold (a missing or
 * damaged chunk) counted as written: the plan re-reads exactly those chunks' data, and
 * the backup uploads them again instead of referencing what is gone.
 */
export function withUnknownChunksRewritten(previous: PreviousBackup, isKnown: (id: Buffer) => boolean): PreviousBackup {
  let written: Uint8Array | null = null;
  for (const e of previous.entries) {
    if (e.kind !== "chunk" || isKnown(e.id)) continue;
    written ??= Uint8Array.from(previous.written);
    const first = Math.floor(e.offset / previous.clusterBytes);
    const last = Math.floor((e.offset + e.length - 1) / previous.clusterBytes);
    for (let c = first; c <= last && c < written.length; c++) written[c] = 1;
  }
  return written === null ? previous : { ...previous, written };
}

/**
 * The blocks the read segments of `plan` are read in, in plan order: a segment's first
 * block starts at a confirmed cut, so its first candidate chunk may be encoded with the
 * scan (encodeFrom 0); in the others the stitcher usually re-cuts it, so encoding it ahead
 * would be in vain (encodeFrom 1).
 */
export function readBlocksOf(plan: readonly Segment[], blockBytes: number): { at: number; size: number; encodeFrom: number }[] {
  const blocks: { at: number; size: number; encodeFrom: number }[] = [];
  for (const segment of plan) {
    if (segment.kind !== "read") continue;
    const end = segment.offset + segment.length;
    for (let at = segment.offset; at < end; at += blockBytes)
      blocks.push({ at, size: Math.min(blockBytes, end - at), encodeFrom: at === segment.offset ? 0 : 1 });
  }
  return blocks;
}
