/**
 * `check --fs`: walk everything reachable in a filesystem and report damage, so a schedule
 * can prove that last night's backup holds a filesystem that mounts and reads. Read-only
 * and metadata-only (file contents are not read: `check --read-data` verifies every chunk).
 *
 * Checked: the superblock and every group descriptor (checksums, inode tables inside the
 * filesystem); every inode reachable from the root (checksum, type against its directory
 * entry, size); every directory block (checksum, record layout); every extent tree and
 * block map (checksums, order, bounds, loops); symlink targets; xattrs (in-inode and block,
 * checksum); link counts against the entries that refer to each inode; and that no block
 * is claimed twice (by two files, or by a file and the group metadata or the journal).
 * Damage is collected (up to `maxErrors` lines) and the walk goes on where it can.
 */
import { IntegrityError } from "../errors.js";
import { FilesystemError } from "./errors.js";
import { ROOT_INO, type ExtFilesystem, type Inode } from "./ext/filesystem.js";
import { groupHasSuperblock, has, INCOMPAT, RO_COMPAT } from "./ext/superblock.js";

export interface FsCheckReport {
  filesystem: string;
  kind: string;
  directories: number;
  files: number;
  symlinks: number;
  specials: number;
  /** Bytes in regular files (their sizes). */
  fileBytes: number;
  /** Data runs (extents or block-map runs) mapped. */
  runs: number;
  errorCount: number;
  errors: string[];
  warnings: string[];
}

export interface FsCheckOptions {
  maxErrors?: number;
  onProgress?: (inodes: number) => void;
}

/** Above this many blocks (a 4 TiB filesystem of 4 KiB blocks) the double-claim bitmap is skipped. */
const MAX_BITMAP_BLOCKS = 2 ** 30;
const JOURNAL_INO = 8;
const FILE_TYPE_OF_ENTRY: Record<number, string> = { 1: "file", 2: "dir", 3: "chardev", 4: "blockdev", 5: "fifo", 6: "socket", 7: "symlink" };

class BlockClaims {
  private readonly bits: Uint8Array;
  constructor(readonly blocks: number) {
    this.bits = new Uint8Array(Math.ceil(blocks / 8));
  }
  /** Mark [start, start+count); the first block already claimed, or -1. */
  claim(start: number, count: number): number {
    let twice = -1;
    for (let b = start; b < start + count && b < this.blocks; b++) {
      const byte = b >>> 3;
      const bit = 1 << (b & 7);
      if ((this.bits[byte]! & bit) !== 0) {
        if (twice < 0) twice = b;
      } else {
        this.bits[byte] = this.bits[byte]! | bit;
      }
    }
    return twice;
  }
}

export async function checkFilesystem(fs: ExtFilesystem, options: FsCheckOptions = {}): Promise<FsCheckReport> {
  const maxErrors = options.maxErrors ?? 100;
  const sb = fs.sb;
  const report: FsCheckReport = {
    filesystem: fs.label,
    kind: sb.kind,
    directories: 0,
    files: 0,
    symlinks: 0,
    specials: 0,
    fileBytes: 0,
    runs: 0,
    errorCount: 0,
    errors: [],
    warnings: [...fs.warnings],
  };
  const strip = (message: string): string => (message.startsWith(`${fs.label}: `) ? message.slice(fs.label.length + 2) : message);
  const error = (text: string): void => {
    report.errorCount++;
    if (report.errors.length < maxErrors) report.errors.push(text);
  };
  /** Run a check; damage becomes a report line, anything else (the store is unreachable) stops the check. */
  const guard = async <T>(where: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FilesystemError || e instanceof IntegrityError) {
        error(`${where}${strip(e.message)}`);
        return undefined;
      }
      throw e;
    }
  };

  const claims = sb.blocksCount <= MAX_BITMAP_BLOCKS ? new BlockClaims(sb.blocksCount) : null;
  if (claims === null) report.warnings.push(`${fs.label}: ${sb.blocksCount} blocks: the check for blocks used twice was skipped`);
  const claim = (start: number, count: number, what: string): void => {
    if (claims === null) return;
    const twice = claims.claim(start, count);
    if (twice >= 0) error(`${what}: block ${twice} is also used by something else`);
  };

  // group metadata: superblock copies and descriptors, bitmaps, inode tables
  const perBlock = sb.blockSize / sb.descSize;
  const gdtBlocks = Math.ceil(sb.groupCount / perBlock);
  const inodeTableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / sb.blockSize);
  for (let g = 0; g < sb.groupCount; g++) {
    const desc = await guard("", () => fs.groupDesc(g));
    if (desc === undefined) continue;
    const first = sb.firstDataBlock + g * sb.blocksPerGroup;
    if (groupHasSuperblock(sb, g) && !has(sb.incompat, INCOMPAT.META_BG)) claim(first, 1 + gdtBlocks, `superblock and group descriptors of group ${g}`);
    claim(desc.blockBitmap, 1, `block bitmap of group ${g}`);
    claim(desc.inodeBitmap, 1, `inode bitmap of group ${g}`);
    claim(desc.inodeTable, inodeTableBlocks, `inode table of group ${g}`);
  }
  if (has(sb.compat, 0x4)) {
    const journal = await guard("journal: ", () => fs.inode(JOURNAL_INO));
    if (journal !== undefined)
      await guard("journal: ", async () => {
        for await (const run of fs.runs(journal, (b) => claim(b, 1, "journal"))) claim(run.physical, run.length, "journal");
      });
  }

  // the tree from the root
  const hardLinked = new Map<number, { links: number; seen: number }>();
  const seenDirs = new Map<number, string>([[ROOT_INO, "/"]]);
  let inodes = 0;

  const checkInode = async (inode: Inode, path: string): Promise<void> => {
    inodes++;
    if (inodes % 1000 === 0) options.onProgress?.(inodes);
    const what = `${path} (inode ${inode.ino})`;
    if (inode.links === 0) error(`${what}: link count 0`);
    await guard(`${what}: `, () => fs.xattrs(inode));
    const eaBlocks512 = inode.fileAcl !== 0 ? sb.blockSize / 512 : 0;
    const fastSymlink = inode.type === "symlink" && inode.blocks512 - eaBlocks512 <= 0;
    if ((inode.type === "file" || inode.type === "dir" || inode.type === "symlink") && !fastSymlink) {
      if (fs.isInline(inode)) {
        await guard(`${what}: `, async () => fs.inlineData(inode));
      } else {
        await guard(`${what}: `, async () => {
          for await (const run of fs.runs(inode, (b) => claim(b, 1, `${what}: extent tree or indirect block`))) {
            report.runs++;
            claim(run.physical, run.length, what);
          }
        });
      }
    }
    if (inode.type === "file") {
      report.files++;
      report.fileBytes += inode.size;
    } else if (inode.type === "symlink") {
      report.symlinks++;
      await guard(`${what}: `, () => fs.readlink(inode));
    } else if (inode.type !== "dir") {
      report.specials++;
    }
  };

  const root = await guard("root folder: ", () => fs.root());
  if (root === undefined) return report;
  if (root.type !== "dir") {
    error(`root inode ${ROOT_INO} is a ${root.type}, not a folder`);
    return report;
  }
  const stack: { inode: Inode; path: string }[] = [{ inode: root, path: "/" }];
  await checkInode(root, "/");
  while (stack.length > 0) {
    const dir = stack.pop()!;
    report.directories++;
    const entries = await guard(`${dir.path} (inode ${dir.inode.ino}): `, () => fs.readDir(dir.inode));
    if (entries === undefined) continue;
    let subdirs = 0;
    for (const e of entries) {
      const path = `${dir.path === "/" ? "" : dir.path}/${e.name.toString("utf8")}`;
      const inode = await guard(`${path}: `, () => fs.inode(e.ino));
      if (inode === undefined) continue;
      const expected = FILE_TYPE_OF_ENTRY[e.fileType];
      if (has(sb.incompat, INCOMPAT.FILETYPE) && expected !== undefined && expected !== inode.type)
        error(`${path}: the folder entry says ${expected}, inode ${inode.ino} is a ${inode.type}`);
      if (inode.type === "dir") {
        subdirs++;
        const before = seenDirs.get(inode.ino);
        if (before !== undefined) {
          error(`directory inode ${inode.ino} is reached twice, as ${before} and ${path} (a directory hard link or a cycle)`);
          continue;
        }
        seenDirs.set(inode.ino, path);
        await checkInode(inode, path);
        stack.push({ inode, path });
      } else if (inode.links > 1) {
        const known = hardLinked.get(inode.ino);
        if (known !== undefined) {
          known.seen++;
          continue;
        }
        hardLinked.set(inode.ino, { links: inode.links, seen: 1 });
        await checkInode(inode, path);
      } else {
        await checkInode(inode, path);
      }
    }
    // a folder has "." and its parent's entry, plus each sub-folder's ".."; dir_nlink allows 1 for "many"
    const want = 2 + subdirs;
    const nlinkMany = has(sb.roCompat, RO_COMPAT.DIR_NLINK) && dir.inode.links === 1;
    if (dir.inode.links !== want && !nlinkMany) error(`${dir.path} (inode ${dir.inode.ino}): link count ${dir.inode.links}, but ${want} entries refer to it`);
  }
  for (const [ino, { links, seen }] of hardLinked) if (seen !== links) error(`inode ${ino}: link count ${links}, but ${seen} entries refer to it`);
  options.onProgress?.(inodes);
  return report;
}
