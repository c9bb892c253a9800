/**
 * Free-space arithmetic of backup --skip-free (pure), and the bitmaps read by our reader
 * against dumpe2fs on real filesystems: an aged ext4 with metadata_csum in a GPT
 * partition, ext4 without metadata_csum (gdt_csum), ext3 (no group checksums), bigalloc,
 * and refusals (errors state, a damaged bitmap).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withoutFreeClusters } from "../../src/backup/free-space.js";
import { ExtFilesystem } from "../../src/fs/ext/filesystem.js";
import { freeRunsOfBitmap, joinRuns, markFreeClusters, readFreeBlockRuns, skipFreeRefusal, type BlockRun } from "../../src/fs/ext/free-space.js";
import { parseSuperblock, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET } from "../../src/fs/ext/superblock.js";
import { SubDevice } from "../../src/fs/block-device.js";
import { buildAgedDisk, debugfsWrite, dumpe2fsFreeBlocks } from "../helpers/aged-disk.js";
import { RawFileDevice } from "../helpers/raw-device.js";
import { buildSmallDisk, patch } from "../helpers/small-disks.js";

describe("free runs of a bitmap", () => {
  it("reads bits least significant first and stops at the group's last block", () => {
    // blocks 0-2 used, 3-12 free, 13 used, 14-15 free; then a byte of padding bits
    const bitmap = Uint8Array.from([0b0000_0111, 0b0010_0000, 0x00]);
    expect(freeRunsOfBitmap(bitmap, 100, 16)).toEqual([
      { start: 103, count: 10 },
      { start: 114, count: 2 },
    ]);
    expect(freeRunsOfBitmap(bitmap, 0, 20)).toEqual([
      { start: 3, count: 10 },
      { start: 14, count: 6 },
    ]);
    expect(freeRunsOfBitmap(Uint8Array.from([0xff, 0xff]), 0, 16)).toEqual([]);
    expect(freeRunsOfBitmap(new Uint8Array(4), 8, 32)).toEqual([{ start: 8, count: 32 }]);
    expect(freeRunsOfBitmap(new Uint8Array(4), 8, 29)).toEqual([{ start: 8, count: 29 }]);
    expect(() => freeRunsOfBitmap(new Uint8Array(1), 0, 9)).toThrow(RangeError);
  });

  it("agrees with a bit-by-bit reading on random bitmaps", () => {
    let x = 12345;
    for (let trial = 0; trial < 200; trial++) {
      const bytes = new Uint8Array(1 + (trial % 40));
      for (let i = 0; i < bytes.length; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        bytes[i] = trial % 3 === 0 ? (x >>> 16) & 0xff : (x >>> 16) % 5 === 0 ? 0xff : (x >>> 16) % 5 === 1 ? 0 : (x >>> 24) & 0xff;
      }
      const blocks = bytes.length * 8 - (trial % 8);
      const expected: BlockRun[] = [];
      for (let i = 0; i < blocks; i++) {
        if ((bytes[i >> 3]! >> (i & 7)) & 1) continue;
        const last = expected[expected.length - 1];
        if (last && last.start + last.count === 50 + i) last.count++;
        else expected.push({ start: 50 + i, count: 1 });
      }
      expect(freeRunsOfBitmap(bytes, 50, blocks)).toEqual(expected);
    }
  });

  it("joins runs that touch across groups and refuses overlaps", () => {
    expect(joinRuns([{ start: 0, count: 4 }, { start: 4, count: 4 }, { start: 10, count: 1 }, { start: 11, count: 0 }])).toEqual([
      { start: 0, count: 8 },
      { start: 10, count: 1 },
    ]);
    expect(() => joinRuns([{ start: 0, count: 5 }, { start: 4, count: 1 }])).toThrow(RangeError);
  });
});

describe("whole free clusters", () => {
  const MiB = 1 << 20;
  it("marks only clusters entirely inside free blocks of the filesystem", () => {
    const free = new Uint8Array(8);
    // filesystem at 1 MiB, 4 KiB blocks: blocks 256-767 are bytes 2-4 MiB of the disk (clusters 2, 3)
    expect(markFreeClusters(free, 8 * MiB, MiB, MiB, 4096, [{ start: 255, count: 514 }])).toBe(2);
    expect([...free]).toEqual([0, 0, 1, 1, 0, 0, 0, 0]);
    // one block short at either end: the cluster stays
    const f2 = new Uint8Array(8);
    expect(markFreeClusters(f2, 8 * MiB, MiB, MiB, 4096, [{ start: 257, count: 511 }])).toBe(1);
    expect([...f2]).toEqual([0, 0, 0, 1, 0, 0, 0, 0]);
    const f3 = new Uint8Array(8);
    expect(markFreeClusters(f3, 8 * MiB, MiB, MiB, 4096, [{ start: 256, count: 511 }])).toBe(1);
    expect([...f3]).toEqual([0, 0, 1, 0, 0, 0, 0, 0]);
  });

  it("handles a filesystem that is not cluster- or block-aligned (an MBR partition at sector 63)", () => {
    const free = new Uint8Array(4);
    const start = 63 * 512;
    // 1 KiB blocks; blocks covering bytes [start + b*1024, ...): cluster 1 is [1, 2) MiB
    const firstFullyInside = Math.ceil((MiB - start) / 1024); // the block starting at or after 1 MiB
    // a run that starts one block later than needed leaves cluster 1 alone
    expect(markFreeClusters(free, 4 * MiB, MiB, start, 1024, [{ start: firstFullyInside, count: 1024 }])).toBe(0);
    // from the block that straddles 1 MiB onwards, cluster 1 is entirely free
    expect(markFreeClusters(free, 4 * MiB, MiB, start, 1024, [{ start: firstFullyInside - 1, count: 1025 }])).toBe(1);
    expect([...free]).toEqual([0, 1, 0, 0]);
  });

  it("a last cluster cut by the disk's end is free only if free to the end", () => {
    const free = new Uint8Array(3);
    const disk = 2 * MiB + 8192;
    expect(markFreeClusters(free, disk, MiB, 0, 4096, [{ start: 512, count: 2 }])).toBe(1);
    expect([...free]).toEqual([0, 0, 1]);
    const f2 = new Uint8Array(3);
    expect(markFreeClusters(f2, disk, MiB, 0, 4096, [{ start: 512, count: 1 }])).toBe(0);
  });

  it("removes free clusters from allocated runs", () => {
    const runs = [
      { offset: 0, length: 4 * MiB },
      { offset: 6 * MiB, length: 2 * MiB },
    ];
    const free = Uint8Array.from([0, 1, 1, 0, 0, 0, 1, 0]);
    expect(withoutFreeClusters(runs, free, MiB)).toEqual([
      { offset: 0, length: MiB },
      { offset: 3 * MiB, length: MiB },
      { offset: 7 * MiB, length: MiB },
    ]);
    expect(withoutFreeClusters(runs, new Uint8Array(8), MiB)).toEqual(runs);
    expect(withoutFreeClusters(runs, new Uint8Array(8).fill(1), MiB)).toEqual([]);
  });
});

describe("bitmaps of real filesystems, against dumpe2fs", () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-free-"));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  async function compare(raw: string, offset: number): Promise<{ runs: BlockRun[]; uninitGroups: number }> {
    const device = new RawFileDevice(raw);
    try {
      const fsDevice = offset === 0 ? device : new SubDevice(device, offset, device.size - offset);
      const fs = await ExtFilesystem.open(fsDevice, raw);
      const ours = await readFreeBlockRuns(fs);
      const oracle = new Uint8Array(fs.sb.blocksCount);
      for (const [a, b] of await dumpe2fsFreeBlocks(raw, offset)) oracle.fill(1, a, b + 1);
      const mine = new Uint8Array(fs.sb.blocksCount);
      for (const r of ours.runs) mine.fill(1, r.start, r.start + r.count);
      // never free where dumpe2fs says used
      for (let b = 0; b < mine.length; b++) if (mine[b] === 1 && oracle[b] !== 1) throw new Error(`block ${b} called free but dumpe2fs says in use`);
      if (ours.uninitGroups === 0) expect(Buffer.from(mine).equals(Buffer.from(oracle))).toBe(true);
      return ours;
    } finally {
      device.close();
    }
  }

  it("aged ext4 with metadata_csum in a GPT partition: exactly dumpe2fs's free blocks", async () => {
    const disk = await buildAgedDisk(work, "aged", { sizeMiB: 64 });
    const r = await compare(disk.raw, disk.fsOffset);
    expect(r.runs.length).toBeGreaterThan(3);
  });

  it("ext4 without metadata_csum, ext3, and 1 KiB blocks with several groups", async () => {
    const a = await buildSmallDisk(work, "nocsum", { metadataCsum: false, sizeMiB: 32 });
    await compare(a.raw, a.fsOffset);
    const b = await buildSmallDisk(work, "ext3", { kind: "ext3", sizeMiB: 32 });
    await compare(b.raw, b.fsOffset);
    const c = join(work, "1k.raw");
    await execa("truncate", ["-s", "40M", c]);
    await execa("mkfs.ext4", ["-q", "-F", "-b", "1024", "-O", "metadata_csum,^flex_bg", c]);
    const r = await compare(c, 0);
    // uninit groups are counted as used: fewer free blocks than dumpe2fs, never more
    expect(r.uninitGroups).toBeGreaterThan(0);
  });

  it("refuses bigalloc, an errors state and a damaged bitmap", async () => {
    const big = join(work, "bigalloc.raw");
    await execa("truncate", ["-s", "64M", big]);
    await execa("mkfs.ext4", ["-q", "-F", "-O", "bigalloc", "-C", "65536", big]);
    const dev = new RawFileDevice(big);
    try {
      expect(skipFreeRefusal(parseSuperblock(await dev.read(SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES), dev.size, big))).toMatch(/bigalloc/);
    } finally {
      dev.close();
    }

    const disk = await buildSmallDisk(work, "errors", { gpt: true });
    await debugfsWrite(disk.raw, disk.fsOffset, ["ssv state 2"]);
    const d2 = new RawFileDevice(disk.raw);
    try {
      const fs = await ExtFilesystem.open(new SubDevice(d2, disk.fsOffset, d2.size - disk.fsOffset), disk.raw);
      expect(skipFreeRefusal(fs.sb)).toMatch(/errors/);
    } finally {
      d2.close();
    }

    const bad = await buildSmallDisk(work, "badbitmap", { gpt: true });
    const stats = (await execa("dumpe2fs", [`${bad.raw}?offset=${bad.fsOffset}`])).stdout;
    const bitmapBlock = Number(/Block bitmap at (\d+)/.exec(stats)![1]);
    await patch(bad, bad.fsOffset + bitmapBlock * 4096 + 4000, Buffer.from([0x5a]));
    const d3 = new RawFileDevice(bad.raw);
    try {
      const fs = await ExtFilesystem.open(new SubDevice(d3, bad.fsOffset, d3.size - bad.fsOffset), bad.raw);
      await expect(readFreeBlockRuns(fs)).rejects.toThrow(/block bitmap checksum mismatch/);
    } finally {
      d3.close();
    }
  });
});
