/**
 * A chain with two user snapshots made by the real `ploop snapshot`, data written into each
 * delta as the kernel would (delta-writer), optionally grown in between (`ploop grow` only
 * enlarges the top): our logical disk must equal the real ploop's flattening, for the live
 * top and for each snapshot view.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openLogicalDisk, type LogicalDisk } from "../../src/ploop/disk.js";
import { TOP_GUID } from "../../src/ploop/format.js";
import { writeDescriptorFile, writeImageFromRaw } from "../../src/ploop/writer.js";
import { setImageInUse, topImagePath, writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopCheck, ploopFlatten, ploopOk, ploopSnapshot, ploopSnapshotList } from "../helpers/ploop-tool.js";
import { pattern, scratchDir, sha256 } from "./fixtures.js";

const S1 = "{aaaaaaaa-1111-4111-8111-111111111111}";
const S2 = "{bbbbbbbb-2222-4222-8222-222222222222}";

async function readAll(disk: LogicalDisk): Promise<Buffer> {
  const buf = Buffer.alloc(disk.sizeBytes);
  // Odd-sized pieces so reads straddle clusters and images.
  const piece = disk.clusterBytes * 3 + 4097;
  for (let off = 0; off < buf.length; off += piece) await disk.read(off, buf.subarray(off, Math.min(buf.length, off + piece)));
  return buf;
}

function clustersOf(disk: LogicalDisk): number[] {
  const out: number[] = [];
  for (const r of disk.allocatedRuns()) {
    expect(r.offset % disk.clusterBytes).toBe(0);
    for (let o = r.offset; o < r.offset + r.length; o += disk.clusterBytes) out.push(o / disk.clusterBytes);
  }
  return out;
}

describe.each([
  { version: 2 as const, clusterBytes: 1 << 20, grow: true },
  { version: 1 as const, clusterBytes: 256 << 10, grow: false },
])("chain v$version, $clusterBytes-byte clusters, grow=$grow", ({ version, clusterBytes, grow }) => {
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  let dd = "";
  const baseClusters = 24;
  const grownClusters = 40;
  /** Expected logical content as of each view. */
  const views = new Map<string, Buffer>();
  const allocated = new Map<string, Set<number>>();

  beforeAll(async () => {
    ({ dir, cleanup } = await scratchDir(`chain${version}`));
    const disk = join(dir, "root.hdd");
    await mkdir(disk);
    let model = Buffer.alloc(baseClusters * clusterBytes);
    const baseSet = new Set<number>();
    for (let c = 0; c < baseClusters; c++) {
      if (c % 4 === 3) continue;
      pattern(0, c, clusterBytes).copy(model, c * clusterBytes);
      baseSet.add(c);
    }
    await writeFile(join(dir, "base.raw"), model);
    await writeImageFromRaw(join(dir, "base.raw"), join(disk, "root.hds"), { version, clusterBytes, shuffle: true, seed: 7, skipZeroClusters: true });
    dd = await writeDescriptorFile(disk, { imageFile: "root.hds", sizeBytes: model.length, clusterBytes });
    views.set(S1, Buffer.from(model));
    allocated.set(S1, new Set(baseSet));

    // Snapshot 1: base frozen as S1; writes land in the first delta.
    await ploopSnapshot(dd, S1);
    const set = new Set(baseSet);
    const put = async (c: number, data: Buffer): Promise<void> => {
      await writeClusterToTop(dd, c, data);
      data.copy(model, c * clusterBytes);
      if (data.length < clusterBytes && !set.has(c)) model.fill(0, c * clusterBytes + data.length, (c + 1) * clusterBytes);
      set.add(c);
    };
    await put(3, pattern(1, 3, clusterBytes)); // was a hole
    await put(5, pattern(1, 5, clusterBytes)); // shadows base
    await put(6, randomBytes(clusterBytes)); // shadows base
    await put(11, pattern(1, 11, clusterBytes >> 1)); // hole, half written: rest zeros
    views.set(S2, Buffer.from(model));
    allocated.set(S2, new Set(set));

    // Snapshot 2; optionally grow (only the new top gets the larger size).
    await ploopSnapshot(dd, S2);
    if (grow) {
      await ploopOk(["grow", "-s", `${(grownClusters * clusterBytes) / 512}`, dd]);
      model = Buffer.concat([model, Buffer.alloc((grownClusters - baseClusters) * clusterBytes)]);
    }
    await put(5, pattern(2, 5, clusterBytes)); // shadows delta 1
    await put(5, pattern(3, 5, clusterBytes)); // rewrite: reuses the top's own cluster
    await put(0, pattern(2, 0, clusterBytes)); // shadows base
    await put(15, pattern(2, 15, clusterBytes)); // hole
    if (grow) await put(33, pattern(2, 33, clusterBytes)); // beyond the base's size
    views.set(TOP_GUID, model);
    allocated.set(TOP_GUID, set);
  });
  afterAll(() => cleanup());

  it("ploop sees the chain we expect, and every image passes ploop check", async () => {
    const listed = await ploopSnapshotList(dd, TOP_GUID);
    expect(listed.map((l) => l.guid)).toEqual([TOP_GUID, S2, S1]);
    for (const l of listed) {
      const r = await ploopCheck(l.file);
      expect(r.exitCode, `${l.file}\n${r.output}`).toBe(0);
    }
  });

  it.each([TOP_GUID, S2, S1])("view as of %s equals the model and the real ploop's flattening", async (guid) => {
    const expected = views.get(guid)!;
    const flatPath = join(dir, `flat-${guid}.raw`);
    await ploopFlatten(dd, flatPath, { topGuid: guid });
    const flat = await readFile(flatPath);
    expect(flat.length).toBe(expected.length);
    expect(sha256(flat)).toBe(sha256(expected));

    const disk = await openLogicalDisk(dd, guid === TOP_GUID ? {} : { topGuid: guid });
    try {
      expect(disk.topGuid).toBe(guid);
      expect(disk.sizeBytes).toBe(expected.length);
      expect(disk.imagePaths.length).toBe(guid === TOP_GUID ? 3 : guid === S2 ? 2 : 1);
      expect(clustersOf(disk)).toEqual([...allocated.get(guid)!].sort((a, b) => a - b));
      const got = await readAll(disk);
      expect(sha256(got)).toBe(sha256(expected));
      expect(disk.bytesRead).toBe(allocated.get(guid)!.size * clusterBytes);
    } finally {
      await disk.close();
    }
  });

  it("running container: the top marked in use is reported, lower images are not", async () => {
    const top = await topImagePath(dd);
    await setImageInUse(top, true);
    try {
      const disk = await openLogicalDisk(dd);
      expect(disk.inUseImages).toEqual([top]);
      expect(disk.images.map((i) => i.inUse)).toEqual([false, false, true]);
      await disk.close();
      const frozen = await openLogicalDisk(dd, { topGuid: S2 });
      expect(frozen.inUseImages).toEqual([]);
      await frozen.close();
    } finally {
      await setImageInUse(top, false);
    }
  });
});
