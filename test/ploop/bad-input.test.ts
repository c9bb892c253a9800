/**
 * Damaged images and descriptors: we refuse them with a one-line PloopFormatError naming
 * the file, and for image damage the real `ploop check -f -c -r` agrees they are broken.
 * Also: raw-mode (Plain) disks made by the real ploop read correctly.
 */
import { copyFile, mkdir, open, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PloopFormatError } from "../../src/errors.js";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { TOP_GUID } from "../../src/ploop/format.js";
import { openImage } from "../../src/ploop/image.js";
import { createPloopImageWriter, writeDescriptorFile, writeImageFromRaw } from "../../src/ploop/writer.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopCheck, ploopFlatten, ploopOk, ploopSnapshot } from "../helpers/ploop-tool.js";
import { pattern, scratchDir, sha256 } from "./fixtures.js";

const CB = 256 << 10;
const CLUSTERS = 16;

let dir = "";
let cleanup: () => Promise<void> = async () => {};
let good = "";

beforeAll(async () => {
  ({ dir, cleanup } = await scratchDir("bad"));
  const raw = Buffer.alloc(CLUSTERS * CB);
  for (const c of [1, 2, 5, 9, 15]) pattern(9, c, CB).copy(raw, c * CB);
  await writeFile(join(dir, "disk.raw"), raw);
  good = join(dir, "good.hds");
  await writeImageFromRaw(join(dir, "disk.raw"), good, { version: 2, clusterBytes: CB, shuffle: true, seed: 3, skipZeroClusters: true });
});
afterAll(() => cleanup());

/** A copy of the good image in its own disk directory, damaged by `damage`. */
async function damaged(name: string, damage: (path: string) => Promise<void>): Promise<{ image: string; dd: string }> {
  const d = join(dir, name);
  await mkdir(d);
  const image = join(d, "root.hds");
  await copyFile(good, image);
  await damage(image);
  const dd = await writeDescriptorFile(d, { imageFile: "root.hds", sizeBytes: CLUSTERS * CB, clusterBytes: CB });
  return { image, dd };
}

async function patch(path: string, at: number, bytes: Buffer): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.write(bytes, 0, bytes.length, at);
  } finally {
    await fh.close();
  }
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v, 0);
  return b;
};

async function expectRefused(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error, String(pattern)).toBeInstanceOf(PloopFormatError);
  expect((error as Error).message).toMatch(pattern);
  expect((error as Error).message).not.toContain("\n");
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("damaged images", () => {
  it("the undamaged image is fine (control)", async () => {
    expect((await ploopCheck(good)).exitCode).toBe(0);
    const img = await openImage(good);
    expect(img.allocatedClusters).toBe(5);
    await img.close();
  });

  it("truncated inside the header", async () => {
    const { image, dd } = await damaged("trunc-header", (p) => truncate(p, 30));
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: truncated image \\(30 bytes`));
    expect((await ploopCheck(image)).exitCode).not.toBe(0);
  });

  it("truncated inside the BAT", async () => {
    const { image, dd } = await damaged("trunc-bat", (p) => truncate(p, 100));
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: truncated image \\(100 bytes; header and BAT need 128\\)`));
    expect((await ploopCheck(image)).exitCode).not.toBe(0);
  });

  it("truncated data: a BAT entry now points beyond end of file", async () => {
    const { image, dd } = await damaged("trunc-data", (p) => truncate(p, 3 * CB + 1000));
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: BAT entry of cluster \\d+ points beyond end of file`));
    expect((await ploopCheck(image)).exitCode).not.toBe(0);
  });

  it("wrong signature", async () => {
    const { image, dd } = await damaged("sig", (p) => patch(p, 0, Buffer.from("QFI\xfb\0\0\0\x03", "latin1")));
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: not a ploop image \\(signature "QFI\\.\\.\\.\\.\\.`));
    expect((await ploopCheck(image)).exitCode).not.toBe(0);
  });

  it("BAT entry beyond EOF", async () => {
    const { image, dd } = await damaged("eof", (p) => patch(p, 64 + 4 * 3, u32(1000)));
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: BAT entry of cluster 3 points beyond end of file \\(file cluster 1000`));
    expect((await ploopCheck(image)).exitCode).toBe(11);
  });

  it("duplicate BAT entries", async () => {
    const bat = (await readFile(good)).subarray(64, 64 + 4 * CLUSTERS);
    const { image, dd } = await damaged("dup", (p) => patch(p, 64 + 4 * 9, bat.subarray(4 * 2, 4 * 2 + 4)));
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: BAT entries of clusters 2 and 9 both point at file cluster`));
    expect((await ploopCheck(image)).exitCode).toBe(11);
  });

  it("BAT entry into the header/BAT area", async () => {
    // 20000 clusters of 64K need a 2-cluster BAT area, so file cluster 1 is BAT.
    const d = join(dir, "hdr");
    await mkdir(d);
    const image = join(d, "root.hds");
    const w = await createPloopImageWriter(image, { sizeBytes: 20000 * 65536, clusterBytes: 65536, allocatedClusters: [0, 7] });
    await w.write(0, pattern(1, 0, 65536));
    await w.finish();
    expect((await ploopCheck(image)).exitCode).toBe(0);
    await patch(image, 64 + 4 * 7, u32(1));
    const dd = await writeDescriptorFile(d, { imageFile: "root.hds", sizeBytes: 20000 * 65536, clusterBytes: 65536 });
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: BAT entry of cluster 7 points into the header/BAT area \\(file cluster 1\\)$`));
    expect((await ploopCheck(image)).exitCode).not.toBe(0);
  });

  it("format conversion in progress", async () => {
    const { image, dd } = await damaged("convert", (p) => patch(p, 0x34, u32(2)));
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(image)}: v1/v2 format conversion in progress`));
  });

  it("cluster size differs from the descriptor's Blocksize", async () => {
    const d = join(dir, "bs");
    await mkdir(d);
    await copyFile(good, join(d, "root.hds"));
    const dd = await writeDescriptorFile(d, { imageFile: "root.hds", sizeBytes: CLUSTERS * CB, clusterBytes: 1 << 20 });
    await expectRefused(openLogicalDisk(dd), /root\.hds: cluster size 512 sectors differs from <Blocksize> 2048 in .*DiskDescriptor\.xml$/);
  });
});

describe("damaged descriptors", () => {
  it("missing image file names the image and the descriptor", async () => {
    const d = join(dir, "missing");
    await mkdir(d);
    await copyFile(good, join(d, "root.hds"));
    const dd = await writeDescriptorFile(d, {
      sizeBytes: CLUSTERS * CB,
      clusterBytes: CB,
      images: [{ guid: "{12345678-1234-1234-1234-123456789abc}", file: "root.hds" }, { file: "root.hds.{0a0a0a0a-0000-0000-0000-000000000000}" }],
    });
    await expectRefused(
      openLogicalDisk(dd),
      new RegExp(`^${esc(join(d, "root.hds.{0a0a0a0a-0000-0000-0000-000000000000}"))}: image file missing \\(referenced by ${esc(dd)}\\)$`),
    );
    // The snapshot view below the missing top still opens.
    const below = await openLogicalDisk(dd, { topGuid: "12345678-1234-1234-1234-123456789ABC" });
    expect(below.imagePaths).toEqual([join(d, "root.hds")]);
    await below.close();
  });

  it("malformed XML", async () => {
    const d = join(dir, "xml");
    await mkdir(d);
    const dd = join(d, "DiskDescriptor.xml");
    await writeFile(dd, '<?xml version="1.0"?>\n<Parallels_disk_image>\n  <Disk_Parameters>\n</Parallels_disk_image>\n');
    await expectRefused(openLogicalDisk(dd), new RegExp(`^${esc(dd)}: malformed XML: .*\\(line 4`));
  });

  it("missing descriptor", async () => {
    await expect(openLogicalDisk(join(dir, "nope", "DiskDescriptor.xml"))).rejects.toThrow(/nope\/DiskDescriptor\.xml: cannot read disk descriptor \(ENOENT\)/);
  });
});

describe("raw-mode disk made by the real ploop", () => {
  it("Plain base + ploop1 delta (both typed Plain by ploop 1.15) reads like ploop flattens it", async () => {
    const d = join(dir, "rawmode");
    await mkdir(d);
    await copyFile(good, join(d, "root.hds"));
    const dd = await writeDescriptorFile(d, { imageFile: "root.hds", sizeBytes: CLUSTERS * CB, clusterBytes: CB });
    await ploopOk(["convert", "-f", "raw", dd]); // root.hds becomes a raw file
    await ploopSnapshot(dd, "{cccccccc-3333-4333-8333-333333333333}");
    expect((await readFile(dd, "utf8")).match(/<Type>Plain<\/Type>/g)?.length).toBe(2);
    const expected = await readFile(join(dir, "disk.raw"));
    pattern(5, 4, CB).copy(expected, 4 * CB);
    pattern(5, 9, CB).copy(expected, 9 * CB);
    await writeClusterToTop(dd, 4, pattern(5, 4, CB));
    await writeClusterToTop(dd, 9, pattern(5, 9, CB));
    await ploopFlatten(dd, join(d, "..", "rawmode.flat"));
    expect(sha256(await readFile(join(d, "..", "rawmode.flat")))).toBe(sha256(expected));
    const disk = await openLogicalDisk(dd);
    try {
      expect(disk.images.map((i) => i.kind)).toEqual(["raw", "ploop"]);
      expect(disk.topGuid).toBe(TOP_GUID);
      const all = Buffer.alloc(disk.sizeBytes);
      await disk.read(0, all);
      expect(sha256(all)).toBe(sha256(expected));
      // A raw base has no BAT: every cluster of it counts as allocated.
      expect(disk.allocatedRuns()).toEqual([{ offset: 0, length: CLUSTERS * CB }]);
    } finally {
      await disk.close();
    }
    await rm(join(d, "..", "rawmode.flat"));
  });
});
