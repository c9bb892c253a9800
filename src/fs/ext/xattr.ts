/**
 * Extended attributes, in the inode (after i_extra_isize) and in one external block
 * (i_file_acl). Names are stored as an index (user., trusted., security., ...) plus a
 * suffix; POSIX ACLs are stored in ext4's compact form and returned here in the form
 * getxattr(2) returns (version 2, 8-byte entries), as e2fsprogs does. Values may live in
 * their own inode (ea_inode feature): those are returned as a reference the caller reads.
 *
 * system.data is not an attribute users see: it is the tail of an inline-data file or
 * directory, returned separately.
 */
import { crc32cUpdate, le64 } from "../checksums.js";
import { FilesystemError } from "../errors.js";

export const XATTR_MAGIC = 0xea020000;

const PREFIXES: Record<number, string> = {
  1: "user.",
  2: "system.posix_acl_access",
  3: "system.posix_acl_default",
  4: "trusted.",
  6: "security.",
  7: "system.",
  8: "system.richacl",
  10: "gnu.",
};

export interface RawXattr {
  name: string;
  /** The value, or null when it lives in inode `valueInode`. */
  value: Buffer | null;
  valueInode: number;
  valueSize: number;
}

export interface Xattr {
  name: string;
  value: Buffer;
}

/**
 * Entries of one xattr area. `entriesAt`..`end` is where entries may be; value offsets
 * count from `valuesBase` (the first entry in an inode, the block start in a block).
 */
export function parseXattrEntries(data: Buffer, entriesAt: number, end: number, valuesBase: number, where: string, out: RawXattr[]): void {
  let at = entriesAt;
  while (at + 4 <= end && data.readUInt32LE(at) !== 0) {
    if (at + 16 > end) throw new FilesystemError(`${where}: truncated xattr entry at offset ${at}`);
    const nameLen = data[at]!;
    const index = data[at + 1]!;
    const valueOffs = data.readUInt16LE(at + 2);
    const valueInode = data.readUInt32LE(at + 4);
    const valueSize = data.readUInt32LE(at + 8);
    if (at + 16 + nameLen > end) throw new FilesystemError(`${where}: xattr name runs past its area at offset ${at}`);
    const suffix = data.toString("latin1", at + 16, at + 16 + nameLen);
    const prefix = PREFIXES[index];
    at += (16 + nameLen + 3) & ~3;
    if (prefix === undefined) continue; // an index no tool can name: not readable through getxattr either
    const name = prefix.endsWith(".") ? prefix + suffix : prefix;
    if (valueInode !== 0) {
      out.push({ name, value: null, valueInode, valueSize });
      continue;
    }
    const from = valuesBase + valueOffs;
    if (valueSize > 0 && (valueSize > data.length || from + valueSize > data.length)) {
      throw new FilesystemError(`${where}: value of xattr ${name} (${valueSize} bytes at ${valueOffs}) lies outside its area`);
    }
    out.push({ name, value: Buffer.from(data.subarray(from, from + valueSize)), valueInode: 0, valueSize });
  }
}

/** In-inode xattrs: after the 128-byte base and i_extra_isize, behind a magic number. */
export function inodeXattrs(raw: Buffer, extraIsize: number, where: string): RawXattr[] {
  const out: RawXattr[] = [];
  const start = 128 + extraIsize;
  if (raw.length <= 128 || start + 4 > raw.length) return out;
  if (extraIsize % 4 !== 0) throw new FilesystemError(`${where}: i_extra_isize ${extraIsize} not a multiple of 4`);
  if (raw.readUInt32LE(start) !== XATTR_MAGIC) return out;
  parseXattrEntries(raw, start + 4, raw.length, start + 4, `${where} (in-inode xattrs)`, out);
  return out;
}

/** Xattrs of an external block (checksum verified with metadata_csum: seed, block number). */
export function blockXattrs(block: Buffer, blockNumber: number, csumSeed: number | null, where: string): RawXattr[] {
  if (block.readUInt32LE(0) !== XATTR_MAGIC) throw new FilesystemError(`${where}: bad xattr block magic 0x${block.readUInt32LE(0).toString(16)}`);
  if (block.readUInt32LE(8) !== 1) throw new FilesystemError(`${where}: xattr block spans ${block.readUInt32LE(8)} blocks`);
  if (csumSeed !== null) {
    const copy = Buffer.from(block);
    copy.writeUInt32LE(0, 16);
    const crc = crc32cUpdate(crc32cUpdate(csumSeed, le64(blockNumber)), copy);
    if (crc !== block.readUInt32LE(16)) throw new FilesystemError(`${where}: checksum mismatch`);
  }
  const out: RawXattr[] = [];
  parseXattrEntries(block, 32, block.length, 0, where, out);
  return out;
}

const ACL_SHORT_TAGS = new Set([0x01, 0x04, 0x10, 0x20]); // USER_OBJ, GROUP_OBJ, MASK, OTHER
const ACL_LONG_TAGS = new Set([0x02, 0x08]); // USER, GROUP
/** The id the kernel reports for entries without one (getfacl's view; e2fsprogs writes 0, both are ignored). */
const ACL_UNDEFINED_ID = 0xffffffff;

/** ext4's stored ACL (version 1, 4- and 8-byte entries) as getxattr(2) returns it (version 2, 8-byte entries). */
export function aclToXattrForm(stored: Buffer, where: string): Buffer {
  if (stored.length < 4 || stored.readUInt32LE(0) !== 1) throw new FilesystemError(`${where}: ACL of unknown version`);
  const entries: Buffer[] = [];
  let at = 4;
  while (at < stored.length) {
    if (at + 4 > stored.length) throw new FilesystemError(`${where}: truncated ACL entry`);
    const tag = stored.readUInt16LE(at);
    const perm = stored.readUInt16LE(at + 2);
    const e = Buffer.alloc(8);
    e.writeUInt16LE(tag, 0);
    e.writeUInt16LE(perm, 2);
    e.writeUInt32LE(ACL_UNDEFINED_ID, 4);
    if (ACL_SHORT_TAGS.has(tag)) {
      at += 4;
    } else if (ACL_LONG_TAGS.has(tag)) {
      if (at + 8 > stored.length) throw new FilesystemError(`${where}: truncated ACL entry`);
      e.writeUInt32LE(stored.readUInt32LE(at + 4), 4);
      at += 8;
    } else {
      throw new FilesystemError(`${where}: unknown ACL tag 0x${tag.toString(16)}`);
    }
    entries.push(e);
  }
  const head = Buffer.alloc(4);
  head.writeUInt32LE(2, 0);
  return Buffer.concat([head, ...entries]);
}
