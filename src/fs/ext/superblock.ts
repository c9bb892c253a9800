/**
 * The ext2/3/4 superblock (1024 bytes at byte 1024 of the filesystem): geometry, feature
 * flags and the checksum seed. Parsing is pure; every field later used as a size, a count
 * or an offset is range-checked here, so the rest of the reader can trust it.
 *
 * Features: the incompat flags this reader understands are listed in READABLE_INCOMPAT;
 * any other incompat flag fails with one line naming it (as the kernel refuses to mount).
 * ro_compat flags never change how data is read, so all are accepted (we only read).
 */
import { crc32cUpdate } from "../checksums.js";
import { FilesystemError, UnsupportedFilesystemError } from "../errors.js";

export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_BYTES = 1024;
export const EXT_MAGIC = 0xef53;

export const COMPAT = { HAS_JOURNAL: 0x4, EXT_ATTR: 0x8, RESIZE_INODE: 0x10, DIR_INDEX: 0x20, SPARSE_SUPER2: 0x200 } as const;
export const RO_COMPAT = {
  SPARSE_SUPER: 0x1,
  LARGE_FILE: 0x2,
  HUGE_FILE: 0x8,
  GDT_CSUM: 0x10,
  DIR_NLINK: 0x20,
  EXTRA_ISIZE: 0x40,
  BIGALLOC: 0x200,
  METADATA_CSUM: 0x400,
} as const;
export const INCOMPAT = {
  COMPRESSION: 0x1,
  FILETYPE: 0x2,
  RECOVER: 0x4,
  JOURNAL_DEV: 0x8,
  META_BG: 0x10,
  EXTENTS: 0x40,
  BIT64: 0x80,
  MMP: 0x100,
  FLEX_BG: 0x200,
  EA_INODE: 0x400,
  DIRDATA: 0x1000,
  CSUM_SEED: 0x2000,
  LARGEDIR: 0x4000,
  INLINE_DATA: 0x8000,
  ENCRYPT: 0x10000,
  CASEFOLD: 0x20000,
} as const;

const INCOMPAT_NAMES: Record<number, string> = {
  0x1: "compression",
  0x8: "journal_dev (this is an external journal, not a filesystem)",
  0x1000: "dirdata (Lustre)",
};

/**
 * Readable: FILETYPE, RECOVER (read as is: see needsRecovery), META_BG, EXTENTS, 64BIT,
 * MMP, FLEX_BG, EA_INODE, CSUM_SEED, LARGEDIR, INLINE_DATA, CASEFOLD (names are stored as
 * written; lookups compare bytes), ENCRYPT (unencrypted files are readable; an encrypted
 * inode is refused when reached).
 */
const READABLE_INCOMPAT =
  INCOMPAT.FILETYPE |
  INCOMPAT.RECOVER |
  INCOMPAT.META_BG |
  INCOMPAT.EXTENTS |
  INCOMPAT.BIT64 |
  INCOMPAT.MMP |
  INCOMPAT.FLEX_BG |
  INCOMPAT.EA_INODE |
  INCOMPAT.CSUM_SEED |
  INCOMPAT.LARGEDIR |
  INCOMPAT.INLINE_DATA |
  INCOMPAT.CASEFOLD |
  INCOMPAT.ENCRYPT;

export interface Superblock {
  inodesCount: number;
  blocksCount: number;
  firstDataBlock: number;
  blockSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  groupCount: number;
  inodeSize: number;
  firstIno: number;
  revLevel: number;
  descSize: number;
  compat: number;
  roCompat: number;
  incompat: number;
  firstMetaBg: number;
  backupBgs: [number, number];
  uuid: Buffer;
  volumeName: string;
  /** Seed of every metadata_csum checksum (crc32c of the UUID, or s_checksum_seed). */
  csumSeed: number;
  metadataCsum: boolean;
  gdtCsum: boolean;
  /** The journal holds transactions not yet written to their place (see docs/file-restore.md). */
  needsRecovery: boolean;
  state: number;
  lastMountTime: number;
  lastWriteTime: number;
  /** "ext2", "ext3" or "ext4", as blkid would call it. */
  kind: "ext2" | "ext3" | "ext4";
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Parse and validate a superblock; `deviceBytes` bounds the filesystem's claimed size. */
export function parseSuperblock(b: Buffer, deviceBytes: number, label: string): Superblock {
  const fail = (what: string): FilesystemError => new FilesystemError(`${label}: superblock: ${what}`);
  if (b.length < SUPERBLOCK_BYTES) throw fail("truncated");
  if (b.readUInt16LE(0x38) !== EXT_MAGIC) throw fail("no ext2/ext3/ext4 magic number");
  const roCompat = b.readUInt32LE(0x64);
  const metadataCsum = (roCompat & RO_COMPAT.METADATA_CSUM) !== 0;
  if (metadataCsum) {
    if (b[0x175] !== 1) throw new UnsupportedFilesystemError(`${label}: metadata checksum type ${b[0x175]} (only crc32c exists)`);
    const computed = crc32cUpdate(0xffffffff, b, 0, 0x3fc);
    if (computed !== b.readUInt32LE(0x3fc))
      throw fail(`checksum mismatch (stored 0x${b.readUInt32LE(0x3fc).toString(16)}, computed 0x${computed.toString(16)})`);
  }
  const revLevel = b.readUInt32LE(0x4c);
  if (revLevel > 1) throw new UnsupportedFilesystemError(`${label}: ext revision level ${revLevel}`);
  const compat = revLevel === 0 ? 0 : b.readUInt32LE(0x5c);
  const incompat = revLevel === 0 ? 0 : b.readUInt32LE(0x60);
  const unknown = incompat & ~READABLE_INCOMPAT;
  if (unknown !== 0) {
    const names: string[] = [];
    for (let bit = 1; bit !== 0 && bit <= 0x80000000; bit = (bit << 1) >>> 0) {
      if ((unknown & bit) !== 0) names.push(INCOMPAT_NAMES[bit] ?? `incompat feature 0x${bit.toString(16)}`);
    }
    throw new UnsupportedFilesystemError(`${label}: unsupported filesystem feature: ${names.join(", ")}`);
  }
  const logBlock = b.readUInt32LE(0x18);
  if (logBlock > 6) throw fail(`block size 1024 << ${logBlock} out of range`);
  const blockSize = 1024 << logBlock;
  const is64 = (incompat & INCOMPAT.BIT64) !== 0;
  const blocksCount = b.readUInt32LE(0x4) + (is64 ? b.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstDataBlock = b.readUInt32LE(0x14);
  const blocksPerGroup = b.readUInt32LE(0x20);
  const inodesPerGroup = b.readUInt32LE(0x28);
  const inodesCount = b.readUInt32LE(0x0);
  if (firstDataBlock !== (blockSize === 1024 ? 1 : 0) && firstDataBlock !== 0) throw fail(`first data block ${firstDataBlock} out of range`);
  if (!Number.isSafeInteger(blocksCount * blockSize) || blocksCount <= firstDataBlock) throw fail(`block count ${blocksCount} out of range`);
  if (blocksCount * blockSize > deviceBytes) {
    throw fail(`the filesystem claims ${blocksCount * blockSize} bytes (${blocksCount} blocks) but its disk or partition has ${deviceBytes}`);
  }
  const bigalloc = (roCompat & RO_COMPAT.BIGALLOC) !== 0;
  if (blocksPerGroup === 0 || (!bigalloc && blocksPerGroup > blockSize * 8) || blocksPerGroup % 8 !== 0)
    throw fail(`blocks per group ${blocksPerGroup} out of range`);
  if (inodesPerGroup === 0 || inodesPerGroup > blockSize * 8) throw fail(`inodes per group ${inodesPerGroup} out of range`);
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  if (inodesCount === 0 || inodesCount > groupCount * inodesPerGroup) throw fail(`inode count ${inodesCount} out of range for ${groupCount} groups`);
  const inodeSize = revLevel === 0 ? 128 : b.readUInt16LE(0x58);
  if (!isPowerOfTwo(inodeSize) || inodeSize < 128 || inodeSize > blockSize) throw fail(`inode size ${inodeSize} out of range`);
  const firstIno = revLevel === 0 ? 11 : b.readUInt32LE(0x54);
  if (firstIno < 11 || firstIno > inodesCount) throw fail(`first inode ${firstIno} out of range`);
  let descSize = 32;
  if (is64) {
    descSize = b.readUInt16LE(0xfe);
    if (!isPowerOfTwo(descSize) || descSize < 64 || descSize > 1024) throw fail(`group descriptor size ${descSize} out of range`);
  }
  const uuid = Buffer.from(b.subarray(0x68, 0x78));
  const csumSeed = (incompat & INCOMPAT.CSUM_SEED) !== 0 ? b.readUInt32LE(0x270) : crc32cUpdate(0xffffffff, uuid);
  const hasJournal = (compat & COMPAT.HAS_JOURNAL) !== 0;
  const ext4ish =
    (incompat & (INCOMPAT.EXTENTS | INCOMPAT.BIT64 | INCOMPAT.FLEX_BG | INCOMPAT.INLINE_DATA)) !== 0 ||
    (roCompat & (RO_COMPAT.HUGE_FILE | RO_COMPAT.METADATA_CSUM | RO_COMPAT.GDT_CSUM)) !== 0;
  const nul = b.indexOf(0, 0x78);
  return {
    inodesCount,
    blocksCount,
    firstDataBlock,
    blockSize,
    blocksPerGroup,
    inodesPerGroup,
    groupCount,
    inodeSize,
    firstIno,
    revLevel,
    descSize,
    compat,
    roCompat,
    incompat,
    firstMetaBg: b.readUInt32LE(0x104),
    backupBgs: [b.readUInt32LE(0x24c), b.readUInt32LE(0x250)],
    uuid,
    volumeName: b.toString("utf8", 0x78, nul >= 0 && nul < 0x88 ? nul : 0x88),
    csumSeed,
    metadataCsum,
    gdtCsum: !metadataCsum && (roCompat & RO_COMPAT.GDT_CSUM) !== 0,
    needsRecovery: (incompat & INCOMPAT.RECOVER) !== 0,
    state: b.readUInt16LE(0x3a),
    lastMountTime: b.readUInt32LE(0x2c),
    lastWriteTime: b.readUInt32LE(0x30),
    kind: ext4ish ? "ext4" : hasJournal ? "ext3" : "ext2",
  };
}

/** Does group `g` hold a superblock backup (and so the group descriptors after it)? */
export function groupHasSuperblock(sb: Superblock, g: number): boolean {
  if (g === 0) return true;
  if ((sb.compat & COMPAT.SPARSE_SUPER2) !== 0) return g === sb.backupBgs[0] || g === sb.backupBgs[1];
  if (g <= 1 || (sb.roCompat & RO_COMPAT.SPARSE_SUPER) === 0) return true;
  if ((g & 1) === 0) return false;
  const isPower = (n: number, base: number): boolean => {
    let x = base;
    while (x < n) x *= base;
    return x === n;
  };
  return isPower(g, 3) || isPower(g, 5) || isPower(g, 7);
}

export function has(flags: number, bit: number): boolean {
  return (flags & bit) !== 0;
}
