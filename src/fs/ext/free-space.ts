/**
 * Which blocks of an ext2/3/4 filesystem are free, from its block bitmaps (backup
 * --skip-free, docs/skip-free.md). The rule throughout: never call free what cannot be
 * proven free. A filesystem whose bitmaps cannot be trusted is refused as a whole
 * (skipFreeRefusal), and a group whose bitmap is not initialized (BLOCK_UNINIT) counts as
 * fully used, although the kernel would compute most of it as free: its superblock copy and
 * group descriptors, and with flex_bg other groups' bitmaps and inode tables, live there.
 *
 * The arithmetic (bitmap -> free block runs -> whole free clusters of the disk) is pure;
 * readFreeBlockRuns is the one function that reads, through an ExtFilesystem.
 */
import { crc32cUpdate } from "../checksums.js";
import { FilesystemError } from "../errors.js";
import type { ExtFilesystem } from "./filesystem.js";
import { has, INCOMPAT, RO_COMPAT, type Superblock } from "./superblock.js";

/** Blocks [start, start + count) of the filesystem. */
export interface BlockRun {
  start: number;
  count: number;
}

const BG_BLOCK_UNINIT = 0x2;
const STATE_ERRORS = 0x2;

/**
 * ro_compat features under which a set bit / clear bit of the block bitmap means exactly
 * "block in use" / "block free". Unlisted ones (bigalloc: a bit per cluster of blocks;
 * has_snapshot, shared_blocks, replica, btree_dir; anything newer) are refused.
 */
const BITMAP_SAFE_RO_COMPAT =
  RO_COMPAT.SPARSE_SUPER |
  RO_COMPAT.LARGE_FILE |
  RO_COMPAT.HUGE_FILE |
  RO_COMPAT.GDT_CSUM |
  RO_COMPAT.DIR_NLINK |
  RO_COMPAT.EXTRA_ISIZE |
  0x100 /* quota */ |
  RO_COMPAT.METADATA_CSUM |
  0x1000 /* readonly */ |
  0x2000 /* project */ |
  0x8000 /* verity */ |
  0x10000; /* orphan_present: orphans' blocks stay marked in use until they are released */

const RO_COMPAT_NAMES: Record<number, string> = { 0x4: "btree_dir", 0x80: "has_snapshot", 0x200: "bigalloc", 0x800: "replica", 0x4000: "shared_blocks" };

/** Why this filesystem's bitmaps must not be used to skip anything, or null when they may. */
export function skipFreeRefusal(sb: Superblock): string | null {
  if ((sb.state & STATE_ERRORS) !== 0) return "the filesystem is marked as having errors (run e2fsck)";
  if (sb.needsRecovery) return "its journal needs recovery: the bitmaps on disk may be older than the journal";
  if (has(sb.incompat, INCOMPAT.JOURNAL_DEV)) return "it is an external journal device";
  const unsafe = sb.roCompat & ~BITMAP_SAFE_RO_COMPAT;
  if (unsafe !== 0) {
    const names: string[] = [];
    for (let bit = 1; bit !== 0 && bit <= 0x80000000; bit = (bit << 1) >>> 0)
      if ((unsafe & bit) !== 0) names.push(RO_COMPAT_NAMES[bit] ?? `ro_compat 0x${bit.toString(16)}`);
    return `unsupported feature for free-space skipping: ${names.join(", ")}`;
  }
  return null;
}

/**
 * Free runs of one group's bitmap (bit i, least significant first = block firstBlock + i),
 * limited to its first `blocks` bits; run starts are filesystem block numbers.
 */
export function freeRunsOfBitmap(bitmap: Uint8Array, firstBlock: number, blocks: number): BlockRun[] {
  if (blocks > bitmap.length * 8) throw new RangeError(`bitmap of ${bitmap.length} bytes cannot describe ${blocks} blocks`);
  const runs: BlockRun[] = [];
  let i = 0;
  while (i < blocks) {
    // whole bytes of used blocks are skipped at once: most of a full filesystem
    if ((i & 7) === 0 && bitmap[i >> 3] === 0xff) {
      i += 8;
      continue;
    }
    if ((bitmap[i >> 3]! & (1 << (i & 7))) !== 0) {
      i++;
      continue;
    }
    const start = i;
    while (i < blocks) {
      if ((i & 7) === 0 && i + 8 <= blocks && bitmap[i >> 3] === 0) i += 8;
      else if ((bitmap[i >> 3]! & (1 << (i & 7))) === 0) i++;
      else break;
    }
    runs.push({ start: firstBlock + start, count: i - start });
  }
  return runs;
}

/** Ascending runs with touching neighbours joined (a free run may cross a group boundary). */
export function joinRuns(runs: readonly BlockRun[]): BlockRun[] {
  const out: BlockRun[] = [];
  for (const r of runs) {
    if (r.count <= 0) continue;
    const last = out[out.length - 1];
    if (last !== undefined && r.start < last.start + last.count) throw new RangeError(`free runs overlap or are out of order at block ${r.start}`);
    if (last !== undefined && last.start + last.count === r.start) last.count += r.count;
    else out.push({ ...r });
  }
  return out;
}

/**
 * Mark in `free` (one byte per disk cluster) every cluster whose bytes lie entirely in
 * free blocks of a filesystem that starts at byte `fsStart` of the disk. A cluster only
 * partly free, or partly outside the filesystem, stays unmarked. Returns the clusters marked.
 */
export function markFreeClusters(
  free: Uint8Array,
  diskBytes: number,
  clusterBytes: number,
  fsStart: number,
  blockSize: number,
  runs: readonly BlockRun[],
): number {
  let marked = 0;
  for (const r of runs) {
    const from = fsStart + r.start * blockSize;
    const to = Math.min(fsStart + (r.start + r.count) * blockSize, diskBytes);
    for (let c = Math.ceil(from / clusterBytes); c < free.length && c * clusterBytes < to; c++) {
      const end = Math.min((c + 1) * clusterBytes, diskBytes);
      if (end > to) break;
      if (free[c] === 0) {
        free[c] = 1;
        marked++;
      }
    }
  }
  return marked;
}

/** Blocks the bitmap of group `g` describes: [first, first + count). */
export function groupBlocks(sb: Superblock, g: number): { first: number; count: number } {
  const first = sb.firstDataBlock + g * sb.blocksPerGroup;
  return { first, count: Math.min(sb.blocksPerGroup, sb.blocksCount - first) };
}

/**
 * Every free block run of the filesystem, from its bitmaps (checksums verified under
 * metadata_csum). Throws FilesystemError when a descriptor or bitmap is damaged; the caller
 * then skips nothing in this filesystem. Call only when skipFreeRefusal() is null.
 */
export async function readFreeBlockRuns(fs: ExtFilesystem): Promise<{ runs: BlockRun[]; uninitGroups: number }> {
  const sb = fs.sb;
  const refusal = skipFreeRefusal(sb);
  if (refusal !== null) throw new FilesystemError(`${fs.label}: ${refusal}`);
  const groupCsums = sb.metadataCsum || sb.gdtCsum;
  const all: BlockRun[] = [];
  let uninitGroups = 0;
  for (let g = 0; g < sb.groupCount; g++) {
    const desc = await fs.groupDesc(g);
    if (groupCsums && (desc.flags & BG_BLOCK_UNINIT) !== 0) {
      uninitGroups++;
      continue;
    }
    if (desc.blockBitmap === 0 || desc.blockBitmap >= sb.blocksCount)
      throw new FilesystemError(`${fs.label}: group ${g}: block bitmap at block ${desc.blockBitmap} lies outside the filesystem`);
    const bitmap = await fs.readBlock(desc.blockBitmap);
    if (sb.metadataCsum) {
      const wide = sb.descSize >= 64;
      let computed = crc32cUpdate(sb.csumSeed, bitmap, 0, sb.blocksPerGroup / 8);
      if (!wide) computed &= 0xffff;
      if (computed >>> 0 !== desc.blockBitmapCsum) throw new FilesystemError(`${fs.label}: group ${g}: block bitmap checksum mismatch`);
    }
    const { first, count } = groupBlocks(sb, g);
    all.push(...freeRunsOfBitmap(bitmap, first, count));
  }
  return { runs: joinRuns(all), uninitGroups };
}
