/**
 * What the repository-format fixtures in fixtures/ hold: a chunk object and a manifest
 * object written by ploopvault before zstd could go through node:zlib (commit d1f1fab,
 * zstd-napi). The plain content is regenerated here; the stored bytes are committed.
 */
import { createHash } from "node:crypto";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import type { Manifest, ManifestEntry } from "../../src/manifest/format.js";
import { seededText } from "../chunker/inputs.js";

/** 300,000 bytes (three zstd blocks): a 20,000-byte text-like piece repeated, so the fixture stays small. */
export function fixtureChunkPlain(): Buffer {
  const piece = seededText(20_000, "zstd fixture chunk");
  return Buffer.concat(Array.from({ length: 15 }, () => piece));
}

export function fixtureManifest(): Manifest {
  const entries: ManifestEntry[] = [];
  let offset = 0;
  for (let i = 0; i < 300; i++) {
    const length = 65_536 + ((i * 7919) % 200_000);
    entries.push({ kind: "chunk", offset, length, id: createHash("sha256").update(`fixture entry ${i}`).digest() });
    offset += length;
    if (i % 50 === 49) {
      entries.push({ kind: "hole", offset, length: 1 << 30 });
      offset += 1 << 30;
    }
  }
  const pad = (1 << 20) - (offset % (1 << 20)); // the disk is whole clusters
  entries.push({ kind: "hole", offset, length: pad });
  offset += pad;
  return {
    metadata: {
      formatVersion: 1,
      id: "20261203T000000Z-0fixture",
      ct: "101",
      host: "node1",
      time: "2026-12-03T00:00:00.000Z",
      tool: { name: "ploopvault", version: "0.1.0" },
      disk: { logicalBytes: offset, clusterBytes: 1 << 20, sourceFormatVersion: 2 },
      chunker: chunkerParamsForAverage(256 << 10),
      source: {
        descriptorPath: "/vz/private/101/root.hdd/DiskDescriptor.xml",
        topGuid: "{5fbaabe3-6958-40ff-92a7-860e329aab41}",
        snapshotGuid: null,
        imageFiles: ["/vz/private/101/root.hdd/root.hds"],
      },
      files: { descriptor: "DiskDescriptor.xml", config: "ve.conf" },
      incremental: null,
      stats: { readBytes: 1, dataBytes: 2, holeBytes: 3, chunks: 300, newChunks: 4, newBytesStored: 5, seconds: 6 },
      entryCount: entries.length,
    },
    entries,
  };
}
