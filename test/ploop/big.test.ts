/**
 * A 10 GiB virtual disk with 3 allocated clusters: work is proportional to the data, not
 * to the virtual size (holes are never read).
 */
import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { createPloopImageWriter, writeDescriptorFile } from "../../src/ploop/writer.js";
import { ploopCheck, ploopOk } from "../helpers/ploop-tool.js";
import { pattern, scratchDir } from "./fixtures.js";

const CB = 1 << 20;
const SIZE = 10 * 1024 * CB;
const CLUSTERS = [7, 5000, 10239];

describe("10 GiB disk, 3 allocated clusters", () => {
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  let dd = "";
  beforeAll(async () => {
    ({ dir, cleanup } = await scratchDir("big"));
    const d = join(dir, "root.hdd");
    await mkdir(d);
    const w = await createPloopImageWriter(join(d, "root.hds"), { sizeBytes: SIZE, clusterBytes: CB, allocatedClusters: CLUSTERS });
    for (const c of CLUSTERS) await w.write(c * CB, pattern(10, c, CB));
    await w.finish();
    dd = await writeDescriptorFile(d, { imageFile: "root.hds", sizeBytes: SIZE, clusterBytes: CB });
  });
  afterAll(() => cleanup());

  it("image is 4 MiB and passes ploop check; ploop reports the size", async () => {
    const image = join(dir, "root.hdd", "root.hds");
    expect((await stat(image)).size).toBe(4 * CB);
    expect((await ploopCheck(image)).exitCode).toBe(0);
    expect(await ploopOk(["info", "-s", dd])).toMatch(/size:\s+20971520/);
  });

  it("allocatedRuns has 3 clusters and reading them costs ~3 MiB; holes cost nothing", async () => {
    const disk = await openLogicalDisk(dd);
    try {
      expect(disk.sizeBytes).toBe(SIZE);
      const runs = disk.allocatedRuns();
      expect(runs).toEqual(CLUSTERS.map((c) => ({ offset: c * CB, length: CB })));
      const buf = Buffer.alloc(CB);
      for (const r of runs) {
        await disk.read(r.offset, buf);
        expect(buf.equals(pattern(10, r.offset / CB, CB))).toBe(true);
      }
      expect(disk.bytesRead).toBe(3 * CB);
      // 64 MiB spanning a data cluster: only that cluster is read.
      const wide = Buffer.alloc(64 * CB);
      await disk.read(4990 * CB, wide);
      expect(wide.subarray(10 * CB, 11 * CB).equals(pattern(10, 5000, CB))).toBe(true);
      expect(wide.subarray(0, 10 * CB).every((b) => b === 0)).toBe(true);
      expect(disk.bytesRead).toBe(4 * CB);
    } finally {
      await disk.close();
    }
  });
});
