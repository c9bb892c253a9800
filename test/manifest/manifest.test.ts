import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import { decodeManifest, encodeManifest, type Manifest, type ManifestEntry } from "../../src/manifest/format.js";
import { IntegrityError } from "../../src/errors.js";

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
    expect(() => encodeManifest(sampleManifest(entries, total + 1))).toThrow(/cover/);
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
