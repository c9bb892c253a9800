import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PloopFormatError } from "../../src/errors.js";
import { renderDescriptor } from "../../src/ploop/descriptor.js";
import {
  CIF_EMPTY,
  CIF_FMT_CONVERT,
  DISK_CLOSED_EXT,
  DISK_IN_USE,
  HEADER_BYTES,
  SIG_V1,
  batEntryToFileOffset,
  computeFirstBlockOffsetSectors,
  computeGeometry,
  decodeBat,
  decodeHeader,
  encodeBat,
  encodeHeader,
  isInUse,
  newHeader,
  validateBat,
  type PloopHeader,
} from "../../src/ploop/format.js";
import { ploopInit } from "../helpers/ploop-tool.js";
import { scratchDir } from "./fixtures.js";

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");

// docs/ploop.md 1.11: 10 GiB v2 image, 1 MiB clusters, virtual cluster 5 in file cluster 1.
const WORKED_HEADER_V2 = hex(`
  5769 7468 6f75 4672 6553 7061 6345 7874
  0200 0000 1000 0000 00a0 0000 0008 0000
  0028 0000 0000 4001 0000 0000 0000 0000
  0008 0000 0000 0000 0000 0000 0000 0000`);
const WORKED_BAT_HEAD = hex(`
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0100 0000 0000 0000 0000 0000`);

function expectFormatError(fn: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(PloopFormatError);
  const message = (caught as Error).message;
  expect(message).toMatch(pattern);
  expect(message).not.toContain("\n");
}

function header10G(): Buffer {
  return Buffer.from(WORKED_HEADER_V2);
}

describe("ploop header: worked example (docs/ploop.md 1.11)", () => {
  it("encodes the 10 GiB v2 header byte for byte", () => {
    const h = newHeader({ version: 2, sizeSectors: 20971520, clusterSectors: 2048, empty: false });
    expect(encodeHeader(h).equals(WORKED_HEADER_V2)).toBe(true);
  });

  it("decodes every field", () => {
    const h = decodeHeader(WORKED_HEADER_V2, "root.hds");
    expect(h).toEqual<PloopHeader>({
      version: 2,
      type: 2,
      heads: 16,
      cylinders: 40960,
      clusterSectors: 2048,
      batEntries: 10240,
      sizeSectors: 20971520,
      diskInUse: 0,
      firstBlockOffsetSectors: 2048,
      flags: 0,
      formatExtensionOffsetSectors: 0,
    });
    expect(encodeHeader(h).equals(WORKED_HEADER_V2)).toBe(true);
  });

  it("maps BAT[5]=1 (v2, clusters) and BAT[5]=0x800 (v1, sectors) to file byte 0x100000", () => {
    const h2 = decodeHeader(WORKED_HEADER_V2, "root.hds");
    const batBytes = Buffer.alloc(4 * 10240);
    WORKED_BAT_HEAD.copy(batBytes);
    const bat = decodeBat(batBytes, h2);
    expect(bat[5]).toBe(1);
    expect([...bat].filter((e) => e !== 0)).toEqual([1]);
    expect(batEntryToFileOffset(h2, bat[5]!)).toBe(0x100000);
    expect(encodeBat(bat).subarray(0, 32).equals(WORKED_BAT_HEAD)).toBe(true);
    expect(validateBat(h2, bat, 2 << 20, "root.hds")).toBe(1);

    const v1 = header10G();
    v1.write(SIG_V1, 0, "latin1");
    const h1 = decodeHeader(v1, "root.hds");
    expect(h1.version).toBe(1);
    expect(h1.sizeSectors).toBe(20971520);
    const bat1 = new Uint32Array(10240);
    bat1[5] = 0x800;
    expect(batEntryToFileOffset(h1, bat1[5]!)).toBe(0x100000);
    expect(validateBat(h1, bat1, 2 << 20, "root.hds")).toBe(1);
  });
});

describe("ploop header: computed fields", () => {
  it("first block offset (docs/ploop.md 1.5) for 64K/256K/1M clusters", () => {
    expect(computeFirstBlockOffsetSectors(100, 2048)).toBe(2048);
    expect(computeFirstBlockOffsetSectors(10240, 2048)).toBe(2048);
    expect(computeFirstBlockOffsetSectors(262128, 2048)).toBe(2048); // exactly one BAT cluster
    expect(computeFirstBlockOffsetSectors(262129, 2048)).toBe(4096);
    expect(computeFirstBlockOffsetSectors(2097152, 2048)).toBe(18432); // 2 TiB
    expect(computeFirstBlockOffsetSectors(163840, 128)).toBe(1408); // 10 GiB at 64K: 655424 B -> 11 clusters
    expect(computeFirstBlockOffsetSectors(40960, 512)).toBe(512); // 10 GiB at 256K
    expect(computeFirstBlockOffsetSectors(65520, 512)).toBe(512);
    expect(computeFirstBlockOffsetSectors(65521, 512)).toBe(1024);
  });

  it("CHS geometry as measured from ploop 1.15 init", () => {
    const measured: [number, number, number][] = [
      // sizeSectors, heads, cylinders
      [204800, 16, 400],
      [1050624, 16, 1042],
      [2097152, 16, 2080],
      [6291456, 16, 6241],
      [15927296, 16, 15800],
      [16777216, 16, 32768],
      [20971520, 16, 40960],
      [3072000, 16, 3047],
      [4294967296, 16, 8388608],
    ];
    for (const [s, heads, cylinders] of measured) {
      expect({ s, ...computeGeometry(s) }).toMatchObject({ s, heads, cylinders });
    }
  });

  it("CIF_Empty follows the data, in-use marker semantics", () => {
    expect(newHeader({ version: 2, sizeSectors: 204800, clusterSectors: 2048, empty: true }).flags).toBe(CIF_EMPTY);
    const h = newHeader({ version: 1, sizeSectors: 204801, clusterSectors: 512, empty: false });
    expect(h.sizeSectors).toBe(205312); // rounded up to a cluster like ploop init
    expect(isInUse({ ...h, diskInUse: DISK_IN_USE })).toBe(true);
    expect(isInUse({ ...h, diskInUse: DISK_CLOSED_EXT })).toBe(false);
    expect(() => newHeader({ version: 1, sizeSectors: 2 ** 32, clusterSectors: 2048, empty: true })).toThrow(RangeError);
  });
});

describe("ploop header: validation", () => {
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = header10G();
    f(b);
    return b;
  };

  it("rejects a foreign signature, naming the file and showing the signature", () => {
    expectFormatError(
      () =>
        decodeHeader(
          mutate((b) => b.write("QFI\xfbxxxxxxxxxxxx", 0, "latin1")),
          "/x/root.hds",
        ),
      /^\/x\/root\.hds: not a ploop image \(signature "QFI\.xxxxxxxxxxxx"\)$/,
    );
  });

  it("rejects a truncated header", () => {
    expectFormatError(() => decodeHeader(WORKED_HEADER_V2.subarray(0, 40), "root.hds"), /root\.hds: truncated image \(40 bytes/);
  });

  it("rejects bad field values", () => {
    const cases: [(b: Buffer) => void, RegExp][] = [
      [(b) => b.writeUInt32LE(1, 0x10), /unsupported ploop image type 1/],
      [(b) => b.writeUInt32LE(1000, 0x1c), /invalid cluster size 1000 sectors/],
      [(b) => b.writeUInt32LE(32, 0x1c), /invalid cluster size 32 sectors/],
      [(b) => b.writeUInt32LE(262144, 0x1c), /invalid cluster size 262144 sectors/],
      [(b) => b.writeBigUInt64LE(20971521n, 0x24), /not a multiple of the cluster size/],
      [(b) => b.writeBigUInt64LE(0n, 0x24), /virtual disk size is 0/],
      [(b) => b.writeBigUInt64LE(2n ** 60n, 0x24), /disk size .* out of range/],
      [(b) => b.writeUInt32LE(0, 0x20), /BAT has 0 entries/],
      [(b) => b.writeUInt32LE(1000, 0x30), /first data block offset 1000 sectors is not a positive multiple/],
      [(b) => b.writeUInt32LE(0, 0x30), /first data block offset 0/],
      [(b) => b.writeUInt32LE(CIF_FMT_CONVERT, 0x34), /format conversion in progress/],
    ];
    for (const [f, re] of cases) expectFormatError(() => decodeHeader(mutate(f), "root.hds"), re);
  });

  it("rejects a first block offset too small for the BAT", () => {
    // 300 GiB at 1 MiB clusters = 307200 entries: needs 2 BAT clusters.
    const b = encodeHeader({ ...newHeader({ version: 2, sizeSectors: 629145600, clusterSectors: 2048, empty: true }), firstBlockOffsetSectors: 2048 });
    expectFormatError(() => decodeHeader(b, "big.hds"), /too small for a BAT of 307200 entries/);
  });

  it("v1 ignores the u32 at 0x28; a BAT count larger than the size uses the size", () => {
    const v1 = mutate((b) => {
      b.write(SIG_V1, 0, "latin1");
      b.writeUInt32LE(0xdeadbeef, 0x28);
    });
    expect(decodeHeader(v1, "r").sizeSectors).toBe(20971520);
    const more = mutate((b) => b.writeUInt32LE(20000, 0x20));
    expect(decodeHeader(more, "r").batEntries).toBe(10240);
    const fewer = mutate((b) => b.writeUInt32LE(100, 0x20));
    expect(decodeHeader(fewer, "r").batEntries).toBe(100);
  });
});

describe("ploop BAT validation", () => {
  const h2 = newHeader({ version: 2, sizeSectors: 8 * 512, clusterSectors: 512, empty: false }); // 8 x 256K
  const cb = 512 * 512;

  it("accepts a good BAT and ignores an unaligned tail", () => {
    const bat = Uint32Array.from([0, 2, 1, 0, 0, 0, 0, 3]);
    expect(validateBat(h2, bat, 4 * cb + 100, "a.hds")).toBe(3);
  });

  it("rejects entries into the header/BAT area", () => {
    // A header whose BAT area spans two clusters: file cluster 1 is still BAT.
    const h = { ...h2, firstBlockOffsetSectors: 1024 };
    const bat = new Uint32Array(8);
    bat[3] = 1;
    expectFormatError(() => validateBat(h, bat, 4 * cb, "a.hds"), /^a\.hds: BAT entry of cluster 3 points into the header\/BAT area/);
  });

  it("rejects a whole cluster beyond end of file", () => {
    const bat = Uint32Array.from([1, 2, 0, 0, 0, 0, 0, 0]);
    expectFormatError(() => validateBat(h2, bat, 3 * cb - 1, "/p/a.hds"), /^\/p\/a\.hds: BAT entry of cluster 1 points beyond end of file/);
  });

  it("rejects two clusters sharing one file cluster", () => {
    const bat = Uint32Array.from([0, 2, 1, 0, 0, 2, 0, 0]);
    expectFormatError(() => validateBat(h2, bat, 4 * cb, "a.hds"), /BAT entries of clusters 1 and 5 both point at file cluster 2/);
  });

  it("v1: rejects entries that are not a multiple of the cluster", () => {
    const h1 = { ...h2, version: 1 as const };
    expect(validateBat(h1, Uint32Array.from([512, 1024, 0, 0, 0, 0, 0, 0]), 3 * cb, "v1.hds")).toBe(2);
    expectFormatError(
      () => validateBat(h1, Uint32Array.from([513, 0, 0, 0, 0, 0, 0, 0]), 3 * cb, "v1.hds"),
      /sector 513\) is not a multiple of the cluster size 512/,
    );
  });
});

describe("byte-identical to ploop 1.15 init (real ploop)", () => {
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  beforeAll(async () => {
    ({ dir, cleanup } = await scratchDir("init"));
  });
  afterAll(() => cleanup());

  const cases: { size: string; sectors: number; version: 1 | 2; clusterSectors: number }[] = [];
  for (const version of [1, 2] as const) {
    for (const clusterSectors of [128, 512, 2048]) {
      for (const [size, sectors] of [
        ["100M", 204800],
        ["513M", 1050624],
        ["10G", 20971520],
      ] as const)
        cases.push({ size, sectors, version, clusterSectors });
    }
  }
  cases.push({ size: "2T", sectors: 2 ** 32, version: 2, clusterSectors: 2048 });

  it("empty image and DiskDescriptor.xml for v1/v2, 64K/256K/1M clusters", async () => {
    for (const c of cases) {
      const d = join(dir, `${c.size}-v${c.version}-${c.clusterSectors}`);
      await mkdir(d);
      const ddPath = await ploopInit(join(d, "root.hds"), { size: c.size, version: c.version, clusterSectors: c.clusterSectors });
      const file = await readFile(join(d, "root.hds"));
      const h = newHeader({ version: c.version, sizeSectors: c.sectors, clusterSectors: c.clusterSectors, empty: true });
      expect(file.length, c.size).toBe(h.firstBlockOffsetSectors * 512);
      expect(file.subarray(0, HEADER_BYTES).toString("hex"), `${c.size} v${c.version} bs${c.clusterSectors}`).toBe(encodeHeader(h).toString("hex"));
      expect(file.subarray(HEADER_BYTES).every((b) => b === 0)).toBe(true);
      expect(decodeHeader(file, "root.hds")).toEqual(h);
      const xml = await readFile(ddPath, "utf8");
      expect(renderDescriptor({ sizeSectors: c.sectors, clusterSectors: c.clusterSectors, images: [{ file: "root.hds" }] })).toBe(xml);
    }
  });
});
