/**
 * An ext2/3/4 inode as read from the inode table: type, permissions, owner, size, times
 * (with the extra nanosecond and epoch bits of large inodes), flags, and the 60-byte
 * i_block area whose meaning depends on the flags (extent tree root, block map, inline
 * data, fast symlink target, device number). Parsing is pure.
 */
import { crc32cUpdate, le32 } from "../checksums.js";

export type FileType = "file" | "dir" | "symlink" | "chardev" | "blockdev" | "fifo" | "socket";

const TYPE_BITS: Record<number, FileType> = {
  0x1000: "fifo",
  0x2000: "chardev",
  0x4000: "dir",
  0x6000: "blockdev",
  0x8000: "file",
  0xa000: "symlink",
  0xc000: "socket",
};

export const INODE_FLAGS = {
  COMPRESSED: 0x4,
  INDEX: 0x1000,
  HUGE_FILE: 0x40000,
  EXTENTS: 0x80000,
  VERITY: 0x100000,
  EA_INODE: 0x200000,
  INLINE_DATA: 0x10000000,
  ENCRYPT: 0x800,
  CASEFOLD: 0x40000000,
} as const;

export interface Timestamp {
  /** Seconds since the epoch (may be negative, may exceed 2038 with the epoch bits). */
  sec: number;
  nsec: number;
}

export interface Inode {
  ino: number;
  /** Type and permission bits as stored (st_mode). */
  mode: number;
  type: FileType | null;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  permissions: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  flags: number;
  generation: number;
  /** Block of the external xattr block (0: none). */
  fileAcl: number;
  /** 512-byte sectors (or blocks with HUGE_FILE) used, for du-like figures. */
  blocks512: number;
  atime: Timestamp;
  mtime: Timestamp;
  ctime: Timestamp;
  crtime: Timestamp | null;
  dtime: number;
  /** i_block: extent root, block map, inline data, fast symlink or device number. */
  iblock: Buffer;
  /** Bytes after the 128-byte base (i_extra_isize), 0 for small inodes. */
  extraIsize: number;
  /** The whole on-disk inode (in-inode xattrs live after the extra fields). */
  raw: Buffer;
}

function time(raw: Buffer, baseAt: number, extraAt: number | null): Timestamp {
  let sec = raw.readInt32LE(baseAt);
  let nsec = 0;
  if (extraAt !== null) {
    const extra = raw.readUInt32LE(extraAt);
    // the two low bits extend the signed 32-bit seconds (years 1901..2446), the rest are ns
    sec += (extra & 3) * 2 ** 32;
    nsec = extra >>> 2;
    if (nsec > 999_999_999) nsec = 0;
  }
  return { sec, nsec };
}

/**
 * Parse an on-disk inode. `hugeFileFs`: the filesystem has huge_file (i_blocks in fs
 * blocks for inodes flagged HUGE_FILE). Field sanity (sizes within the disk, extra_isize
 * within the inode) is checked by the caller that knows the geometry.
 */
export function parseInode(ino: number, raw: Buffer, blockSize: number, hugeFileFs: boolean): Inode {
  const mode = raw.readUInt16LE(0);
  const flags = raw.readUInt32LE(0x20);
  const extraIsize = raw.length > 128 ? raw.readUInt16LE(0x80) : 0;
  const has = (fieldEnd: number): boolean => raw.length > 128 && 128 + extraIsize >= fieldEnd;
  let blocks = raw.readUInt32LE(0x1c) + (hugeFileFs ? raw.readUInt16LE(0x74) * 2 ** 32 : 0);
  if (hugeFileFs && (flags & INODE_FLAGS.HUGE_FILE) !== 0) blocks *= blockSize / 512;
  return {
    ino,
    mode,
    type: TYPE_BITS[mode & 0xf000] ?? null,
    permissions: mode & 0o7777,
    uid: raw.readUInt16LE(0x2) + raw.readUInt16LE(0x78) * 65536,
    gid: raw.readUInt16LE(0x18) + raw.readUInt16LE(0x7a) * 65536,
    size: raw.readUInt32LE(0x4) + raw.readUInt32LE(0x6c) * 2 ** 32,
    links: raw.readUInt16LE(0x1a),
    flags,
    generation: raw.readUInt32LE(0x64),
    fileAcl: raw.readUInt32LE(0x68) + raw.readUInt16LE(0x76) * 2 ** 32,
    blocks512: blocks,
    atime: time(raw, 0x8, has(0x94) ? 0x8c : null),
    ctime: time(raw, 0xc, has(0x88) ? 0x84 : null),
    mtime: time(raw, 0x10, has(0x90) ? 0x88 : null),
    crtime: has(0x98) ? time(raw, 0x90, 0x94) : null,
    dtime: raw.readUInt32LE(0x14),
    iblock: raw.subarray(0x28, 0x28 + 60),
    extraIsize,
    raw,
  };
}

/**
 * metadata_csum of an inode: crc32c over (inode number, generation, the inode with its
 * checksum fields zeroed); the high 16 bits only when i_extra_isize covers i_checksum_hi.
 */
export function inodeChecksumOk(csumSeed: number, ino: number, raw: Buffer): boolean {
  const hasHi = raw.length > 128 && raw.readUInt16LE(0x80) >= 4;
  const copy = Buffer.from(raw);
  copy.writeUInt16LE(0, 0x7c);
  if (hasHi) copy.writeUInt16LE(0, 0x82);
  let crc = crc32cUpdate(csumSeed, le32(ino));
  crc = crc32cUpdate(crc, copy, 0x64, 0x68); // i_generation
  crc = crc32cUpdate(crc, copy);
  let stored = raw.readUInt16LE(0x7c);
  if (hasHi) stored |= raw.readUInt16LE(0x82) << 16;
  else crc &= 0xffff;
  if (stored >>> 0 === crc >>> 0) return true;
  // an all-zero base inode (never written) is valid, as e2fsprogs accepts it
  return raw.subarray(0, 128).every((x) => x === 0);
}

/** Seed of the per-inode checksums (extent blocks, directory blocks). */
export function inodeCsumSeed(csumSeed: number, ino: number, generation: number): number {
  return crc32cUpdate(crc32cUpdate(csumSeed, le32(ino)), le32(generation));
}

/** Major and minor number of a device inode (old 8:8 or new 12:20 encoding in i_block). */
export function deviceNumbers(inode: Inode): { major: number; minor: number } {
  const old = inode.iblock.readUInt32LE(0);
  if (old !== 0) return { major: (old >>> 8) & 0xff, minor: old & 0xff };
  const dev = inode.iblock.readUInt32LE(4);
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}
