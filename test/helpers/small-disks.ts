/**
 * Small disks built in a second for tests that damage them (damaged metadata, fuzzing):
 * a few files and folders, a symlink, an xattr and a file written into the holes of
 * deleted ones (more than 4 extents: an extent tree with a block of its own), made with
 * the real mkfs and debugfs, optionally inside a GPT partition at 1 MiB. debugfs tells
 * where each structure lives (imap, ex, blocks) so tests can damage exactly that.
 */
import { mkdir, open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { writeDescriptorFile, writeImageFromRaw } from "../../src/ploop/writer.js";

export interface SmallDisk {
  raw: string;
  /** Byte offset of the filesystem in `raw`. */
  fsOffset: number;
  blockSize: number;
}

export interface SmallDiskOptions {
  kind?: "ext4" | "ext3";
  metadataCsum?: boolean;
  gpt?: boolean;
  sizeMiB?: number;
}

const env = { E2FSPROGS_FAKE_TIME: "1700000000" };

export async function debugfsRun(disk: SmallDisk, commands: string[], write = false): Promise<string> {
  const spec = disk.fsOffset === 0 ? disk.raw : `${disk.raw}?offset=${disk.fsOffset}`;
  const r = await execa("debugfs", [...(write ? ["-w"] : []), "-f", "-", spec], { input: `${commands.join("\n")}\n`, env });
  return r.stdout;
}

export async function buildSmallDisk(dir: string, name: string, options: SmallDiskOptions = {}): Promise<SmallDisk> {
  const sizeMiB = options.sizeMiB ?? 16;
  const tree = join(dir, `${name}-tree`);
  await mkdir(join(tree, "dir", "sub"), { recursive: true });
  for (let i = 0; i < 30; i++) await writeFile(join(tree, "dir", `f${i}`), `file ${i}\n`.repeat(i + 1));
  await writeFile(join(tree, "dir", "sub", "deep.txt"), "deep\n");
  await writeFile(join(tree, "hello.txt"), "hello\n");
  await execa("ln", ["-s", "dir/sub/deep.txt", join(tree, "link")]);
  await execa("ln", ["-s", "/etc", join(tree, "etc-link")]);
  await execa("chmod", ["0750", join(tree, "dir", "sub")]);
  const raw = join(dir, `${name}.raw`);
  const fh = await open(raw, "w");
  await fh.truncate(sizeMiB << 20);
  await fh.close();
  let fsOffset = 0;
  let blocks = (sizeMiB << 20) / 4096;
  if (options.gpt) {
    await execa("sgdisk", ["-n", "1:2048:0", "-t", "1:8300", raw]);
    const last = Number(/Last sector: (\d+)/.exec((await execa("sgdisk", ["-i", "1", raw])).stdout)![1]);
    fsOffset = 2048 * 512;
    blocks = Math.floor(((last - 2047) * 512) / 4096);
  }
  const features = options.kind === "ext3" ? [] : ["-O", options.metadataCsum === false ? "^metadata_csum" : "metadata_csum"];
  const mkfs = options.kind === "ext3" ? "mkfs.ext3" : "mkfs.ext4";
  await execa(mkfs, ["-q", "-F", "-b", "4096", ...features, "-E", `offset=${fsOffset}`, "-d", tree, raw, String(blocks)], { env });
  const disk = { raw, fsOffset, blockSize: 4096 };
  // a fragmented file: written into the 4 KiB holes left by deleting every other small file
  const piece = join(dir, `${name}-piece`);
  await writeFile(piece, Buffer.alloc(4096, 0x61));
  const big = join(dir, `${name}-frag`);
  await writeFile(big, Buffer.alloc(48 * 1024, 0x62));
  const cmds = ["mkdir /tmp"];
  for (let i = 0; i < 24; i++) cmds.push(`write ${piece} /tmp/p${i}`);
  for (let i = 1; i < 24; i += 2) cmds.push(`rm /tmp/p${i}`);
  cmds.push(`write ${big} /frag`);
  for (let i = 0; i < 24; i += 2) cmds.push(`rm /tmp/p${i}`);
  cmds.push("rmdir /tmp", `ea_set /hello.txt user.greeting "hi there"`);
  await debugfsRun(disk, cmds, true);
  return disk;
}

/** Byte offset in the raw file of inode `path`'s on-disk inode (debugfs imap). */
export async function inodeOffset(disk: SmallDisk, path: string): Promise<number> {
  const out = await debugfsRun(disk, [`imap ${path}`]);
  const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(out);
  if (m === null) throw new Error(`imap ${path}: ${out}`);
  return disk.fsOffset + Number(m[1]) * disk.blockSize + Number.parseInt(m[2]!, 16);
}

/** Byte offset of the first data block of `path` (debugfs blocks). */
export async function firstBlockOffset(disk: SmallDisk, path: string): Promise<number> {
  const out = await debugfsRun(disk, [`blocks ${path}`]);
  const first = Number(/\d+/.exec(out.split("\n").find((l) => /^\d/.test(l)) ?? "")?.[0]);
  if (!Number.isFinite(first) || first === 0) throw new Error(`blocks ${path}: ${out}`);
  return disk.fsOffset + first * disk.blockSize;
}

/** Byte offset of the first extent tree block (index level) of `path` (debugfs ex). */
export async function extentBlockOffset(disk: SmallDisk, path: string): Promise<number> {
  const out = await debugfsRun(disk, [`ex ${path}`]);
  // "Level Entries Logical Physical Length Flags": a level-0 row of a depth-1 tree points at the leaf block
  const m = /^\s*0\/\s*\d+\s+\d+\/\s*\d+\s+\d+\s+-\s+\d+\s+(\d+)/m.exec(out);
  if (m === null) throw new Error(`ex ${path}: no extent tree block: ${out}`);
  return disk.fsOffset + Number(m[1]) * disk.blockSize;
}

export async function patch(disk: SmallDisk, at: number, bytes: Buffer): Promise<void> {
  const fh = await open(disk.raw, "r+");
  try {
    await fh.write(bytes, 0, bytes.length, at);
  } finally {
    await fh.close();
  }
}

export async function readAt(disk: SmallDisk, at: number, length: number): Promise<Buffer> {
  const fh = await open(disk.raw, "r");
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, at);
    return b;
  } finally {
    await fh.close();
  }
}

/** The raw disk as OUT/<ct>/root.hdd (ploop image + DiskDescriptor.xml); returns the descriptor path. */
export async function asPloopDisk(raw: string, outDir: string, ct: string): Promise<string> {
  const dir = join(outDir, ct, "root.hdd");
  await mkdir(dir, { recursive: true });
  const r = await writeImageFromRaw(raw, join(dir, "root.hds"), { version: 2, clusterBytes: 1 << 20, skipZeroClusters: true });
  return writeDescriptorFile(dir, { imageFile: "root.hds", sizeBytes: r.sizeBytes, clusterBytes: 1 << 20 });
}
