/**
 * The small corpus (scripts/corpus.ts): real ext4 disks wrapped as ploop images. The real
 * ploop checks and flattens every one to the recorded SHA-256, our reader agrees, and
 * debugfs sees the "day of changes" of 104.
 */
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildCorpus, type CorpusContainer } from "../../scripts/corpus.js";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { openImage } from "../../src/ploop/image.js";
import { ploopCheck, ploopFlatten } from "../helpers/ploop-tool.js";
import { scratchDir, sha256, sha256File } from "./fixtures.js";

describe("small corpus", () => {
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  let cts: CorpusContainer[] = [];
  beforeAll(async () => {
    ({ dir, cleanup } = await scratchDir("corpus"));
    const started = Date.now();
    cts = await buildCorpus(join(dir, "out"), { scale: "small" });
    expect(Date.now() - started).toBeLessThan(30_000);
  });
  afterAll(() => cleanup());

  it("has the four containers with ve.conf and SHA256SUMS", async () => {
    expect(cts.map((c) => c.ctid)).toEqual(["101", "102", "103", "104"]);
    expect(cts.map((c) => c.sizeBytes)).toEqual([256 << 20, 192 << 20, 256 << 20, 256 << 20]);
    const sums = await readFile(join(dir, "out", "SHA256SUMS"), "utf8");
    expect(sums).toBe(cts.map((c) => `${c.ctid} ${c.sha256}\n`).join(""));
    for (const c of cts) {
      expect(await readFile(join(dir, "out", c.ctid, "ve.conf"), "utf8")).toContain(`VE_PRIVATE="/vz/private/${c.ctid}"`);
      expect(c.descriptorPath).toBe(join(dir, "out", c.ctid, "root.hdd", "DiskDescriptor.xml"));
    }
    // 103 carries extra files, 104 a few MiB of changes on top of 101.
    const [c101, , c103, c104] = cts;
    expect(c103!.allocatedClusters).toBeGreaterThan(c101!.allocatedClusters + 20);
    expect(c104!.allocatedClusters).toBeGreaterThan(c101!.allocatedClusters);
    expect(c104!.allocatedClusters).toBeLessThan(c101!.allocatedClusters + 12);
  });

  it.each(["101", "102", "103", "104"])("CT %s: ploop check, real ploop flattening and our reader agree", async (ctid) => {
    const c = cts.find((x) => x.ctid === ctid)!;
    const r = await ploopCheck(c.imagePath);
    expect(r.exitCode, r.output).toBe(0);
    const img = await openImage(c.imagePath);
    const order = Array.from(img.bat).filter((e) => e !== 0);
    await img.close();
    expect(order).not.toEqual([...order].sort((a, b) => a - b)); // shuffled layout

    const flat = join(dir, `${ctid}.flat`);
    await ploopFlatten(c.descriptorPath, flat);
    expect(await sha256File(flat)).toBe(c.sha256);
    expect((await stat(flat)).size).toBe(c.sizeBytes);
    if (ctid === "104") {
      const ls = await execa("debugfs", ["-R", "ls -l /log", flat], { reject: false });
      expect(ls.stdout).toMatch(/2097152 .* day-1\.log/);
      expect(ls.stdout).toMatch(/day-3\.log/);
    }

    const disk = await openLogicalDisk(c.descriptorPath);
    try {
      const all = Buffer.alloc(disk.sizeBytes);
      for (const run of disk.allocatedRuns()) await disk.read(run.offset, all.subarray(run.offset, run.offset + run.length));
      expect(disk.bytesRead).toBe(c.allocatedClusters << 20);
      expect(sha256(all)).toBe(c.sha256);
    } finally {
      await disk.close();
    }
  });
});
