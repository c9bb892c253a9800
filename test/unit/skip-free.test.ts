/**
 * backup --skip-free without real disks: the free-space arithmetic (bitmap -> free block
 * runs -> whole free clusters -> allocated runs without them), and the pipeline on an
 * in-memory disk with a free map, full and incremental: free clusters become holes, a
 * cluster freed since the previous backup is dropped even though it was not written, one
 * used again is read, everything else restores bit-identical.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withoutFreeClusters, type FreeClusters } from "../../src/backup/free-space.js";
import { backupDisk, type BackupSource } from "../../src/backup/pipeline.js";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import { freeRunsOfBitmap, joinRuns, markFreeClusters, type BlockRun } from "../../src/fs/ext/free-space.js";
import { newRepositoryConfig } from "../../src/repository/config.js";
import { ManifestCache } from "../../src/repository/known-chunks.js";
import { Repository } from "../../src/repository/repository.js";
import { restoreToStream } from "../../src/restore/restore.js";
import { MemoryStore } from "../../src/uploader/memory.js";
import { MemoryDisk } from "./memory-disk.js";

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
    expect(
      joinRuns([
        { start: 0, count: 4 },
        { start: 4, count: 4 },
        { start: 10, count: 1 },
        { start: 11, count: 0 },
      ]),
    ).toEqual([
      { start: 0, count: 8 },
      { start: 10, count: 1 },
    ]);
    expect(() =>
      joinRuns([
        { start: 0, count: 5 },
        { start: 4, count: 1 },
      ]),
    ).toThrow(RangeError);
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

describe("the pipeline with a free map (in-memory disk and store)", () => {
  const CLUSTER = 64 << 10;
  const CLUSTERS = 40;
  let state: string;
  let repo: Repository;
  let cache: ManifestCache;
  const options = (time: string) => ({ host: "node1", time: new Date(time), workerThreads: 0, uploadConcurrency: 4 });

  beforeAll(async () => {
    state = await mkdtemp(join(tmpdir(), "pv-unit-free-"));
    repo = await Repository.init(new MemoryStore("unit-free"), newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
    cache = ManifestCache.forRepository(repo, state);
  });
  afterAll(async () => {
    await rm(state, { recursive: true, force: true });
  });

  const freeOf = (clusters: number[]): FreeClusters => {
    const map = new Uint8Array(CLUSTERS);
    for (const c of clusters) map[c] = 1;
    return { map, clusterBytes: CLUSTER, filesystems: ["test"] };
  };
  const source = (disk: MemoryDisk, free: FreeClusters | null, previous: BackupSource["previous"] = null): BackupSource => ({
    disk,
    ct: "201",
    previous,
    descriptorXml: Buffer.from("<Parallels_disk_image/>"),
    containerConfig: null,
    snapshotGuid: null,
    sourceFormatVersion: 2,
    free,
  });
  async function restored(id: string): Promise<Buffer> {
    const ref = { ct: "201", id };
    const parts: Buffer[] = [];
    const out = new Writable({
      write(chunk: Buffer, _encoding, done) {
        parts.push(Buffer.from(chunk));
        done();
      },
    });
    await restoreToStream(repo, ref, await repo.loadManifest(ref), out, { concurrency: 4 });
    return Buffer.concat(parts);
  }
  const withZeros = (bytes: Buffer, clusters: number[]): Buffer => {
    const out = Buffer.from(bytes);
    for (const c of clusters) out.fill(0, c * CLUSTER, (c + 1) * CLUSTER);
    return out;
  };

  it("full, then incremental: free clusters are holes, freed ones dropped, reused ones read", async () => {
    const bytes = randomBytes(CLUSTERS * CLUSTER);
    const present = Array.from({ length: CLUSTERS }, (_, i) => i % 9 !== 8);
    present.forEach((p, i) => p || bytes.fill(0, i * CLUSTER, (i + 1) * CLUSTER)); // unallocated clusters read as zeros
    const disk = new MemoryDisk(bytes, CLUSTER, present);
    const freeFirst = [3, 4, 5, 20, 30];
    const first = await backupDisk(repo, cache, source(disk, freeOf(freeFirst)), options("2026-01-02T00:00:00Z"));
    expect(first.manifest.metadata.freeSpace).toEqual({ skippedBytes: 5 * CLUSTER, clusterBytes: CLUSTER, filesystems: ["test"] });
    expect(first.stats.readBytes).toBe((present.filter(Boolean).length - 5) * CLUSTER);
    expect((await restored(first.manifest.metadata.id)).equals(withZeros(bytes, freeFirst))).toBe(true);

    // next "day": clusters 10-12 freed (not written: only the bitmap, elsewhere, changed),
    // cluster 4 used again and written, cluster 25 written
    randomBytes(CLUSTER).copy(bytes, 4 * CLUSTER);
    randomBytes(CLUSTER).copy(bytes, 25 * CLUSTER);
    const written = new Uint8Array(CLUSTERS);
    written[4] = 1;
    written[25] = 1;
    const freeSecond = [3, 5, 10, 11, 12, 20, 30];
    const previous = { entries: first.manifest.entries, written, clusterBytes: CLUSTER, backupId: first.manifest.metadata.id, snapshotGuid: "{s}" };
    const second = await backupDisk(repo, cache, source(disk, freeOf(freeSecond), previous), options("2026-01-03T00:00:00Z"));
    expect(second.stats.reusedChunks).toBeGreaterThan(0);
    expect(second.manifest.metadata.freeSpace?.skippedBytes).toBe(7 * CLUSTER);
    const holes = second.manifest.entries.filter((e) => e.kind === "hole");
    for (const c of [10, 11, 12]) expect(holes.some((h) => h.offset <= c * CLUSTER && h.offset + h.length >= (c + 1) * CLUSTER)).toBe(true);
    expect((await restored(second.manifest.metadata.id)).equals(withZeros(bytes, freeSecond))).toBe(true);

    // without a free map the same disk is read and restored whole, freeSpace absent
    const plain = await backupDisk(repo, cache, source(disk, null), options("2026-01-04T00:00:00Z"));
    expect(plain.manifest.metadata.freeSpace).toBeUndefined();
    expect((await restored(plain.manifest.metadata.id)).equals(bytes)).toBe(true);
  });
});
