/**
 * The restore writer: output passes `ploop check -f -c -r`, flattens (real ploop) to the
 * expected disk, and the real ploop can snapshot and snapshot-merge on it.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, readdir, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { CIF_EMPTY, decodeHeader } from "../../src/ploop/format.js";
import { createPloopImageWriter, writeDescriptorFile } from "../../src/ploop/writer.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopCheck, ploopFlatten, ploopSnapshot, ploopSnapshotList, ploopSnapshotMerge } from "../helpers/ploop-tool.js";
import { pattern, scratchDir, sha256 } from "./fixtures.js";

let dir = "";
let cleanup: () => Promise<void> = async () => {};
beforeAll(async () => {
  ({ dir, cleanup } = await scratchDir("writer"));
});
afterAll(() => cleanup());

/** Split [start, end) into pieces of 1..maxPiece bytes, like content-defined chunks. */
function pieces(start: number, end: number, maxPiece: number, random: () => number): [number, number][] {
  const out: [number, number][] = [];
  for (let at = start; at < end; ) {
    const len = Math.min(end - at, 1 + Math.floor(random() * maxPiece));
    out.push([at, len]);
    at += len;
  }
  return out;
}

/** Runs of consecutive cluster indices. */
function runsOf(clusters: readonly number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (const c of clusters) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last[1] === c) last[1] = c + 1;
    else runs.push([c, c + 1]);
  }
  return runs;
}

describe("restore writer against the real ploop", () => {
  const CB = 1 << 20;
  const SIZE = 64 * CB;
  const allocated = [0, 1, 2, 5, 6, 10, 11, 12, 13, 30, 62, 63];
  const unwritten = 30; // allocated but never written: must become explicit zeros
  const half = 11; // only its first half written
  let expected: Buffer;
  let d = "";
  let image = "";
  let dd = "";

  beforeAll(async () => {
    d = join(dir, "restore");
    await mkdir(d);
    image = join(d, "root.hdd");
    expected = Buffer.alloc(SIZE);
    for (const c of allocated) {
      if (c === unwritten) continue;
      const data = c % 2 === 0 ? randomBytes(CB) : pattern(4, c, CB);
      if (c === half) data.fill(0, CB / 2);
      data.copy(expected, c * CB);
    }
    const w = await createPloopImageWriter(image, { sizeBytes: SIZE, clusterBytes: CB, allocatedClusters: allocated });
    let seed = 1;
    const random = (): number => (seed = (seed * 48271) % 2147483647) / 2147483647;
    const writes: [number, number][] = [];
    for (const [a, b] of runsOf(allocated.filter((c) => c !== unwritten))) {
      const end = a <= half && half < b ? half * CB + CB / 2 : b * CB;
      writes.push(...pieces(a * CB, end, 300 << 10, random));
      if (end < b * CB) writes.push(...pieces((half + 1) * CB, b * CB, 300 << 10, random));
    }
    // Any order, all at once.
    writes.sort(() => random() - 0.5);
    await Promise.all(writes.map(([at, len]) => w.write(at, expected.subarray(at, at + len))));
    await expect(w.write(3 * CB, Buffer.alloc(10))).rejects.toThrow(/cluster 3, which is not allocated/);
    await expect(w.write(SIZE - 5, Buffer.alloc(10))).rejects.toThrow(RangeError);
    await w.finish();
    dd = await writeDescriptorFile(d, { imageFile: "root.hdd", sizeBytes: SIZE, clusterBytes: CB });
  });

  it("is a complete, non-sparse v2 image that passes ploop check -f -c -r", async () => {
    const st = await stat(image);
    expect(st.size).toBe((1 + allocated.length) * CB);
    expect(st.blocks * 512).toBeGreaterThanOrEqual(st.size);
    const h = decodeHeader(await readFile(image), image);
    expect(h.version).toBe(2);
    expect(h.flags & CIF_EMPTY).toBe(0);
    expect(h.diskInUse).toBe(0);
    const r = await ploopCheck(image);
    expect(r.exitCode, r.output).toBe(0);
    expect((await readdir(d)).sort()).toEqual(["DiskDescriptor.xml", "root.hdd"]);
  });

  it("flattens with the real ploop to the expected disk, and reads back with ours", async () => {
    await ploopFlatten(dd, join(dir, "restore.flat"));
    expect(sha256(await readFile(join(dir, "restore.flat")))).toBe(sha256(expected));
    const disk = await openLogicalDisk(dd);
    try {
      const all = Buffer.alloc(SIZE);
      await disk.read(0, all);
      expect(sha256(all)).toBe(sha256(expected));
      expect(disk.allocatedRuns().map((r) => [r.offset / CB, (r.offset + r.length) / CB])).toEqual(runsOf(allocated));
    } finally {
      await disk.close();
    }
  });

  it("the real ploop can snapshot and snapshot-merge on it", async () => {
    const S = "{dddddddd-4444-4444-8444-444444444444}";
    await ploopSnapshot(dd, S);
    expect((await ploopSnapshotList(dd)).length).toBe(2);
    const after = Buffer.from(expected);
    for (const c of [3, 11, 40]) {
      const data = pattern(8, c, CB);
      await writeClusterToTop(dd, c, data);
      data.copy(after, c * CB);
    }
    await ploopSnapshotMerge(dd);
    const left = await ploopSnapshotList(dd);
    expect(left.length).toBe(1);
    const r = await ploopCheck(left[0]!.file);
    expect(r.exitCode, r.output).toBe(0);
    await ploopFlatten(dd, join(dir, "merged.flat"));
    expect(sha256(await readFile(join(dir, "merged.flat")))).toBe(sha256(after));
    const disk = await openLogicalDisk(dd);
    const all = Buffer.alloc(SIZE);
    await disk.read(0, all);
    await disk.close();
    expect(sha256(all)).toBe(sha256(after));
  });
});

describe("restore writer edge cases", () => {
  it("an empty disk: header only, CIF_Empty set, ploop check clean", async () => {
    const image = join(dir, "empty.hdd");
    const w = await createPloopImageWriter(image, { sizeBytes: 100 << 20, clusterBytes: 1 << 20, allocatedClusters: [] });
    await w.finish();
    const h = decodeHeader(await readFile(image), image);
    expect(h.flags).toBe(CIF_EMPTY);
    expect((await stat(image)).size).toBe(1 << 20);
    expect((await ploopCheck(image)).exitCode).toBe(0);
  });

  it("refuses an existing file; abort deletes the partial image", async () => {
    const image = join(dir, "abort.hdd");
    await writeFile(image, "x");
    await expect(createPloopImageWriter(image, { sizeBytes: 1 << 20, clusterBytes: 1 << 20, allocatedClusters: [0] })).rejects.toThrow(/EEXIST/);
    const other = join(dir, "abort2.hdd");
    const w = await createPloopImageWriter(other, { sizeBytes: 4 << 20, clusterBytes: 1 << 20, allocatedClusters: [1, 2] });
    await w.write(1 << 20, Buffer.alloc(1000, 1));
    await w.abort();
    expect((await readdir(dir)).includes("abort2.hdd")).toBe(false);
  });

  it("rejects bad layouts", async () => {
    await expect(createPloopImageWriter(join(dir, "bad1"), { sizeBytes: 4 << 20, clusterBytes: 1 << 20, allocatedClusters: [2, 1] })).rejects.toThrow(/sorted/);
    await expect(createPloopImageWriter(join(dir, "bad2"), { sizeBytes: 4 << 20, clusterBytes: 1 << 20, allocatedClusters: [4] })).rejects.toThrow(
      /outside the disk/,
    );
    await expect(createPloopImageWriter(join(dir, "bad3"), { sizeBytes: 4 << 20, clusterBytes: 3000, allocatedClusters: [] })).rejects.toThrow(/cluster size/);
  });

  it("property: any split and order of writes reads back exactly (our reader)", async () => {
    const CB = 64 << 10;
    const CLUSTERS = 24;
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 0, max: CLUSTERS - 1 }), { maxLength: CLUSTERS }),
        fc.array(fc.integer({ min: 1, max: 3 * CB }), { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        async (set, sizes, overlap) => {
          const allocated = [...set].sort((a, b) => a - b);
          const image = join(dir, `prop-${n++}.hdd`);
          const expected = Buffer.alloc(CLUSTERS * CB);
          const w = await createPloopImageWriter(image, { sizeBytes: CLUSTERS * CB, clusterBytes: CB, allocatedClusters: allocated });
          const jobs: Promise<void>[] = [];
          let k = 0;
          for (const [a, b] of runsOf(allocated)) {
            for (let at = a * CB; at < b * CB; ) {
              const len = Math.min(sizes[k++ % sizes.length]!, b * CB - at);
              const data = randomBytes(len);
              data.copy(expected, at);
              jobs.push(w.write(at, data));
              // Sometimes leave a gap (must read as zeros) or rewrite the same bytes.
              if (overlap && len > 10) jobs.push(w.write(at + 5, data.subarray(5, 10)));
              at += len + (k % 5 === 0 ? Math.min(777, b * CB - at - len) : 0);
            }
          }
          await Promise.all(jobs);
          await w.finish();
          const dd = join(dir, `prop-${n}.d`);
          await mkdir(dd);
          await rename(image, join(dd, "root.hdd"));
          const ddPath = await writeDescriptorFile(dd, { imageFile: "root.hdd", sizeBytes: CLUSTERS * CB, clusterBytes: CB });
          const disk = await openLogicalDisk(ddPath);
          const got = Buffer.alloc(CLUSTERS * CB);
          await disk.read(0, got);
          await disk.close();
          expect((await stat(join(dd, "root.hdd"))).size).toBe((1 + allocated.length) * CB);
          return got.equals(expected);
        },
      ),
      { numRuns: 25 },
    );
  });
});
