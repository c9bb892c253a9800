/**
 * The block bitmaps of backup --skip-free as our reader reads them, against dumpe2fs on
 * real filesystems (the pure arithmetic is in test/unit/skip-free.test.ts): an aged ext4
 * with metadata_csum in a GPT partition, ext4 without metadata_csum (gdt_csum), ext3 (no
 * group checksums), 1 KiB blocks with uninitialized groups, and refusals (bigalloc, errors
 * state, a damaged bitmap).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExtFilesystem } from "../../src/fs/ext/filesystem.js";
import { readFreeBlockRuns, skipFreeRefusal, type BlockRun } from "../../src/fs/ext/free-space.js";
import { parseSuperblock, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET } from "../../src/fs/ext/superblock.js";
import { SubDevice } from "../../src/fs/block-device.js";
import { buildAgedDisk, debugfsWrite, dumpe2fsFreeBlocks } from "../helpers/aged-disk.js";
import { RawFileDevice } from "../helpers/raw-device.js";
import { buildSmallDisk, patch } from "../helpers/small-disks.js";

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
