/**
 * Raw disk -> writeImageFromRaw -> (real ploop: check, flatten) and (our reader: read,
 * allocatedRuns) must all agree with the raw disk.
 */
import { randomBytes } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { decodeHeader } from "../../src/ploop/format.js";
import { openImage } from "../../src/ploop/image.js";
import { writeDescriptorFile, writeImageFromRaw } from "../../src/ploop/writer.js";
import { ploopCheck, ploopFlatten } from "../helpers/ploop-tool.js";
import { pattern, scratchDir, sha256 } from "./fixtures.js";

describe.each([
  { version: 1 as const, clusterBytes: 256 << 10 },
  { version: 2 as const, clusterBytes: 256 << 10 },
  { version: 1 as const, clusterBytes: 1 << 20 },
  { version: 2 as const, clusterBytes: 1 << 20 },
])("writeImageFromRaw v$version, $clusterBytes-byte clusters", ({ version, clusterBytes }) => {
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  let raw: Buffer;
  let expectedClusters: number[];
  beforeAll(async () => {
    ({ dir, cleanup } = await scratchDir(`rt${version}-${clusterBytes}`));
    // 40 clusters + a partial one: data, zero clusters, a cluster with a single byte set,
    // and a raw size that is not a multiple of the cluster (rounded up like ploop init).
    const clusters = 40;
    raw = Buffer.alloc(clusters * clusterBytes + 3000);
    expectedClusters = [];
    for (let c = 0; c <= clusters; c++) {
      const at = c * clusterBytes;
      if (c % 3 === 1) continue; // zero cluster: stays unallocated
      if (c === 7)
        raw[at + clusterBytes - 1] = 1; // one non-zero byte still allocates
      else if (c === clusters) raw.fill(0xab, at, at + 3000);
      else if (c % 5 === 0) randomBytes(clusterBytes).copy(raw, at);
      else pattern(version, c, clusterBytes).copy(raw, at);
      expectedClusters.push(c);
    }
    await writeFile(join(dir, "disk.raw"), raw);
  });
  afterAll(() => cleanup());

  it("passes ploop check, flattens (real ploop) to the raw disk, and reads back identically", async () => {
    const image = join(dir, "root.hds");
    const result = await writeImageFromRaw(join(dir, "disk.raw"), image, { version, clusterBytes, shuffle: true, seed: 42, skipZeroClusters: true });
    const padded = Buffer.concat([raw, Buffer.alloc(result.sizeBytes - raw.length)]);
    expect(result.sizeBytes % clusterBytes).toBe(0);
    expect(result.allocated).toEqual(expectedClusters);
    expect((await stat(image)).size).toBe(result.fileBytes);

    const header = decodeHeader(await readFile(image), image);
    expect(header.version).toBe(version);
    // Shuffled: the physical order is not the virtual order.
    const img = await openImage(image);
    const offsets = expectedClusters.map((c) => img.clusterOffset(c));
    await img.close();
    expect([...offsets].sort((a, b) => a - b)).not.toEqual(offsets);

    const check = await ploopCheck(image);
    expect(check.exitCode, check.output).toBe(0);

    const dd = await writeDescriptorFile(dir, { imageFile: "root.hds", sizeBytes: result.sizeBytes, clusterBytes });
    await ploopFlatten(dd, join(dir, "flat.raw"));
    const flat = await readFile(join(dir, "flat.raw"));
    expect(flat.length).toBe(padded.length);
    expect(sha256(flat)).toBe(sha256(padded));

    const disk = await openLogicalDisk(dd);
    try {
      expect(disk.sizeBytes).toBe(result.sizeBytes);
      expect(disk.clusterBytes).toBe(clusterBytes);
      expect(disk.formatVersion).toBe(version);
      expect(disk.inUseImages).toEqual([]);
      const runs = disk.allocatedRuns();
      const fromRuns: number[] = [];
      for (const r of runs) for (let o = r.offset; o < r.offset + r.length; o += clusterBytes) fromRuns.push(o / clusterBytes);
      expect(fromRuns).toEqual(expectedClusters);
      const all = Buffer.alloc(disk.sizeBytes);
      await disk.read(0, all);
      expect(sha256(all)).toBe(sha256(padded));
      // Holes are never read: exactly the allocated clusters came from the file.
      expect(disk.bytesRead).toBe(expectedClusters.length * clusterBytes);
      // Unaligned reads across cluster and hole boundaries.
      for (const [off, len] of [
        [clusterBytes - 7, 20],
        [3 * clusterBytes + 5, 2 * clusterBytes + 11],
        [0, 1],
        [disk.sizeBytes - 13, 13],
      ] as const) {
        const part = Buffer.alloc(len);
        await disk.read(off, part);
        expect(part.equals(padded.subarray(off, off + len))).toBe(true);
      }
      await expect(disk.read(disk.sizeBytes - 1, Buffer.alloc(2))).rejects.toThrow(RangeError);
    } finally {
      await disk.close();
    }
  });
});
