/**
 * Directory blocks: linear entries (inode, rec_len, name_len, file_type, name), read the
 * same way for plain and hash-indexed (htree) directories. An htree's index blocks look
 * like one unused entry spanning the block (or, in block 0, "." and ".." with the index
 * hidden in ".."'s record), so a linear read skips them and sees every leaf entry exactly
 * once: reading never needs the name hash. With metadata_csum a leaf block ends in a
 * 12-byte checksum entry and an index block in a dx tail; both are verified.
 *
 * Every record must lie inside its block, names must not contain "/" or NUL (a restore
 * must never be steered out of its target), and "." / ".." entries are never returned.
 */
import { crc32cUpdate } from "../checksums.js";
import { FilesystemError } from "../errors.js";

export interface DirEntry {
  name: Buffer;
  ino: number;
  /** Type hint from the entry (1 file, 2 dir, 3 chardev, 4 blockdev, 5 fifo, 6 socket, 7 symlink; 0 unknown). */
  fileType: number;
}

export interface DirContext {
  blockSize: number;
  /** The filetype feature: name_len is one byte and the next byte the file type. */
  fileTypeField: boolean;
  inodesCount: number;
  /** Per-inode checksum seed of the directory, or null without metadata_csum. */
  inodeCsumSeed: number | null;
  label: string;
}

const TAIL_BYTES = 12;
const TAIL_FILE_TYPE = 0xde;

function recLen(raw: number, blockSize: number): number {
  if (blockSize < 65536) return raw;
  if (raw === 65535 || raw === 0) return blockSize;
  return (raw & 65532) | ((raw & 3) << 16);
}

/**
 * The block ends in a checksum entry (inode 0, rec_len 12, name_len 0, type 0xde), looked
 * for at its fixed place as the kernel does: damage earlier in the block must not hide it.
 */
function hasLeafTail(block: Buffer, blockSize: number): boolean {
  const top = blockSize - TAIL_BYTES;
  return block.readUInt32LE(top) === 0 && block.readUInt16LE(top + 4) === TAIL_BYTES && block[top + 6] === 0 && block[top + 7] === TAIL_FILE_TYPE;
}

/** Offset of an htree block's count/limit (8 in an index node, 32 in the root), or -1. */
function dxCountOffset(block: Buffer, blockSize: number): number {
  const first = recLen(block.readUInt16LE(4), blockSize);
  if (first === blockSize && block.readUInt16LE(6) === 0) return 8;
  if (first !== 12) return -1;
  if (recLen(block.readUInt16LE(12 + 4), blockSize) !== blockSize - 12) return -1;
  if (block.readUInt32LE(24) !== 0 || block[24 + 5] !== 8) return -1;
  return 32;
}

function verifyChecksum(ctx: DirContext, block: Buffer, where: string): number {
  const seed = ctx.inodeCsumSeed!;
  if (hasLeafTail(block, ctx.blockSize)) {
    const top = ctx.blockSize - TAIL_BYTES;
    if (crc32cUpdate(seed, block, 0, top) !== block.readUInt32LE(top + 8)) throw new FilesystemError(`${ctx.label}: ${where}: checksum mismatch`);
    return top;
  }
  const countAt = dxCountOffset(block, ctx.blockSize);
  if (countAt < 0) throw new FilesystemError(`${ctx.label}: ${where}: no checksum (neither a directory leaf nor an index block)`);
  const limit = block.readUInt16LE(countAt);
  const count = block.readUInt16LE(countAt + 2);
  const tailAt = countAt + 8 * limit;
  if (count > limit || tailAt + 8 > ctx.blockSize) throw new FilesystemError(`${ctx.label}: ${where}: htree index claims ${count} of ${limit} entries`);
  let crc = crc32cUpdate(seed, block, 0, countAt + 8 * count);
  crc = crc32cUpdate(crc, block, tailAt, tailAt + 4);
  crc = crc32cUpdate(crc, Buffer.alloc(4));
  if (crc !== block.readUInt32LE(tailAt + 4)) throw new FilesystemError(`${ctx.label}: ${where}: htree index checksum mismatch`);
  return ctx.blockSize;
}

/** Entries of records in region [start, end) of `data` (a block, or an inline-data area). */
export function parseEntries(ctx: DirContext, data: Buffer, start: number, end: number, where: string, out: DirEntry[]): void {
  let at = start;
  while (at < end) {
    if (end - at < 8) throw new FilesystemError(`${ctx.label}: ${where}: truncated directory entry at offset ${at}`);
    const ino = data.readUInt32LE(at);
    const len = recLen(data.readUInt16LE(at + 4), ctx.blockSize);
    const nameLen = ctx.fileTypeField ? data[at + 6]! : data.readUInt16LE(at + 6);
    if (len < 8 || len % 4 !== 0 || at + len > end) throw new FilesystemError(`${ctx.label}: ${where}: bad directory record length ${len} at offset ${at}`);
    if (ino !== 0) {
      if (nameLen === 0 || nameLen + 8 > len) throw new FilesystemError(`${ctx.label}: ${where}: bad name length ${nameLen} at offset ${at}`);
      if (ino > ctx.inodesCount) throw new FilesystemError(`${ctx.label}: ${where}: entry points to inode ${ino}, beyond the ${ctx.inodesCount} inodes`);
      const name = data.subarray(at + 8, at + 8 + nameLen);
      const dot = name.length <= 2 && name.every((c) => c === 0x2e);
      if (!dot) {
        if (name.includes(0x2f) || name.includes(0)) throw new FilesystemError(`${ctx.label}: ${where}: entry name contains "/" or NUL at offset ${at}`);
        out.push({ name: Buffer.from(name), ino, fileType: ctx.fileTypeField ? data[at + 7]! & 7 : 0 });
      }
    }
    at += len;
  }
}

/** Entries of one directory block (checksum verified first). */
export function parseDirBlock(ctx: DirContext, block: Buffer, where: string, out: DirEntry[]): void {
  const end = ctx.inodeCsumSeed === null ? ctx.blockSize : verifyChecksum(ctx, block, where);
  parseEntries(ctx, block, 0, end, where, out);
}

/**
 * Entries of an inline-data directory: i_block holds the parent's inode number and then
 * records up to its 60 bytes; the system.data xattr continues with more records.
 */
export function parseInlineDir(ctx: DirContext, iblock: Buffer, extra: Buffer | null, out: DirEntry[]): void {
  parseEntries(ctx, iblock, 4, 60, "inline directory", out);
  if (extra !== null && extra.length > 0) parseEntries(ctx, extra, 0, extra.length, "inline directory (system.data)", out);
}
