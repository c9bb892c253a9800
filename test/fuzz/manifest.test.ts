/**
 * Fuzzing the manifest decoder (src/manifest/format.ts): random bytes, random payloads in
 * a valid envelope (magic, version, zstd frame with checksum), and valid manifests whose
 * metadata JSON or entry table were mutated and then re-wrapped with a correct checksum
 * (so the mutation reaches the validation, not just the checksum). decodeManifest returns
 * a manifest whose entries tile the disk and whose metadata has the types the code reads,
 * or throws a one-line IntegrityError naming the object; never anything else, never slowly.
 */
import { createHash, randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { chunkerParamsForAverage } from "../../src/chunker/params.js";
import { IntegrityError } from "../../src/errors.js";
import {
  decodeManifest,
  encodeManifest,
  MANIFEST_MAGIC,
  MAX_LOGICAL_BYTES,
  maxManifestEntries,
  type Manifest,
  type ManifestEntry,
} from "../../src/manifest/format.js";
import { zstdCompress, zstdDecompressBounded } from "../../src/util/zstd.js";
import { attempt, editArb, mutateBytes, runs } from "./oracle.js";

const NAME = "manifest of backup 101/20261123T000000Z-0000abcd";
const magic = Buffer.from(`${MANIFEST_MAGIC}\x01`, "latin1");
/** Object header: magic, version, SHA-256 of the zstd frame that follows. */
const HEADER_BYTES = magic.length + 32;

/** A correctly enveloped object around any frame bytes (so the decoder gets past the checksum). */
function envelope(frame: Uint8Array): Buffer {
  return Buffer.concat([magic, createHash("sha256").update(frame).digest(), frame]);
}

/** A valid manifest: random tiling of chunks and holes over a disk of whole clusters. */
const manifestArb: fc.Arbitrary<Manifest> = fc
  .record({
    avg: fc.constantFrom(4096, 65536, 262144),
    clusterBytes: fc.constantFrom(4096, 65536, 1 << 20),
    pieces: fc.array(fc.record({ hole: fc.boolean(), size: fc.integer({ min: 1, max: 4 }) }), { maxLength: 30 }),
    tail: fc.integer({ min: 0, max: 3 }),
    config: fc.option(fc.constant("ve.conf"), { nil: null }),
    snapshot: fc.option(
      fc.uuid().map((u) => `{${u}}`),
      { nil: null },
    ),
  })
  .map(({ avg, clusterBytes, pieces, tail, config, snapshot }) => {
    const chunker = chunkerParamsForAverage(avg);
    const entries: ManifestEntry[] = [];
    let offset = 0;
    for (const p of pieces) {
      const length = p.hole ? p.size * clusterBytes : Math.min(chunker.maxSize, p.size * (avg / 2));
      entries.push(p.hole ? { kind: "hole", offset, length } : { kind: "chunk", offset, length, id: randomBytes(32) });
      offset += length;
    }
    const logicalBytes = (Math.ceil(offset / clusterBytes) + tail) * clusterBytes;
    if (logicalBytes > offset) entries.push({ kind: "hole", offset, length: logicalBytes - offset });
    return {
      metadata: {
        formatVersion: 1,
        id: "20261123T000000Z-0000abcd",
        ct: "101",
        host: "node1",
        time: "2026-11-23T00:00:00.000Z",
        tool: { name: "ploopvault", version: "fuzz" },
        disk: { logicalBytes, clusterBytes, sourceFormatVersion: 2 },
        chunker,
        source: {
          descriptorPath: "/vz/private/101/root.hdd/DiskDescriptor.xml",
          topGuid: snapshot ?? "{5fbaabe3-6958-40ff-92a7-860e329aab41}",
          snapshotGuid: snapshot,
          imageFiles: ["/vz/private/101/root.hdd/root.hds"],
        },
        files: { descriptor: "DiskDescriptor.xml", config },
        stats: { readBytes: 1, dataBytes: 2, holeBytes: 3, chunks: 4, newChunks: 5, newBytesStored: 6, seconds: 0.5 },
        entryCount: entries.length,
      },
      entries,
    };
  });

/** The decoded payload of an encoded manifest: u32 JSON length, JSON, entry table. */
function payloadOf(object: Buffer): { json: string; table: Buffer } {
  const payload = zstdDecompressBounded(object.subarray(HEADER_BYTES), 1 << 30);
  const n = payload.readUInt32LE(0);
  return { json: payload.toString("utf8", 4, 4 + n), table: payload.subarray(4 + n) };
}

function wrap(json: string | Buffer, table: Buffer, jsonLength?: number): Buffer {
  const j = typeof json === "string" ? Buffer.from(json, "utf8") : json;
  const len = Buffer.alloc(4);
  len.writeUInt32LE((jsonLength ?? j.length) >>> 0, 0);
  return envelope(zstdCompress(Buffer.concat([len, j, table]), 1, true));
}

/** Set (or delete) a value at a random path of a JSON object. */
function mutateJson(value: unknown, path: readonly number[], replacement: unknown, remove: boolean): unknown {
  if (path.length === 0 || typeof value !== "object" || value === null) return replacement;
  const keys = Object.keys(value);
  if (keys.length === 0) return replacement;
  const key = keys[path[0]! % keys.length]!;
  const copy: Record<string, unknown> = Array.isArray(value) ? ([...value] as unknown as Record<string, unknown>) : { ...(value as Record<string, unknown>) };
  if (remove && path.length === 1) delete copy[key];
  else copy[key] = mutateJson(copy[key], path.slice(1), replacement, remove);
  return copy;
}

const jsonReplacement = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(null, 0, -1, 1.5, 2 ** 53, 2 ** 64, "", "a\nb", "../../etc/passwd", "ve.conf/x", [], {}, "NaN", true),
);

function checkAccepted(m: Manifest): void {
  const { metadata, entries } = m;
  let at = 0;
  for (const e of entries) {
    expect(e.offset).toBe(at);
    expect(e.length).toBeGreaterThan(0);
    if (e.kind === "chunk") {
      expect(e.length).toBeLessThanOrEqual(metadata.chunker.maxSize);
      expect(e.id.length).toBe(32);
    }
    at += e.length;
  }
  expect(at).toBe(metadata.disk.logicalBytes);
  expect(metadata.entryCount).toBe(entries.length);
  // the fields the commands read have the types they expect
  expect(typeof metadata.host).toBe("string");
  expect(Number.isNaN(Date.parse(metadata.time))).toBe(false);
  expect(typeof metadata.tool.version).toBe("string");
  expect(typeof metadata.stats.newBytesStored).toBe("number");
  expect(metadata.source.snapshotGuid === null || typeof metadata.source.snapshotGuid === "string").toBe(true);
  expect(metadata.files.config === null || /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(metadata.files.config)).toBe(true);
  expect(metadata.files.descriptor).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]*$/);
  // geometry a ploop disk can have, and no more entries than it allows (issue 12, item 9)
  const { clusterBytes, logicalBytes } = metadata.disk;
  expect(clusterBytes >= 4096 && clusterBytes <= 64 << 20 && (clusterBytes & (clusterBytes - 1)) === 0, `cluster ${clusterBytes}`).toBe(true);
  expect(logicalBytes).toBeLessThanOrEqual(MAX_LOGICAL_BYTES);
  expect(entries.length).toBeLessThanOrEqual(maxManifestEntries(metadata.disk, metadata.chunker.minSize));
  // a restore writes the config beside root.hdd and DiskDescriptor.xml: it must not replace them
  expect(metadata.files.config ?? "ve.conf").not.toMatch(/^(manifest|root\.hdd.*|DiskDescriptor\.xml.*)$/);
  expect(metadata.files.config).not.toBe(metadata.files.descriptor);
}

describe("manifest decoder (fuzz)", () => {
  it("valid manifests round-trip", () => {
    fc.assert(
      fc.property(manifestArb, (m) => {
        const decoded = decodeManifest(encodeManifest(m), NAME);
        expect(decoded).toEqual(m);
        checkAccepted(decoded);
      }),
      { numRuns: runs(300) },
    );
  });

  it("random bytes, with and without a valid envelope", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat({ max: 2 }), (bytes, mode) => {
        // raw bytes; random bytes in a valid envelope (checksum right, frame garbage); a valid frame of random payload
        const object = mode === 0 ? Buffer.from(bytes) : mode === 1 ? envelope(bytes) : envelope(zstdCompress(bytes, 1, true));
        const r = attempt(() => decodeManifest(object, NAME), IntegrityError, NAME);
        if (r.ok) checkAccepted(r.value);
      }),
      { numRuns: runs(3000) },
    );
  });

  it("mutated object bytes (the checksum must catch what the structure does not)", () => {
    fc.assert(
      fc.property(
        manifestArb,
        fc.array(fc.record({ kind: fc.integer(editArb.kind), at: fc.integer(editArb.at), value: fc.integer(editArb.value), len: fc.integer(editArb.len) }), {
          minLength: 1,
          maxLength: 3,
        }),
        (m, edits) => {
          const object = encodeManifest(m);
          const bad = mutateBytes(object, edits);
          const r = attempt(() => decodeManifest(bad, NAME), IntegrityError, NAME);
          if (r.ok) {
            checkAccepted(r.value);
            expect(r.value).toEqual(m); // only a no-op edit (e.g. an insertion trimmed off again) is accepted
          }
        },
      ),
      { numRuns: runs(2000) },
    );
  });

  it("mutated metadata JSON in a valid envelope", () => {
    fc.assert(
      fc.property(manifestArb, fc.array(fc.nat({ max: 20 }), { maxLength: 3 }), jsonReplacement, fc.boolean(), (m, path, replacement, remove) => {
        const { json, table } = payloadOf(encodeManifest(m));
        const mutated = JSON.stringify(mutateJson(JSON.parse(json), path, replacement, remove));
        const r = attempt(() => decodeManifest(wrap(mutated ?? "null", table), NAME), IntegrityError, NAME);
        if (r.ok) checkAccepted(r.value);
      }),
      { numRuns: runs(3000) },
    );
  });

  it("mutated entry tables and JSON lengths in a valid envelope", () => {
    fc.assert(
      fc.property(
        manifestArb,
        fc.array(fc.record({ kind: fc.integer(editArb.kind), at: fc.integer(editArb.at), value: fc.integer(editArb.value), len: fc.integer(editArb.len) }), {
          minLength: 1,
          maxLength: 3,
        }),
        fc.option(fc.oneof(fc.nat({ max: 5000 }), fc.constantFrom(0, 0xffffffff, 0x80000000)), { nil: undefined }),
        (m, edits, jsonLength) => {
          const { json, table } = payloadOf(encodeManifest(m));
          const r = attempt(() => decodeManifest(wrap(json, mutateBytes(table, edits), jsonLength), NAME), IntegrityError, NAME);
          if (r.ok) checkAccepted(r.value);
        },
      ),
      { numRuns: runs(3000) },
    );
  });

  it("hostile geometry, entry counts and side-file names in a valid envelope", () => {
    const hostile = fc.record({
      clusterBytes: fc.oneof(
        fc.constantFrom(0, 1, 512, 1024, 2048, 3000, 4095, 12288, 4096, 1 << 20, 64 << 20, 128 << 20, 2 ** 40),
        fc.integer({ min: 1, max: 1 << 27 }),
      ),
      clusters: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constantFrom(2 ** 26, 2 ** 32, 2 ** 40)),
      entryCount: fc.oneof(fc.nat({ max: 300 }), fc.constantFrom(2 ** 20, 2 ** 31, 2 ** 40)),
      config: fc.constantFrom(null, "ve.conf", "root.hdd", "root.hdd.1", "DiskDescriptor.xml", "DiskDescriptor.xml.lck", "manifest", "root.hds", "x.conf"),
      descriptor: fc.constantFrom("DiskDescriptor.xml", "manifest", "ve.conf"),
      // random entries, or entries that tile the disk: one hole, or chunks of `tiny` bytes on a small disk
      pieces: fc.oneof(
        fc.array(fc.record({ hole: fc.boolean(), length: fc.integer({ min: 1, max: 1 << 22 }) }), { maxLength: 200 }),
        fc.constant("tile" as const),
      ),
      tiny: fc.constantFrom(64, 1000, 4096),
      trueCount: fc.boolean(),
      padding: fc.constantFrom(0, 0, 17, 1 << 16),
    });
    const entry = (hole: boolean, offset: number, length: number): Buffer => {
      const e = Buffer.alloc(hole ? 17 : 49);
      e[0] = hole ? 2 : 1;
      e.writeBigUInt64LE(BigInt(offset), 1);
      e.writeBigUInt64LE(BigInt(length), 9);
      return e;
    };
    fc.assert(
      fc.property(manifestArb, hostile, (m, h) => {
        const logicalBytes = h.clusterBytes * h.clusters;
        const table: Buffer[] = [];
        if (h.pieces === "tile") {
          if (logicalBytes > 0 && logicalBytes <= 1 << 20)
            for (let at = 0; at < logicalBytes; at += h.tiny) table.push(entry(false, at, Math.min(h.tiny, logicalBytes - at)));
          else if (logicalBytes > 0 && logicalBytes <= Number.MAX_SAFE_INTEGER) table.push(entry(true, 0, logicalBytes));
        } else {
          let offset = 0;
          for (const p of h.pieces) {
            table.push(entry(p.hole, offset, p.length));
            offset += p.length;
          }
        }
        const entryCount = h.trueCount ? table.length : h.entryCount;
        table.push(Buffer.alloc(h.padding));
        const metadata = {
          ...m.metadata,
          disk: { logicalBytes, clusterBytes: h.clusterBytes, sourceFormatVersion: 2 },
          entryCount,
          files: { descriptor: h.descriptor, config: h.config },
        };
        const r = attempt(() => decodeManifest(wrap(JSON.stringify(metadata), Buffer.concat(table)), NAME), IntegrityError, NAME);
        if (r.ok) checkAccepted(r.value);
      }),
      { numRuns: runs(2000) },
    );
  });

  it("a zstd frame claiming a huge content size is refused without allocating it", () => {
    // a frame header that declares 2^31 - 2 bytes of content and then ends
    const frame = Buffer.from(zstdCompress(Buffer.alloc(64), 1, true));
    const fake = Buffer.from(frame);
    const cases = [
      envelope(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x84, 0xfe, 0xff, 0xff, 0x7f])), // FCS 4 bytes: 0x7ffffffe
      envelope(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xc4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])), // FCS 8 bytes
      envelope(fake.subarray(0, 6)),
      envelope(Buffer.concat([frame, frame])), // two frames: 128 bytes of payload, not a manifest
      envelope(Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]), frame])), // skippable frame first
    ];
    for (const object of cases) {
      const r = attempt(() => decodeManifest(object, NAME), IntegrityError, NAME);
      expect(r.ok).toBe(false);
    }
  });
});
