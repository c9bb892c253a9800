/**
 * What a chunk worker sends back with a scanned block (src/backup/chunk-processor.ts):
 * the object of each candidate chunk the known set lacks, from `encodeFrom` on, each
 * repeat once. Every object must decode to exactly its own chunk: the pipeline stores it
 * under that chunk's id without looking at it again.
 */
import { createCipheriv, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { EncodeScratch, encodeNewCandidates, scanBlock, scannedObject } from "../../src/backup/chunk-processor.js";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import { ChunkCodec } from "../../src/repository/chunk-codec.js";
import { ChunkIdSetBuilder } from "../../src/repository/chunk-id-set.js";
import { activeZstdBinding } from "../../src/util/zstd.js";
import { youngGenerationCollector } from "../../src/util/young-gc.js";

const params = chunkerParamsForAverage(16 << 10);

/** Random-looking bytes, the same in every run (an AES-CTR keystream): the test's cuts never vary. */
function seededBytes(length: number, seed: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(seed, 12);
  return createCipheriv("aes-128-ctr", Buffer.alloc(16, 3), iv).update(Buffer.alloc(length));
}

function blockWithRepeats(): Buffer {
  const a = seededBytes(300 << 10, 1);
  const repeated = seededBytes(200 << 10, 2);
  // the same content twice, each time after a long run of zeros: cut at maxSize boundaries
  return Buffer.concat([a, Buffer.alloc(256 << 10), repeated, Buffer.alloc(256 << 10), repeated, seededBytes(100 << 10, 3)]);
}

describe.each([
  ["unencrypted", new ChunkCodec({ compressionLevel: 3, keys: null })],
  ["encrypted", new ChunkCodec({ compressionLevel: 3, keys: { dataKey: new Uint8Array(randomBytes(32)), idKey: new Uint8Array(randomBytes(32)) } })],
])("objects encoded with a scan, %s", (_kind, codec) => {
  it("holds one object per new candidate, none for known ones, before encodeFrom or for repeats; each decodes to its chunk", () => {
    const block = blockWithRepeats();
    const { cuts, ids } = scanBlock(block, params, codec);
    expect(cuts.length).toBeGreaterThan(20);
    const idOf = (i: number) => Buffer.from(ids.subarray(i * 32, i * 32 + 32));
    const knownBuilder = new ChunkIdSetBuilder();
    for (let i = 3; i < cuts.length; i += 4) knownBuilder.add(idOf(i));
    const known = knownBuilder.build();
    const from = 1;
    const packed = encodeNewCandidates(block, cuts, ids, from, known, codec);
    const scanned = { block, cuts, ids: Buffer.from(ids), objects: { data: Buffer.from(packed.data.buffer), ends: packed.ends } };
    const seen = new Set<string>();
    let encoded = 0;
    let repeats = 0;
    for (let i = 0; i < cuts.length; i++) {
      const object = scannedObject(scanned, i);
      const idHex = idOf(i).toString("hex");
      const expectObject = i >= from && !known.has(idOf(i)) && !seen.has(idHex);
      if (i >= from && !known.has(idOf(i))) {
        if (seen.has(idHex)) repeats++;
        seen.add(idHex);
      }
      expect(object !== undefined, `candidate ${i}`).toBe(expectObject);
      if (object === undefined) continue;
      encoded++;
      const plain = block.subarray(i === 0 ? 0 : cuts[i - 1]!, cuts[i]!);
      expect(Buffer.compare(codec.decode(object, idHex, params.maxSize), plain), `candidate ${i}`).toBe(0);
    }
    expect(encoded).toBeGreaterThan(10);
    expect(repeats).toBeGreaterThan(0);
  });
});

describe("encoding in place (a worker's reused scratch)", () => {
  const codec = new ChunkCodec({ compressionLevel: 3, keys: null });

  it.runIf(activeZstdBinding().compressInto !== undefined)("writes exactly the bytes encode() returns, at any offset", () => {
    const bound = codec.encodedBound(params.maxSize);
    expect(bound).not.toBeNull();
    for (const plain of [randomBytes(40_000), Buffer.alloc(params.maxSize, 7), Buffer.concat([randomBytes(9000), Buffer.alloc(30_000)])]) {
      const out = new Uint8Array(5 + bound!);
      const written = codec.encodeInto(plain, codec.id(plain), out, 5);
      expect(Buffer.compare(Buffer.from(out.subarray(5, 5 + written)), codec.encode(plain))).toBe(0);
    }
  });

  it.runIf(activeZstdBinding().compressInto !== undefined)("an encrypted object encoded in place opens, bound to its chunk, to the same plain bytes", () => {
    const sealed = new ChunkCodec({ compressionLevel: 3, keys: { dataKey: new Uint8Array(randomBytes(32)), idKey: new Uint8Array(randomBytes(32)) } });
    for (const plain of [randomBytes(40_000), Buffer.alloc(params.maxSize, 7)]) {
      const id = sealed.id(plain);
      const bound = sealed.encodedBound(plain.length)!;
      const out = new Uint8Array(3 + bound);
      const written = sealed.encodeInto(plain, id, out, 3);
      const object = Buffer.from(out.subarray(3, 3 + written));
      expect(written).toBe(sealed.encode(plain, id).length); // same size as encode(): only the nonce differs
      expect(Buffer.compare(sealed.decode(object, id.toString("hex"), params.maxSize), plain)).toBe(0);
      const other = Buffer.from(id);
      other[0] ^= 1;
      expect(() => sealed.decode(object, other.toString("hex"), params.maxSize)).toThrow(); // bound to its own name
    }
  });

  it("the objects of one block stay intact when the same scratch encodes the next block", () => {
    const scratch = new EncodeScratch();
    const known = new ChunkIdSetBuilder().build();
    const first = blockWithRepeats();
    const second = randomBytes(first.length);
    const a = scanBlock(first, params, codec);
    const packedFirst = encodeNewCandidates(first, a.cuts, a.ids, 0, known, codec, scratch);
    const snapshot = Buffer.from(packedFirst.data);
    const b = scanBlock(second, params, codec);
    const packedSecond = encodeNewCandidates(second, b.cuts, b.ids, 0, known, codec, scratch);
    expect(packedSecond.data.length).toBeGreaterThan(0);
    expect(Buffer.compare(Buffer.from(packedFirst.data), snapshot)).toBe(0);
    // each block's buffer is its own (it is transferred to the main thread)
    expect(packedFirst.data.buffer).not.toBe(packedSecond.data.buffer);
    expect(packedFirst.data.byteLength).toBe(packedFirst.data.buffer.byteLength);
  });

  it("the scratch grows by what it needs plus 1 MiB, not by doubling, keeps its bytes and frees what it outgrew", () => {
    const canFree = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === "function";
    const scratch = new EncodeScratch();
    const first = scratch.room(0, 5 << 20);
    first.fill(9, 0, 5 << 20);
    const needed = (5 << 20) + (3 << 19); // 6.5 MiB: more than the first room
    const grown = scratch.room(5 << 20, 3 << 19);
    expect(grown === first).toBe(false);
    expect(grown.length).toBeGreaterThanOrEqual(needed);
    expect(grown.length).toBeLessThanOrEqual(needed + (1 << 20));
    expect(grown[0]).toBe(9);
    expect(grown[(5 << 20) - 1]).toBe(9);
    if (canFree) expect(first.buffer.byteLength).toBe(0);
    // no growth while it fits
    expect(scratch.room(0, needed)).toBe(grown);
  });

  it("a minor collection can be had on demand (chunk workers use it after each block)", () => {
    const collect = youngGenerationCollector();
    expect(collect).not.toBeNull();
    expect(() => collect!()).not.toThrow();
  });
});
