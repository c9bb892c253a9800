import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { planBackup } from "../../src/backup/plan.js";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import { decodeManifest, encodeManifest, maxManifestEntries, type Manifest, type ManifestEntry } from "../../src/manifest/format.js";
import { IntegrityError } from "../../src/errors.js";
import { zstdCompress, zstdDecompressBounded } from "../../src/util/zstd.js";

function sampleManifest(entries: ManifestEntry[], logicalBytes: number): Manifest {
  return {
    metadata: {
      formatVersion: 1,
      id: "20261123T000000Z-00000000",
      ct: "101",
      host: "node1",
      time: "2026-11-23T00:00:00.000Z",
      tool: { name: "ploopvault", version: "test" },
      disk: { logicalBytes, clusterBytes: 1 << 20, sourceFormatVersion: 2 },
      chunker: chunkerParamsForAverage(256 << 10),
      source: { descriptorPath: "/vz/private/101/root.hdd/DiskDescriptor.xml", topGuid: "{x}", snapshotGuid: null, imageFiles: [] },
      files: { descriptor: "DiskDescriptor.xml", config: "ve.conf" },
      stats: { readBytes: 0, dataBytes: 0, holeBytes: 0, chunks: 0, newChunks: 0, newBytesStored: 0, seconds: 0 },
      entryCount: entries.length,
    },
    entries,
  };
}

const entries: ManifestEntry[] = [
  { kind: "chunk", offset: 0, length: 300_000, id: randomBytes(32) },
  { kind: "chunk", offset: 300_000, length: 748_576, id: randomBytes(32) },
  { kind: "hole", offset: 1 << 20, length: 2 ** 40 },
  { kind: "chunk", offset: (1 << 20) + 2 ** 40, length: 1 << 20, id: randomBytes(32) },
];
const total = 2 ** 21 + 2 ** 40;

describe("manifest format", () => {
  it("round-trips entries, holes beyond 4 GiB and metadata", () => {
    const m = sampleManifest(entries, total);
    const decoded = decodeManifest(encodeManifest(m), "m");
    expect(decoded.entries).toEqual(entries);
    expect(decoded.metadata).toEqual(m.metadata);
  });

  it("refuses entries that do not tile the disk", () => {
    expect(() => encodeManifest(sampleManifest(entries, total + (1 << 20)))).toThrow(/cover/);
    expect(() => encodeManifest(sampleManifest(entries, total + 1))).toThrow(/whole number of 1048576-byte clusters/);
    const gap = [entries[0]!, { ...entries[3]!, offset: 400_000 }];
    expect(() => encodeManifest(sampleManifest(gap as ManifestEntry[], total))).toThrow(/starts at/);
  });

  it("rejects every corrupted or truncated object with an IntegrityError naming it", () => {
    const good = encodeManifest(sampleManifest(entries, total));
    fc.assert(
      fc.property(fc.integer({ min: 0, max: good.length - 1 }), fc.integer({ min: 1, max: 255 }), (pos, xor) => {
        const bad = Buffer.from(good);
        bad[pos] = bad[pos]! ^ xor;
        expect(() => decodeManifest(bad, "backups/101/x/manifest")).toThrow(IntegrityError);
        expect(() => decodeManifest(bad, "backups/101/x/manifest")).toThrow(/backups\/101\/x\/manifest/);
      }),
      { numRuns: 300 },
    );
    for (const n of [0, 3, 5, 20, good.length - 1]) {
      expect(() => decodeManifest(good.subarray(0, n), "m")).toThrow(IntegrityError);
    }
  });
});

/**
 * Hostile manifests (issue 12, item 9): someone who can write the bucket of an unencrypted
 * repository writes manifests that are well-formed but whose geometry or size would make
 * every command that reads them (backup's known-chunk index, prune, snapshots, restore)
 * allocate gigabytes, stream zeros for ever, or overwrite the restored image.
 */
describe("hostile manifests", () => {
  const magic = Buffer.from("PVMF\x01", "latin1");
  /** A correctly enveloped object around any payload (right checksum, zstd with content size). */
  function wrapPayload(metadata: unknown, table: Buffer): Buffer {
    const json = Buffer.from(JSON.stringify(metadata), "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32LE(json.length, 0);
    const frame = zstdCompress(Buffer.concat([len, json, table]), 1, true);
    return Buffer.concat([magic, createHash("sha256").update(frame).digest(), frame]);
  }
  function chunkTable(lengths: number[]): Buffer {
    const out = Buffer.alloc(lengths.length * 49);
    let offset = 0;
    lengths.forEach((length, i) => {
      out[i * 49] = 1;
      out.writeBigUInt64LE(BigInt(offset), i * 49 + 1);
      out.writeBigUInt64LE(BigInt(length), i * 49 + 9);
      offset += length;
    });
    return out;
  }
  function holeTable(length: number): Buffer {
    const out = Buffer.alloc(17);
    out[0] = 2;
    out.writeBigUInt64LE(0n, 1);
    out.writeBigUInt64LE(BigInt(length), 9);
    return out;
  }

  it("refuses more entries than the disk geometry allows, before decompressing the entry table", () => {
    // 4 MiB disk, 64 KiB chunks at least: 4 * 64 + 4 + 16 = 276 entries at most; here 65536 one-... 64-byte chunks
    const lengths = Array.from({ length: 65536 }, () => 64);
    const m = sampleManifest([], 4 << 20);
    const metadata = { ...m.metadata, chunker: chunkerParamsForAverage(256 << 10), entryCount: lengths.length };
    const object = wrapPayload(metadata, chunkTable(lengths));
    expect(maxManifestEntries(metadata.disk, metadata.chunker.minSize)).toBeLessThan(1000);
    expect(() => decodeManifest(object, "backups/101/x/manifest")).toThrow(
      /backups\/101\/x\/manifest: entryCount 65536 is more than a disk of 4194304 bytes can have/,
    );
  });

  it("refuses a payload larger than its declared entries need (no gigabyte allocation)", () => {
    // two entries declared, 256 MiB of content (zeros compress to almost nothing)
    const m = sampleManifest([], 2 << 20);
    const metadata = { ...m.metadata, entryCount: 2 };
    const object = wrapPayload(metadata, Buffer.concat([chunkTable([1 << 20, 1 << 20]), Buffer.alloc(256 << 20)]));
    expect(object.length).toBeLessThan(1 << 20);
    expect(() => decodeManifest(object, "m")).toThrow(/m: manifest of \d+ bytes is larger than its 2 entries need/);
  });

  it("refuses cluster sizes that are not a power of two from 4 KiB to 64 MiB", () => {
    for (const clusterBytes of [1024, 2048, 12288, 3 << 20, 128 << 20]) {
      const m = sampleManifest([], 0);
      const object = wrapPayload(
        { ...m.metadata, disk: { logicalBytes: clusterBytes * 4, clusterBytes, sourceFormatVersion: 2 }, entryCount: 1 },
        holeTable(clusterBytes * 4),
      );
      expect(() => decodeManifest(object, "m"), String(clusterBytes)).toThrow(/disk\.clusterBytes .* is not a power of two from 4096 to 67108864/);
    }
  });

  it("refuses a disk larger than ploop makes (a hole of 2^52 bytes would stream zeros for ever)", () => {
    const logicalBytes = 2 ** 52;
    const m = sampleManifest([], 0);
    const object = wrapPayload(
      { ...m.metadata, disk: { logicalBytes, clusterBytes: 1 << 20, sourceFormatVersion: 2 }, entryCount: 1 },
      holeTable(logicalBytes),
    );
    expect(() => decodeManifest(object, "m")).toThrow(/disk\.logicalBytes 4503599627370496 is not a disk size from 0 to/);
    expect(() => encodeManifest(sampleManifest([{ kind: "hole", offset: 0, length: logicalBytes }], logicalBytes))).toThrow(/logicalBytes/);
    // 64 TiB, all hole, is still a disk ploop could have made
    const big = 64 * 2 ** 40;
    expect(decodeManifest(encodeManifest(sampleManifest([{ kind: "hole", offset: 0, length: big }], big)), "m").metadata.disk.logicalBytes).toBe(big);
  });

  it("refuses a container config named like the restored image, the descriptor or the manifest", () => {
    for (const name of ["root.hdd", "root.hdd.orig", "DiskDescriptor.xml", "DiskDescriptor.xml.lck", "manifest"]) {
      const m = sampleManifest(entries, total);
      const object = wrapPayload({ ...m.metadata, files: { descriptor: "DiskDescriptor.xml", config: name } }, payloadTable(encodeManifest(m)));
      expect(() => decodeManifest(object, "m"), name).toThrow(/files\.config .* collides with/);
    }
    const m = sampleManifest(entries, total);
    expect(decodeManifest(encodeManifest(m), "m").metadata.files.config).toBe("ve.conf");
  });

  it("backups never reuse a short chunk, so their manifests stay within the bound", () => {
    const min = 16 << 10;
    const previous = {
      entries: [
        { kind: "chunk" as const, offset: 0, length: 40 << 10, id: randomBytes(32) },
        { kind: "chunk" as const, offset: 40 << 10, length: 1000, id: randomBytes(32) }, // the short tail of an earlier run
        { kind: "chunk" as const, offset: (40 << 10) + 1000, length: 50 << 10, id: randomBytes(32) },
      ],
      written: new Uint8Array(4),
      clusterBytes: 1 << 20,
    };
    const plan = planBackup([{ offset: 0, length: 1 << 20 }], 4 << 20, previous, min);
    expect(plan.filter((s) => s.kind === "reuse").map((s) => (s.kind === "reuse" ? s.entry.length : 0))).toEqual([40 << 10, 50 << 10]);
    expect(plan.find((s) => s.kind === "read" && s.offset === 40 << 10)).toMatchObject({ length: 1000 });
  });
});

/** The entry table of an encoded manifest. */
function payloadTable(object: Buffer): Buffer {
  const payload = zstdDecompressBounded(object.subarray(37), 1 << 30);
  return payload.subarray(4 + payload.readUInt32LE(0));
}
