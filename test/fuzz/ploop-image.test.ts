/**
 * Fuzzing the ploop image parser (src/ploop/format.ts, image.ts, disk.ts): random and
 * mutated headers, BATs and whole image files are accepted with consistent results or
 * refused with a one-line PloopFormatError, never a TypeError/RangeError or a hang.
 */
import { copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PloopFormatError } from "../../src/errors.js";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import {
  BAT_OFFSET_BYTES,
  HEADER_BYTES,
  SECTOR_BYTES,
  decodeBat,
  decodeHeader,
  encodeBat,
  encodeHeader,
  isValidClusterSectors,
  newHeader,
  validateBat,
  type PloopHeader,
} from "../../src/ploop/format.js";
import { openImage } from "../../src/ploop/image.js";
import { writeDescriptorFile, writeImageFromRaw } from "../../src/ploop/writer.js";
import { pattern, scratchDir } from "../ploop/fixtures.js";
import { attempt, attemptAsync, editArb, mutateBytes, runs } from "./oracle.js";

const FIELD_OFFSETS = [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x28, 0x2c, 0x30, 0x34, 0x38, 0x3c];
const INTERESTING_U32 = [0, 1, 2, 63, 64, 127, 128, 2048, 4096, 131072, 131073, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

const headerParams = fc.record({
  version: fc.constantFrom<1 | 2>(1, 2),
  clusterSectors: fc.constantFrom(64, 128, 256, 2048, 131072),
  clusters: fc.integer({ min: 1, max: 5000 }),
  empty: fc.boolean(),
});

const validHeaderBytes = headerParams.map((p) =>
  encodeHeader(newHeader({ version: p.version, sizeSectors: p.clusters * p.clusterSectors, clusterSectors: p.clusterSectors, empty: p.empty })),
);

/** A valid header with some fields overwritten by boundary values and some bits flipped. */
const mutatedHeaderBytes = fc
  .tuple(
    validHeaderBytes,
    fc.array(fc.tuple(fc.constantFrom(...FIELD_OFFSETS), fc.oneof(fc.constantFrom(...INTERESTING_U32), fc.nat({ max: 0xffffffff }))), { maxLength: 3 }),
    fc.array(fc.tuple(fc.nat({ max: HEADER_BYTES - 1 }), fc.integer({ min: 1, max: 255 })), { maxLength: 2 }),
  )
  .map(([bytes, fields, flips]) => {
    const b = Buffer.from(bytes);
    for (const [at, v] of fields) b.writeUInt32LE(v >>> 0, at);
    for (const [at, x] of flips) b[at] = b[at]! ^ x;
    return b;
  });

function checkHeader(h: PloopHeader): void {
  expect(isValidClusterSectors(h.clusterSectors)).toBe(true);
  expect(h.batEntries).toBeGreaterThan(0);
  expect(Number.isSafeInteger(h.sizeSectors) && h.sizeSectors > 0).toBe(true);
  expect(h.sizeSectors % h.clusterSectors).toBe(0);
  expect(h.batEntries).toBeLessThanOrEqual(h.sizeSectors / h.clusterSectors);
  expect(h.firstBlockOffsetSectors % h.clusterSectors).toBe(0);
  expect(h.firstBlockOffsetSectors * SECTOR_BYTES).toBeGreaterThanOrEqual(HEADER_BYTES + 4 * h.batEntries);
}

describe("ploop header and BAT decoding (fuzz)", () => {
  it("decodeHeader: random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 96 }), (bytes) => {
        const r = attempt(() => decodeHeader(Buffer.from(bytes), "/fuzz/root.hds"), PloopFormatError, "/fuzz/root.hds");
        if (r.ok) checkHeader(r.value);
      }),
      { numRuns: runs(2000) },
    );
  });

  it("decodeHeader: valid headers with mutated fields and bits", () => {
    let accepted = 0;
    fc.assert(
      fc.property(mutatedHeaderBytes, (bytes) => {
        const r = attempt(() => decodeHeader(bytes, "/fuzz/root.hds"), PloopFormatError, "/fuzz/root.hds");
        if (r.ok) {
          accepted++;
          checkHeader(r.value);
          // what was accepted re-encodes to a header that decodes the same
          expect(decodeHeader(encodeHeader(r.value), "x")).toEqual(r.value);
        }
      }),
      { numRuns: runs(3000) },
    );
    expect(accepted).toBeGreaterThan(0); // the generator also reaches the accepting paths
  });

  it("decodeBat + validateBat: random BATs against random file sizes", () => {
    fc.assert(
      fc.property(
        mutatedHeaderBytes,
        fc.array(fc.oneof(fc.constant(0), fc.nat({ max: 64 }), fc.nat({ max: 0xffffffff })), { maxLength: 64 }),
        fc.nat({ max: 1 << 30 }),
        fc.nat({ max: 300 }),
        (headerBytes, entries, fileSize, batLength) => {
          const header = attempt(() => decodeHeader(headerBytes, "/fuzz/root.hds"), PloopFormatError);
          if (!header.ok) return;
          const h = header.value;
          if (h.batEntries > 1 << 16) return; // a BAT this size is only read from a file that large (openImage checks)
          const raw = Buffer.alloc(Math.min(batLength * 4, h.batEntries * 4 + 8));
          encodeBat(Uint32Array.from(entries.slice(0, raw.length / 4))).copy(raw);
          const bat = attempt(() => decodeBat(raw, h), PloopFormatError);
          if (!bat.ok) return;
          expect(bat.value.length).toBe(h.batEntries);
          const count = attempt(() => validateBat(h, bat.value, fileSize, "/fuzz/root.hds"), PloopFormatError, "/fuzz/root.hds");
          if (!count.ok) return;
          // accepted: every allocated cluster lies wholly in the file, after the BAT, and no two share one
          const clusterBytes = h.clusterSectors * SECTOR_BYTES;
          const seen = new Set<number>();
          let n = 0;
          for (const e of bat.value) {
            if (e === 0) continue;
            n++;
            const offset = h.version === 2 ? e * clusterBytes : e * SECTOR_BYTES;
            expect(offset).toBeGreaterThanOrEqual(h.firstBlockOffsetSectors * SECTOR_BYTES);
            expect(offset + clusterBytes).toBeLessThanOrEqual(fileSize);
            expect(seen.has(offset)).toBe(false);
            seen.add(offset);
          }
          expect(count.value).toBe(n);
        },
      ),
      { numRuns: runs(3000) },
    );
  });
});

describe("ploop image files (fuzz)", () => {
  const CB = 64 << 10;
  const CLUSTERS = 24;
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  let good: Buffer;
  let n = 0;

  beforeAll(async () => {
    ({ dir, cleanup } = await scratchDir("fuzz-image"));
    const raw = Buffer.alloc(CLUSTERS * CB);
    for (const c of [0, 1, 2, 5, 9, 15, 23]) pattern(5, c, CB).copy(raw, c * CB);
    await writeFile(join(dir, "disk.raw"), raw);
    await writeImageFromRaw(join(dir, "disk.raw"), join(dir, "good.hds"), { version: 2, clusterBytes: CB, shuffle: true, seed: 9, skipZeroClusters: true });
    good = await import("node:fs/promises").then((fs) => fs.readFile(join(dir, "good.hds")));
  });
  afterAll(() => cleanup());

  /** Mutations mostly in the header and BAT (where the parser looks), sometimes anywhere. */
  const imageEdits = fc.array(
    fc.record({
      kind: fc.integer(editArb.kind),
      at: fc.oneof(fc.nat({ max: BAT_OFFSET_BYTES + 4 * CLUSTERS + 8 }), fc.nat({ max: 1 << 30 })),
      value: fc.integer(editArb.value),
      len: fc.integer(editArb.len),
    }),
    { minLength: 1, maxLength: 4 },
  );

  it("openImage on mutated and truncated images: a consistent image or a PloopFormatError naming the file", async () => {
    await fc.assert(
      fc.asyncProperty(imageEdits, async (edits) => {
        const path = join(dir, `m${n++}.hds`);
        await writeFile(path, mutateBytes(good, edits));
        try {
          const r = await attemptAsync(() => openImage(path), PloopFormatError, path);
          if (!r.ok) return;
          const image = r.value;
          try {
            // every cluster it claims is readable and lies inside the file
            const buf = Buffer.alloc(image.clusterBytes);
            for (let c = 0; c < image.clusterCount; c++) {
              const at = image.clusterOffset(c);
              if (at < 0) continue;
              expect(at + image.clusterBytes).toBeLessThanOrEqual(image.fileSize);
              expect(await image.readAt(at, buf)).toBe(image.clusterBytes);
            }
          } finally {
            await image.close();
          }
        } finally {
          await rm(path, { force: true });
        }
      }),
      { numRuns: runs(300) },
    );
  });

  it("openLogicalDisk on a descriptor whose image is mutated: reads the whole disk or refuses cleanly", async () => {
    await fc.assert(
      fc.asyncProperty(imageEdits, async (edits) => {
        const d = join(dir, `disk${n++}`);
        await mkdir(d);
        try {
          await writeFile(join(d, "root.hds"), mutateBytes(good, edits));
          const dd = await writeDescriptorFile(d, { imageFile: "root.hds", sizeBytes: CLUSTERS * CB, clusterBytes: CB });
          const r = await attemptAsync(() => openLogicalDisk(dd), PloopFormatError);
          if (!r.ok) return;
          const disk = r.value;
          try {
            for (const run of disk.allocatedRuns()) {
              expect(run.offset + run.length).toBeLessThanOrEqual(disk.sizeBytes);
              await disk.read(run.offset, Buffer.alloc(run.length));
            }
          } finally {
            await disk.close();
          }
        } finally {
          await rm(d, { recursive: true, force: true });
        }
      }),
      { numRuns: runs(150) },
    );
  });

  it("a header claiming a huge BAT in a small file is refused before anything is allocated", async () => {
    const h = decodeHeader(good.subarray(0, HEADER_BYTES), "good");
    const path = join(dir, "huge.hds");
    const bytes = Buffer.from(good);
    encodeHeader({
      ...h,
      batEntries: 0xffffffff,
      sizeSectors: 0xffffffff * h.clusterSectors,
      firstBlockOffsetSectors: Math.ceil((64 + 4 * 0xffffffff) / 512 / h.clusterSectors) * h.clusterSectors,
    }).copy(bytes);
    await writeFile(path, bytes);
    const r = await attemptAsync(() => openImage(path), PloopFormatError, path);
    expect(r.ok).toBe(false);
    await copyFile(join(dir, "good.hds"), path);
  });
});
