/**
 * An "aged" disk for backup --skip-free: a GPT disk with ext4 at 1 MiB (as hosts have it),
 * made with the real mkfs.ext4 -d, then files written, deleted and rewritten with the real
 * debugfs, so that a good part of the clusters that hold data are free in ext4 (debugfs
 * rm, like the kernel, frees blocks without zeroing them). dumpe2fs is the oracle of what
 * is free.
 */
import { mkdir, open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";

export const AGED_FS_OFFSET = 1 << 20;
const env = { E2FSPROGS_FAKE_TIME: "1700000000" };

export interface AgedDisk {
  raw: string;
  fsOffset: number;
  blockSize: number;
  /** Paths (in the filesystem) of the files that remain. */
  files: string[];
}

export interface AgedDiskOptions {
  sizeMiB?: number;
  /** Bytes written in the first pass (roughly: files of 512 KiB-4 MiB). */
  writeMiB?: number;
  seed?: number;
}

/** Deterministic bytes: half of the files text-like (compressible), half random-like. */
function fileBytes(seed: number, length: number, textLike: boolean): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  if (textLike) {
    const words = ["backup ", "ploop ", "cluster ", "extent ", "inode ", "bitmap ", "\n", "zstd ", "chunk "];
    let pos = 0;
    while (pos < length) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      pos += out.write(`${words[x % words.length]!}${x % 1000} `, pos);
    }
    return out;
  }
  for (let i = 0; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  return out;
}

export async function debugfsWrite(raw: string, fsOffset: number, commands: string[]): Promise<string> {
  const r = await execa("debugfs", ["-w", "-f", "-", `${raw}?offset=${fsOffset}`], { input: `${commands.join("\n")}\n`, env });
  return r.stdout + r.stderr;
}

/**
 * Build the aged disk in `dir`: a pass of writes of ~writeMiB, then two files of every
 * three deleted, then a third of the deleted bytes written again as new files (into the
 * freed space).
 */
export async function buildAgedDisk(dir: string, name: string, options: AgedDiskOptions = {}): Promise<AgedDisk> {
  const sizeMiB = options.sizeMiB ?? 96;
  const writeMiB = options.writeMiB ?? Math.floor(sizeMiB * 0.6);
  const seed = options.seed ?? 1;
  const tree = join(dir, `${name}-tree`);
  await mkdir(join(tree, "etc"), { recursive: true });
  await writeFile(join(tree, "etc", "hostname"), `${name}\n`);
  await writeFile(join(tree, "README"), "an aged disk\n".repeat(100));
  const raw = join(dir, `${name}.raw`);
  const fh = await open(raw, "w");
  await fh.truncate(sizeMiB << 20);
  await fh.close();
  await execa("sgdisk", ["-n", "1:2048:0", "-t", "1:8300", raw]);
  const last = Number(/Last sector: (\d+)/.exec((await execa("sgdisk", ["-i", "1", raw])).stdout)![1]);
  const blocks = Math.floor(((last - 2047) * 512) / 4096);
  await execa("mkfs.ext4", ["-q", "-F", "-b", "4096", "-O", "metadata_csum", "-E", `offset=${AGED_FS_OFFSET}`, "-d", tree, raw, String(blocks)], { env });

  const src = join(dir, `${name}-src`);
  await mkdir(src, { recursive: true });
  const sizes: number[] = [];
  let total = 0;
  for (let i = 0; total < writeMiB << 20; i++) {
    const size = (512 << 10) + ((i * 7919 + seed * 104729) % 8) * (512 << 10) + ((i * 31) % 4096);
    sizes.push(size);
    total += size;
  }
  const first: string[] = ["mkdir /data"];
  for (let i = 0; i < sizes.length; i++) {
    await writeFile(join(src, `f${i}`), fileBytes(seed * 100_000 + i, sizes[i]!, i % 2 === 0));
    first.push(`write ${join(src, `f${i}`)} /data/f${i}`);
  }
  await debugfsWrite(raw, AGED_FS_OFFSET, first);
  const files = new Set(sizes.map((_, i) => `/data/f${i}`));
  const deleted: number[] = [];
  for (let i = 0; i < sizes.length; i++) if (i % 3 !== 0) deleted.push(i);
  await debugfsWrite(
    raw,
    AGED_FS_OFFSET,
    deleted.map((i) => `rm /data/f${i}`),
  );
  for (const i of deleted) files.delete(`/data/f${i}`);
  // rewrites: a quarter of the deleted bytes come back under new names, into the freed space
  const deletedBytes = deleted.reduce((s, i) => s + sizes[i]!, 0);
  const again: string[] = ["mkdir /data/new"];
  let rewritten = 0;
  for (let j = 0; rewritten < deletedBytes / 3; j++) {
    const size = (384 << 10) + j * 1000;
    await writeFile(join(src, `g${j}`), fileBytes(seed * 100_000 + 50_000 + j, size, j % 2 === 0));
    again.push(`write ${join(src, `g${j}`)} /data/new/g${j}`);
    files.add(`/data/new/g${j}`);
    rewritten += size;
  }
  await debugfsWrite(raw, AGED_FS_OFFSET, again);
  return { raw, fsOffset: AGED_FS_OFFSET, blockSize: 4096, files: [...files].sort() };
}

/** Free block ranges [first, last] of the filesystem at `offset` of `raw`, from dumpe2fs. */
export async function dumpe2fsFreeBlocks(raw: string, offset: number): Promise<[number, number][]> {
  const out = (await execa("dumpe2fs", [`${raw}?offset=${offset}`], { env })).stdout;
  const ranges: [number, number][] = [];
  for (const line of out.split("\n")) {
    const m = /^\s+Free blocks: (.*)$/.exec(line);
    if (m === null || m[1]!.trim() === "") continue;
    for (const part of m[1]!.split(",")) {
      const [a, b] = part.trim().split("-").map(Number);
      ranges.push([a!, b ?? a!]);
    }
  }
  return ranges;
}

/** One byte per block of the filesystem: 1 = free according to dumpe2fs. */
export async function freeBlockMap(raw: string, offset: number, blocksCount: number): Promise<Uint8Array> {
  const map = new Uint8Array(blocksCount);
  for (const [a, b] of await dumpe2fsFreeBlocks(raw, offset)) map.fill(1, a, b + 1);
  return map;
}

export async function e2fsckClean(raw: string, offset: number): Promise<{ code: number; output: string }> {
  const r = await execa("e2fsck", ["-fn", `${raw}?offset=${offset}`], { reject: false, env });
  return { code: r.exitCode ?? -1, output: r.stdout + r.stderr };
}
