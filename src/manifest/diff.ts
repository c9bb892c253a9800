/**
 * Which byte ranges of a disk differ between two backups (`ploopvault diff`), from the
 * manifests alone (nothing is downloaded). Pure.
 *
 * The two entry lists are walked together over the logical disk. A stretch is the same
 * in both when both are holes, or both are the same chunk (same id) at the same offset;
 * anything else is reported as changed. Chunks are content-defined, so unchanged data
 * keeps its cut points and shows as the same chunk, and a change shows as the chunks
 * around it (a few hundred KiB at the default average): the ranges are at chunk
 * granularity and may include bytes that happen to be equal (e.g. a chunk of zeros where
 * the other backup has a hole). A disk that grew or shrank adds the tail as changed.
 */
import type { ManifestEntry } from "./format.js";

export interface ByteRange {
  offset: number;
  length: number;
}

export interface ManifestDiff {
  fromBytes: number;
  toBytes: number;
  /** Sorted, non-overlapping, adjacent ranges merged. */
  ranges: ByteRange[];
  changedBytes: number;
  /** Chunks of `to` that `from` does not reference (anywhere) and their data bytes. */
  newChunks: number;
  newChunkBytes: number;
}

export function diffEntries(from: readonly ManifestEntry[], fromBytes: number, to: readonly ManifestEntry[], toBytes: number): ManifestDiff {
  const ranges: ByteRange[] = [];
  const add = (offset: number, end: number): void => {
    if (end <= offset) return;
    const last = ranges[ranges.length - 1];
    if (last !== undefined && last.offset + last.length === offset) last.length += end - offset;
    else ranges.push({ offset, length: end - offset });
  };
  const common = Math.min(fromBytes, toBytes);
  let i = 0;
  let j = 0;
  let pos = 0;
  while (pos < common) {
    const a = from[i];
    const b = to[j];
    if (a === undefined || b === undefined) throw new Error(`diff: entries end before ${common} bytes`);
    const aEnd = a.offset + a.length;
    const bEnd = b.offset + b.length;
    const end = Math.min(aEnd, bEnd, common);
    const same = a.kind === "hole" ? b.kind === "hole" : b.kind === "chunk" && a.offset === b.offset && a.id.equals(b.id);
    if (!same) add(pos, end);
    pos = end;
    if (aEnd <= pos) i++;
    if (bEnd <= pos) j++;
  }
  add(common, Math.max(fromBytes, toBytes));

  const known = new Set<string>();
  for (const e of from) if (e.kind === "chunk") known.add(e.id.toString("hex"));
  let newChunks = 0;
  let newChunkBytes = 0;
  for (const e of to) {
    if (e.kind !== "chunk") continue;
    const id = e.id.toString("hex");
    if (known.has(id)) continue;
    known.add(id);
    newChunks++;
    newChunkBytes += e.length;
  }
  return { fromBytes, toBytes, ranges, changedBytes: ranges.reduce((sum, r) => sum + r.length, 0), newChunks, newChunkBytes };
}
