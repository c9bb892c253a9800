/**
 * A read-only ext2/ext3/ext4 filesystem over a BlockDevice: inodes, file contents (extent
 * trees, block maps, inline data), directories, symlinks and xattrs, with every
 * metadata_csum checksum verified (superblock, group descriptors, inodes, extent blocks,
 * directory blocks, xattr blocks) and gdt_csum (crc16) on older filesystems.
 *
 * Nothing here touches the repository or node:fs: the device may be a raw image, a
 * partition of one, or a backup's logical disk read lazily (src/restore/lazy-disk.ts),
 * and the fuzz tests feed it hostile images. Every failure is a FilesystemError naming
 * this filesystem and the inode, block or path concerned.
 *
 * The journal is not replayed: a backup made through a ploop snapshot is taken with the
 * filesystem frozen (flushed, no recovery needed); a filesystem that still needs recovery
 * is read as it is on disk and `warnings` says so.
 */
import type { BlockDevice } from "../block-device.js";
import { FilesystemError, PathError, UnsupportedFilesystemError } from "../errors.js";
import { blockMapRuns, extentRuns, type MapContext, type Run } from "./block-map.js";
import { parseDirBlock, parseInlineDir, type DirContext, type DirEntry } from "./directory.js";
import { INODE_FLAGS, inodeChecksumOk, inodeCsumSeed, parseInode, type Inode } from "./inode.js";
import { groupHasSuperblock, has, INCOMPAT, parseSuperblock, RO_COMPAT, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET, type Superblock } from "./superblock.js";
import { displayPath } from "../names.js";
import { aclToXattrForm, blockXattrs, inodeXattrs, type RawXattr, type Xattr } from "./xattr.js";
import { crc16Update, crc32cUpdate, le32 } from "../checksums.js";

export const ROOT_INO = 2;
/** Longest symlink target Linux accepts (PATH_MAX with its NUL). */
const MAX_SYMLINK_BYTES = 4096;
/** Largest xattr value the kernel sets (XATTR_SIZE_MAX). */
const MAX_XATTR_VALUE = 65536;
const MAX_SYMLINK_FOLLOWS = 40;
const BG_INODE_UNINIT = 0x1;
/** Parsed directories kept for lookups (a path walk re-reads its parents; 10,000 lookups in one big folder would re-parse it each time). */
const DIR_CACHE_ENTRIES = 200_000;

export interface GroupDesc {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  flags: number;
  itableUnused: number;
  /** metadata_csum: crc32c of the block bitmap (low 16 bits only when descriptors are 32 bytes). */
  blockBitmapCsum: number;
}

export interface ResolvedPath {
  inode: Inode;
  /** Components from the root after following symlinks in the middle of the path. */
  components: Buffer[];
}

export class ExtFilesystem {
  readonly warnings: string[] = [];
  private readonly descBlocks = new Map<number, Promise<Buffer>>();
  /** inode -> (name in latin1 -> entry), most recently used last. */
  private readonly dirCache = new Map<number, Map<string, DirEntry>>();
  private dirCacheEntries = 0;
  private readonly inodeTableBlocks: number;

  private constructor(
    private readonly device: BlockDevice,
    readonly sb: Superblock,
    /** "ext4 filesystem in partition 1 of backup 101/..." */
    readonly label: string,
  ) {
    this.inodeTableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / sb.blockSize);
    if (sb.needsRecovery)
      this.warnings.push(
        `${label}: the journal needs recovery (the filesystem was not cleanly frozen or unmounted): reading it without replaying the journal, the latest changes may be missing`,
      );
  }

  /** Open the filesystem on `device`; `where` names the device ("partition 1 of backup 101/...") */
  static async open(device: BlockDevice, where: string): Promise<ExtFilesystem> {
    if (device.size < SUPERBLOCK_OFFSET + SUPERBLOCK_BYTES) throw new FilesystemError(`${where}: too small for an ext filesystem (${device.size} bytes)`);
    const raw = await device.read(SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES);
    const sb = parseSuperblock(raw, device.size, `filesystem in ${where}`);
    const fs = new ExtFilesystem(device, sb, `${sb.kind} filesystem in ${where}`);
    await fs.groupDesc(0); // the descriptors of group 0 must be readable for anything to work
    return fs;
  }

  get blockSize(): number {
    return this.sb.blockSize;
  }

  private async readBytes(offset: number, length: number, what: string): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.device.size) {
      throw new FilesystemError(`${this.label}: ${what} (${length} bytes at ${offset}) lies beyond the end of the device`);
    }
    return this.device.read(offset, length);
  }

  /** `count` blocks from `block` (bounds-checked against the filesystem). */
  async readBlocks(block: number, count: number): Promise<Buffer> {
    if (!Number.isSafeInteger(block) || block < 0 || count < 0 || block + count > this.sb.blocksCount) {
      throw new FilesystemError(`${this.label}: blocks ${block}+${count} lie outside the filesystem (${this.sb.blocksCount} blocks)`);
    }
    return this.readBytes(block * this.sb.blockSize, count * this.sb.blockSize, `block ${block}`);
  }

  readBlock(block: number): Promise<Buffer> {
    return this.readBlocks(block, 1);
  }

  // ---------------------------------------------------------------------------------
  // group descriptors and inodes

  private descriptorBlock(index: number): number {
    const sb = this.sb;
    const perBlock = sb.blockSize / sb.descSize;
    if (!has(sb.incompat, INCOMPAT.META_BG) || index < sb.firstMetaBg) return sb.firstDataBlock + 1 + index;
    // meta_bg: descriptor block i sits in the first group of its meta group (after a superblock backup)
    const group = index * perBlock;
    return sb.firstDataBlock + group * sb.blocksPerGroup + (groupHasSuperblock(sb, group) ? 1 : 0);
  }

  async groupDesc(group: number): Promise<GroupDesc> {
    const sb = this.sb;
    if (group < 0 || group >= sb.groupCount) throw new FilesystemError(`${this.label}: group ${group} out of range`);
    const perBlock = sb.blockSize / sb.descSize;
    const index = Math.floor(group / perBlock);
    let blockPromise = this.descBlocks.get(index);
    if (blockPromise === undefined) {
      blockPromise = this.readBlock(this.descriptorBlock(index));
      this.descBlocks.set(index, blockPromise);
    }
    const block = await blockPromise;
    const at = (group % perBlock) * sb.descSize;
    const d = block.subarray(at, at + sb.descSize);
    if (sb.metadataCsum || sb.gdtCsum) {
      let computed: number;
      if (sb.metadataCsum) {
        const copy = Buffer.from(d);
        copy.writeUInt16LE(0, 0x1e);
        computed = crc32cUpdate(crc32cUpdate(sb.csumSeed, le32(group)), copy) & 0xffff;
      } else {
        computed = crc16Update(crc16Update(crc16Update(0xffff, sb.uuid), le32(group)), d, 0, 0x1e);
        if (d.length > 0x20) computed = crc16Update(computed, d, 0x20);
      }
      if (computed !== d.readUInt16LE(0x1e)) throw new FilesystemError(`${this.label}: group descriptor ${group}: checksum mismatch`);
    }
    const wide = sb.descSize >= 64;
    const inodeTable = d.readUInt32LE(8) + (wide ? d.readUInt32LE(0x28) * 2 ** 32 : 0);
    if (inodeTable + this.inodeTableBlocks > sb.blocksCount || inodeTable === 0) {
      throw new FilesystemError(`${this.label}: group descriptor ${group}: inode table at block ${inodeTable} lies outside the filesystem`);
    }
    const blockBitmap = d.readUInt32LE(0) + (wide ? d.readUInt32LE(0x20) * 2 ** 32 : 0);
    const inodeBitmap = d.readUInt32LE(4) + (wide ? d.readUInt32LE(0x24) * 2 ** 32 : 0);
    const blockBitmapCsum = d.readUInt16LE(0x18) + (wide ? d.readUInt16LE(0x38) * 65536 : 0);
    return {
      blockBitmap,
      inodeBitmap,
      inodeTable,
      flags: d.readUInt16LE(0x12),
      itableUnused: d.readUInt16LE(0x1c) + (wide ? d.readUInt16LE(0x32) * 65536 : 0),
      blockBitmapCsum,
    };
  }

  /** The inode, checksum verified; an unused inode (never written, deleted) is an error. */
  async inode(ino: number): Promise<Inode> {
    const inode = await this.inodeOrNull(ino);
    if (inode === null) throw new FilesystemError(`${this.label}: inode ${ino} is referenced but not in use`);
    return inode;
  }

  /** The inode, or null when it is not in use. */
  async inodeOrNull(ino: number): Promise<Inode | null> {
    const sb = this.sb;
    if (!Number.isInteger(ino) || ino < 1 || ino > sb.inodesCount)
      throw new FilesystemError(`${this.label}: inode number ${ino} out of range (1-${sb.inodesCount})`);
    const group = Math.floor((ino - 1) / sb.inodesPerGroup);
    const index = (ino - 1) % sb.inodesPerGroup;
    const desc = await this.groupDesc(group);
    if ((sb.metadataCsum || sb.gdtCsum) && ((desc.flags & BG_INODE_UNINIT) !== 0 || index >= sb.inodesPerGroup - desc.itableUnused)) return null;
    const raw = await this.readBytes(desc.inodeTable * sb.blockSize + index * sb.inodeSize, sb.inodeSize, `inode ${ino}`);
    if (sb.metadataCsum && !inodeChecksumOk(sb.csumSeed, ino, raw)) throw new FilesystemError(`${this.label}: inode ${ino}: checksum mismatch`);
    const inode = parseInode(ino, raw, sb.blockSize, has(sb.roCompat, RO_COMPAT.HUGE_FILE));
    if (inode.mode === 0 || (inode.links === 0 && inode.dtime !== 0)) return null;
    if (sb.inodeSize > 128 && (inode.extraIsize > sb.inodeSize - 128 || inode.extraIsize % 4 !== 0)) {
      throw new FilesystemError(`${this.label}: inode ${ino}: i_extra_isize ${inode.extraIsize} out of range`);
    }
    if (inode.type === null) throw new FilesystemError(`${this.label}: inode ${ino}: unknown file type in mode 0o${inode.mode.toString(8)}`);
    if (!Number.isSafeInteger(inode.size)) throw new FilesystemError(`${this.label}: inode ${ino}: size out of range`);
    if (inode.type === "dir" && inode.size > sb.blocksCount * sb.blockSize) {
      throw new FilesystemError(`${this.label}: inode ${ino}: directory size ${inode.size} exceeds the filesystem`);
    }
    if (inode.type === "symlink" && inode.size > MAX_SYMLINK_BYTES)
      throw new FilesystemError(`${this.label}: inode ${ino}: symlink target of ${inode.size} bytes`);
    return inode;
  }

  // ---------------------------------------------------------------------------------
  // file contents

  private mapContext(inode: Inode, onMapBlock?: (block: number) => void): MapContext {
    return {
      ...(onMapBlock === undefined ? {} : { onMapBlock }),
      blockSize: this.sb.blockSize,
      blocksCount: this.sb.blocksCount,
      readBlock: (b) => this.readBlock(b),
      inodeCsumSeed: this.sb.metadataCsum ? inodeCsumSeed(this.sb.csumSeed, inode.ino, inode.generation) : null,
      label: `${this.label}: inode ${inode.ino}`,
    };
  }

  private refuseEncrypted(inode: Inode): void {
    if ((inode.flags & INODE_FLAGS.ENCRYPT) !== 0)
      throw new UnsupportedFilesystemError(`${this.label}: inode ${inode.ino} is encrypted (fscrypt): unsupported`);
  }

  isInline(inode: Inode): boolean {
    return (inode.flags & INODE_FLAGS.INLINE_DATA) !== 0;
  }

  /**
   * Runs of blocks holding the inode's data, in logical order, up to its size. Not for
   * inline-data inodes (see inlineData).
   */
  runs(inode: Inode, onMapBlock?: (block: number) => void): AsyncGenerator<Run> {
    this.refuseEncrypted(inode);
    const endBlock = Math.ceil(inode.size / this.sb.blockSize);
    if ((inode.flags & INODE_FLAGS.EXTENTS) !== 0) return extentRuns(this.mapContext(inode, onMapBlock), inode.iblock, endBlock);
    const perBlock = this.sb.blockSize / 4;
    if (endBlock > 12 + perBlock + perBlock ** 2 + perBlock ** 3)
      throw new FilesystemError(`${this.label}: inode ${inode.ino}: size ${inode.size} too large for a block map`);
    return blockMapRuns(this.mapContext(inode, onMapBlock), inode.iblock, endBlock);
  }

  /** Content of an inline-data inode: i_block then the system.data xattr, cut to the size. */
  inlineData(inode: Inode): Buffer {
    const attrs = inodeXattrs(inode.raw, inode.extraIsize, `${this.label}: inode ${inode.ino}`);
    const extra = attrs.find((a) => a.name === "system.data");
    const all = Buffer.concat([inode.iblock, extra?.value ?? Buffer.alloc(0)]);
    if (inode.size > all.length) throw new FilesystemError(`${this.label}: inode ${inode.ino}: inline data of ${all.length} bytes for a size of ${inode.size}`);
    return Buffer.from(all.subarray(0, inode.size));
  }

  /** `length` bytes of the inode's content from `offset` (holes and unwritten extents as zeros). */
  async read(inode: Inode, offset: number, length: number): Promise<Buffer> {
    const end = Math.min(inode.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    if (this.isInline(inode)) return this.inlineData(inode).subarray(offset, end);
    const out = Buffer.alloc(end - offset);
    const bs = this.sb.blockSize;
    for await (const run of this.runs(inode)) {
      const runStart = run.logical * bs;
      const runEnd = runStart + run.length * bs;
      if (runEnd <= offset) continue;
      if (runStart >= end) break;
      if (run.unwritten) continue;
      const from = Math.max(offset, runStart);
      const to = Math.min(end, runEnd);
      const firstBlock = Math.floor((from - runStart) / bs);
      const lastBlock = Math.ceil((to - runStart) / bs);
      const data = await this.readBlocks(run.physical + firstBlock, lastBlock - firstBlock);
      data.copy(out, from - offset, from - runStart - firstBlock * bs, to - runStart - firstBlock * bs);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------
  // directories, symlinks, xattrs

  private dirContext(inode: Inode): DirContext {
    return {
      blockSize: this.sb.blockSize,
      fileTypeField: has(this.sb.incompat, INCOMPAT.FILETYPE),
      inodesCount: this.sb.inodesCount,
      inodeCsumSeed: this.sb.metadataCsum ? inodeCsumSeed(this.sb.csumSeed, inode.ino, inode.generation) : null,
      label: `${this.label}: directory inode ${inode.ino}`,
    };
  }

  /** Entries of a directory, without "." and "..", in on-disk order. */
  async readDir(inode: Inode): Promise<DirEntry[]> {
    if (inode.type !== "dir") throw new FilesystemError(`${this.label}: inode ${inode.ino} is not a directory`);
    const ctx = this.dirContext(inode);
    const out: DirEntry[] = [];
    if (this.isInline(inode)) {
      const attrs = inodeXattrs(inode.raw, inode.extraIsize, ctx.label);
      parseInlineDir(ctx, inode.iblock, attrs.find((a) => a.name === "system.data")?.value ?? null, out);
      return out;
    }
    const bs = this.sb.blockSize;
    const maxBlocksPerRead = Math.max(1, (1 << 20) / bs);
    for await (const run of this.runs(inode)) {
      if (run.unwritten) continue;
      for (let done = 0; done < run.length; done += maxBlocksPerRead) {
        const count = Math.min(maxBlocksPerRead, run.length - done);
        const data = await this.readBlocks(run.physical + done, count);
        for (let i = 0; i < count; i++) parseDirBlock(ctx, data.subarray(i * bs, (i + 1) * bs), `block ${run.physical + done + i}`, out);
      }
    }
    return out;
  }

  /** A symlink's target (bytes, as stored). */
  async readlink(inode: Inode): Promise<Buffer> {
    if (inode.type !== "symlink") throw new FilesystemError(`${this.label}: inode ${inode.ino} is not a symlink`);
    if (inode.size === 0) throw new FilesystemError(`${this.label}: inode ${inode.ino}: empty symlink`);
    if (this.isInline(inode)) return this.inlineData(inode);
    const eaBlocks512 = inode.fileAcl !== 0 ? this.sb.blockSize / 512 : 0;
    // the kernel's rule: a symlink without data blocks keeps its target in i_block
    if (inode.blocks512 - eaBlocks512 <= 0) {
      if (inode.size >= 60) throw new FilesystemError(`${this.label}: inode ${inode.ino}: symlink of ${inode.size} bytes without data blocks`);
      return Buffer.from(inode.iblock.subarray(0, inode.size));
    }
    return this.read(inode, 0, inode.size);
  }

  /** Extended attributes as getxattr(2) would return them (ACLs converted), on-disk order. */
  async xattrs(inode: Inode): Promise<Xattr[]> {
    const where = `${this.label}: inode ${inode.ino}`;
    const raw: RawXattr[] = inodeXattrs(inode.raw, inode.extraIsize, where);
    if (inode.fileAcl !== 0)
      raw.push(
        ...blockXattrs(
          await this.readBlock(inode.fileAcl),
          inode.fileAcl,
          this.sb.metadataCsum ? this.sb.csumSeed : null,
          `${where}: xattr block ${inode.fileAcl}`,
        ),
      );
    const out: Xattr[] = [];
    for (const x of raw) {
      if (x.name === "system.data") continue;
      let value = x.value;
      if (value === null) {
        if (x.valueSize > MAX_XATTR_VALUE) throw new FilesystemError(`${where}: xattr ${x.name} of ${x.valueSize} bytes`);
        const holder = await this.inode(x.valueInode);
        if ((holder.flags & INODE_FLAGS.EA_INODE) === 0 || holder.type !== "file" || holder.size < x.valueSize) {
          throw new FilesystemError(`${where}: xattr ${x.name} refers to inode ${x.valueInode}, which is not an xattr value inode`);
        }
        value = await this.read(holder, 0, x.valueSize);
      }
      if (x.name === "system.posix_acl_access" || x.name === "system.posix_acl_default") value = aclToXattrForm(value, `${where}: ${x.name}`);
      out.push({ name: x.name, value });
    }
    return out;
  }

  // ---------------------------------------------------------------------------------
  // paths

  root(): Promise<Inode> {
    return this.inode(ROOT_INO);
  }

  /** The entry `name` of directory `dir`, or null. */
  async child(dir: Inode, name: Buffer): Promise<DirEntry | null> {
    let index = this.dirCache.get(dir.ino);
    if (index === undefined) {
      index = new Map();
      for (const e of await this.readDir(dir)) index.set(e.name.toString("latin1"), e);
      this.dirCache.set(dir.ino, index);
      this.dirCacheEntries += index.size;
      for (const [ino, old] of this.dirCache) {
        if (this.dirCacheEntries <= DIR_CACHE_ENTRIES || this.dirCache.size <= 1) break;
        this.dirCache.delete(ino);
        this.dirCacheEntries -= old.size;
      }
    } else {
      this.dirCache.delete(dir.ino);
      this.dirCache.set(dir.ino, index);
    }
    return index.get(name.toString("latin1")) ?? null;
  }

  /**
   * Resolve a path inside the filesystem ("/var/www", "var/www"; "." and ".." allowed).
   * Symlinks in the middle are followed inside the filesystem (an absolute target starts
   * at its root); the last component is followed only with followLast.
   */
  async resolve(path: string | Buffer, followLast = false): Promise<ResolvedPath> {
    const pending = splitPath(typeof path === "string" ? Buffer.from(path, "utf8") : path);
    const stack: { name: Buffer; inode: Inode }[] = [];
    let current = await this.root();
    let follows = 0;
    const shown = (): string => displayPath(stack.map((s) => s.name));
    while (pending.length > 0) {
      const name = pending.shift()!;
      if (name.length === 1 && name[0] === 0x2e) continue;
      if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
        stack.pop();
        current = stack.length === 0 ? await this.root() : stack[stack.length - 1]!.inode;
        continue;
      }
      if (current.type !== "dir") throw new PathError(`${shown()} is not a directory`);
      const entry = await this.child(current, name);
      if (entry === null) throw new PathError(`${displayPath([...stack.map((s) => s.name), name])}: no such file or directory`);
      const inode = await this.inode(entry.ino);
      if (inode.type === "symlink" && (pending.length > 0 || followLast)) {
        if (++follows > MAX_SYMLINK_FOLLOWS) throw new PathError(`${displayPath([...stack.map((s) => s.name), name])}: too many levels of symbolic links`);
        const target = await this.readlink(inode);
        const parts = splitPath(target);
        if (target[0] === 0x2f) {
          stack.length = 0;
          current = await this.root();
        }
        pending.unshift(...parts);
        continue;
      }
      stack.push({ name, inode });
      current = inode;
    }
    return { inode: current, components: stack.map((s) => s.name) };
  }
}

export function splitPath(path: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === 0x2f) {
      if (i > start) parts.push(Buffer.from(path.subarray(start, i)));
      start = i + 1;
    }
  }
  return parts;
}

export type { DirEntry, Inode, Run, Xattr };
