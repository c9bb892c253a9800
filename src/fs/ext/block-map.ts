/**
 * Where a file's blocks are: the extent tree of ext4 and the block map of ext2/ext3, both
 * turned into runs of consecutive blocks in logical order. Holes are the gaps between runs.
 *
 * Hostile metadata cannot make this loop or blow up: an extent tree is at most 5 levels
 * deep, each child one level below its parent, no tree block is visited twice (a DAG of
 * repeated children would otherwise multiply the work), extents must come in increasing
 * logical order without overlap, and every physical block must lie inside the filesystem.
 * A block map is walked only up to the file's size, and no indirect block twice.
 */
import { crc32cUpdate } from "../checksums.js";
import { FilesystemError } from "../errors.js";

export interface Run {
  /** First logical block of the file. */
  logical: number;
  /** First physical block of the filesystem. */
  physical: number;
  length: number;
  /** Allocated but never written (fallocate): reads as zeros. */
  unwritten: boolean;
}

export interface MapContext {
  blockSize: number;
  blocksCount: number;
  readBlock(block: number): Promise<Buffer>;
  /** Seed of the inode's extent block checksums, or null without metadata_csum. */
  inodeCsumSeed: number | null;
  /** "ext4 ...: inode 12" */
  label: string;
  /** Told of every extent tree and indirect block (check --fs marks them as used). */
  onMapBlock?: (block: number) => void;
}

export const EXTENT_MAGIC = 0xf30a;
const MAX_EXTENT_DEPTH = 5;
/** ee_len above this marks an unwritten extent of (ee_len - 32768) blocks. */
const EXT_INIT_MAX_LEN = 32768;

interface Header {
  entries: number;
  max: number;
  depth: number;
}

function header(ctx: MapContext, node: Buffer, capacity: number, where: string): Header {
  if (node.readUInt16LE(0) !== EXTENT_MAGIC)
    throw new FilesystemError(`${ctx.label}: ${where}: bad extent header magic 0x${node.readUInt16LE(0).toString(16)}`);
  const entries = node.readUInt16LE(2);
  const max = node.readUInt16LE(4);
  const depth = node.readUInt16LE(6);
  if (max > capacity || entries > max)
    throw new FilesystemError(`${ctx.label}: ${where}: extent header claims ${entries} of ${max} entries (room for ${capacity})`);
  return { entries, max, depth };
}

function checkPhysical(ctx: MapContext, start: number, length: number, what: string): void {
  if (start === 0 || start + length > ctx.blocksCount) {
    throw new FilesystemError(`${ctx.label}: ${what} at block ${start} (+${length}) lies outside the filesystem (${ctx.blocksCount} blocks)`);
  }
}

/**
 * Runs of an extent-mapped inode whose i_block is `root`, up to logical block `endBlock`
 * (exclusive; blocks past the size, e.g. preallocated with KEEP_SIZE, are not data).
 */
export async function* extentRuns(ctx: MapContext, root: Buffer, endBlock: number): AsyncGenerator<Run> {
  const rootHeader = header(ctx, root, 4, "extent tree root");
  if (rootHeader.depth > MAX_EXTENT_DEPTH) throw new FilesystemError(`${ctx.label}: extent tree depth ${rootHeader.depth} exceeds ${MAX_EXTENT_DEPTH}`);
  const visited = new Set<number>();
  let nextLogical = 0;
  const blockCapacity = Math.floor((ctx.blockSize - 12) / 12);

  async function* walk(node: Buffer, h: Header, lowerBound: number, upperBound: number): AsyncGenerator<Run> {
    if (h.depth === 0) {
      for (let i = 0; i < h.entries; i++) {
        const at = 12 + 12 * i;
        const logical = node.readUInt32LE(at);
        let length = node.readUInt16LE(at + 4);
        const unwritten = length > EXT_INIT_MAX_LEN;
        if (unwritten) length -= EXT_INIT_MAX_LEN;
        const physical = node.readUInt16LE(at + 6) * 2 ** 32 + node.readUInt32LE(at + 8);
        if (length === 0) throw new FilesystemError(`${ctx.label}: extent of length 0 at logical block ${logical}`);
        if (logical < nextLogical || logical < lowerBound || logical + length > upperBound) {
          throw new FilesystemError(`${ctx.label}: extents out of order or overlapping at logical block ${logical}`);
        }
        checkPhysical(ctx, physical, length, "extent");
        nextLogical = logical + length;
        if (logical >= endBlock) return;
        yield { logical, physical, length: Math.min(length, endBlock - logical), unwritten };
      }
      return;
    }
    let previous = -1;
    for (let i = 0; i < h.entries; i++) {
      const at = 12 + 12 * i;
      const logical = node.readUInt32LE(at);
      const child = node.readUInt16LE(at + 8) * 2 ** 32 + node.readUInt32LE(at + 4);
      if (logical <= previous || logical < lowerBound || logical >= upperBound) {
        throw new FilesystemError(`${ctx.label}: extent index out of order at logical block ${logical}`);
      }
      previous = logical;
      if (logical >= endBlock) return;
      const childUpper = i + 1 < h.entries ? Math.min(upperBound, node.readUInt32LE(at + 12)) : upperBound;
      checkPhysical(ctx, child, 1, "extent tree block");
      if (visited.has(child)) throw new FilesystemError(`${ctx.label}: extent tree visits block ${child} twice (a loop or a shared subtree)`);
      visited.add(child);
      ctx.onMapBlock?.(child);
      const block = await ctx.readBlock(child);
      const where = `extent tree block ${child}`;
      const ch = header(ctx, block, blockCapacity, where);
      if (ch.depth !== h.depth - 1) throw new FilesystemError(`${ctx.label}: ${where}: depth ${ch.depth} under a node of depth ${h.depth}`);
      if (ctx.inodeCsumSeed !== null) {
        const tail = 12 + 12 * ch.max;
        if (tail + 4 > ctx.blockSize) throw new FilesystemError(`${ctx.label}: ${where}: no room for its checksum`);
        const crc = crc32cUpdate(ctx.inodeCsumSeed, block, 0, tail);
        if (crc !== block.readUInt32LE(tail)) throw new FilesystemError(`${ctx.label}: ${where}: checksum mismatch`);
      }
      yield* walk(block, ch, logical, childUpper);
    }
  }

  yield* walk(root, rootHeader, 0, 2 ** 32);
}

/**
 * Runs of a block-mapped inode (ext2/ext3): 12 direct pointers, then single, double and
 * triple indirect blocks. A zero pointer is a hole (a whole subtree for an indirect one).
 */
export async function* blockMapRuns(ctx: MapContext, iblock: Buffer, endBlock: number): AsyncGenerator<Run> {
  const perBlock = ctx.blockSize / 4;
  const visited = new Set<number>();
  let pending: Run | null = null;

  function* emit(logical: number, physical: number): Generator<Run> {
    if (pending !== null && pending.logical + pending.length === logical && pending.physical + pending.length === physical) {
      pending.length++;
      return;
    }
    if (pending !== null) yield pending;
    pending = { logical, physical, length: 1, unwritten: false };
  }

  async function* indirect(block: number, level: number, firstLogical: number): AsyncGenerator<Run> {
    checkPhysical(ctx, block, 1, `indirect block (level ${level})`);
    if (visited.has(block)) throw new FilesystemError(`${ctx.label}: block map uses indirect block ${block} twice`);
    visited.add(block);
    ctx.onMapBlock?.(block);
    const data = await ctx.readBlock(block);
    const span = perBlock ** (level - 1);
    for (let i = 0; i < perBlock; i++) {
      const logical = firstLogical + i * span;
      if (logical >= endBlock) return;
      const pointer = data.readUInt32LE(4 * i);
      if (pointer === 0) continue;
      if (level === 1) {
        checkPhysical(ctx, pointer, 1, "data block");
        yield* emit(logical, pointer);
      } else {
        yield* indirect(pointer, level - 1, logical);
      }
    }
  }

  for (let i = 0; i < 12 && i < endBlock; i++) {
    const pointer = iblock.readUInt32LE(4 * i);
    if (pointer === 0) continue;
    checkPhysical(ctx, pointer, 1, "data block");
    yield* emit(i, pointer);
  }
  let first = 12;
  for (let level = 1; level <= 3 && first < endBlock; level++) {
    const pointer = iblock.readUInt32LE(4 * (11 + level));
    if (pointer !== 0) yield* indirect(pointer, level, first);
    first += perBlock ** level;
  }
  if (pending !== null) yield pending;
}
