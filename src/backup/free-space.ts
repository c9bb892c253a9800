/**
 * backup --skip-free: the clusters of the frozen disk that lie entirely in blocks its ext
 * filesystems call free (docs/skip-free.md). They become holes of the backup: not read,
 * not chunked, not stored; a restore writes zeros there.
 *
 * Everything else is read as without the flag: partition tables, non-ext partitions, the
 * space between and after partitions, and every filesystem whose bitmaps cannot be trusted
 * (errors state, journal needing recovery, an unsupported feature, a damaged descriptor or
 * bitmap), each of which is logged in one line.
 */
import { errorLine } from "../errors.js";
import { checkRange, type BlockDevice } from "../fs/block-device.js";
import { ExtFilesystem } from "../fs/ext/filesystem.js";
import { markFreeClusters, readFreeBlockRuns, skipFreeRefusal } from "../fs/ext/free-space.js";
import { parseSuperblock, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET } from "../fs/ext/superblock.js";
import { findExtFilesystems } from "../fs/partitions.js";
import type { DataRun, LogicalDisk } from "../ploop/disk.js";

export interface FreeClusters {
  /** One byte per cluster of the disk: 1 = every byte of it is in free filesystem blocks. */
  map: Uint8Array;
  clusterBytes: number;
  /** One line per filesystem found: what was skipped, or why nothing was. */
  filesystems: string[];
}

/** The logical disk as the filesystem reader's input. */
export function logicalDiskDevice(disk: LogicalDisk): BlockDevice {
  return {
    size: disk.sizeBytes,
    async read(offset: number, length: number): Promise<Buffer> {
      checkRange({ size: disk.sizeBytes }, offset, length, disk.descriptorPath);
      const out = Buffer.alloc(length);
      await disk.read(offset, out);
      return out;
    },
  };
}

/** Find the ext filesystems of the disk and the clusters they leave entirely free. */
export async function findFreeClusters(disk: LogicalDisk, log: (line: string) => void): Promise<FreeClusters> {
  const clusterCount = Math.ceil(disk.sizeBytes / disk.clusterBytes);
  const map = new Uint8Array(clusterCount);
  const filesystems: string[] = [];
  const label = `disk ${disk.descriptorPath}`;
  const device = logicalDiskDevice(disk);
  let found;
  try {
    found = await findExtFilesystems(device, label);
  } catch (error) {
    const line = `--skip-free: reading everything: ${errorLine(error)}`;
    log(line);
    return { map, clusterBytes: disk.clusterBytes, filesystems: [line] };
  }
  const parts = [...found.table.partitions].sort((a, b) => a.start - b.start);
  const overlap = parts.findIndex((p, i) => i > 0 && p.start < parts[i - 1]!.start + parts[i - 1]!.size);
  if (overlap > 0) {
    // One filesystem's free blocks could be another partition's data.
    const line = `--skip-free: reading everything: partitions ${parts[overlap - 1]!.number} and ${parts[overlap]!.number} of ${label} overlap`;
    log(line);
    return { map, clusterBytes: disk.clusterBytes, filesystems: [line] };
  }
  if (found.found.length === 0) {
    const line = `--skip-free: reading everything: no ext2/ext3/ext4 filesystem on ${label}`;
    log(line);
    filesystems.push(line);
  }
  for (const f of found.found) {
    const start = f.partition?.start ?? 0;
    try {
      // Refusals first: a filesystem we may not skip in need not be fully readable by us.
      const sb = parseSuperblock(await f.device.read(SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES), f.device.size, `filesystem in ${f.label}`);
      const refusal = skipFreeRefusal(sb);
      if (refusal !== null) {
        const line = `--skip-free: reading all of the ${sb.kind} filesystem in ${f.label}: ${refusal}`;
        log(line);
        filesystems.push(line);
        continue;
      }
      const fs = await ExtFilesystem.open(f.device, f.label);
      const { runs, uninitGroups } = await readFreeBlockRuns(fs);
      const marked = markFreeClusters(map, disk.sizeBytes, disk.clusterBytes, start, fs.blockSize, runs);
      const freeBlocks = runs.reduce((sum, r) => sum + r.count, 0);
      const line =
        `--skip-free: ${fs.label}: ${freeBlocks} of ${fs.sb.blocksCount} blocks free, ${marked} whole clusters skipped` +
        (uninitGroups > 0 ? ` (${uninitGroups} groups with uninitialized bitmaps read as used)` : "");
      log(line);
      filesystems.push(line);
    } catch (error) {
      const line = `--skip-free: reading all of ${f.label}: ${errorLine(error)}`;
      log(line);
      filesystems.push(line);
    }
  }
  return { map, clusterBytes: disk.clusterBytes, filesystems };
}

/** The allocated runs without the free clusters (pure). */
export function withoutFreeClusters(runs: readonly DataRun[], free: Uint8Array, clusterBytes: number): DataRun[] {
  const out: DataRun[] = [];
  for (const run of runs) {
    const end = run.offset + run.length;
    let pos = run.offset;
    while (pos < end) {
      const c = Math.floor(pos / clusterBytes);
      const next = Math.min((c + 1) * clusterBytes, end);
      if (free[c] !== 1) {
        const last = out[out.length - 1];
        if (last !== undefined && last.offset + last.length === pos) last.length += next - pos;
        else out.push({ offset: pos, length: next - pos });
      }
      pos = next;
    }
  }
  return out;
}

/** Bytes of the allocated runs that the free map removes. */
export function skippedBytes(runs: readonly DataRun[], kept: readonly DataRun[]): number {
  const sum = (rs: readonly DataRun[]): number => rs.reduce((s, r) => s + r.length, 0);
  return sum(runs) - sum(kept);
}
