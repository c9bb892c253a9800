/**
 * Parallel chunking (workers cut blocks from a fresh state, CutStitcher re-synchronizes)
 * must give exactly the cut points of sequential chunking, whatever the data and the
 * block size: random data, text-like data, constant runs (only forced cuts at maxSize:
 * the worker's cuts may never line up), and blocks smaller than a chunk.
 */
import { createCipheriv, randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { chunkBuffer, chunkerParamsForAverage } from "../../src/chunker/index.js";
import { candidateCuts, CutStitcher } from "../../src/chunker/stitch.js";

const params = chunkerParamsForAverage(64 << 10);

/** Chunk boundaries by stitching `data` split into blocks of the given sizes; checks the bytes too. */
function stitched(data: Buffer, blockSizes: (i: number) => number, regionOffset = 1 << 30): { offset: number; length: number }[] {
  const stitcher = new CutStitcher(params, regionOffset);
  const out: { offset: number; length: number }[] = [];
  let pos = 0;
  for (let i = 0; pos < data.length; i++) {
    const block = data.subarray(pos, Math.min(data.length, pos + blockSizes(i)));
    const candidates = candidateCuts(block, params);
    for (const c of stitcher.push(Buffer.from(block), candidates)) {
      if (c.kind === "sequential") {
        expect(c.bytes.equals(data.subarray(c.offset - regionOffset, c.offset - regionOffset + c.bytes.length))).toBe(true);
        out.push({ offset: c.offset, length: c.bytes.length });
      } else {
        // the candidate's own chunk: ends at candidates[index], starts at the previous one (or the block start)
        const start = c.index === 0 ? 0 : candidates[c.index - 1]!;
        expect(c.offset - regionOffset - pos).toBe(start);
        expect(c.length).toBe(candidates[c.index]! - start);
        out.push({ offset: c.offset, length: c.length });
      }
    }
    pos += block.length;
  }
  const last = stitcher.finish();
  if (last) {
    expect(last.bytes.equals(data.subarray(last.offset - regionOffset))).toBe(true);
    out.push({ offset: last.offset, length: last.bytes.length });
  }
  return out;
}

function sequential(data: Buffer, regionOffset = 1 << 30): { offset: number; length: number }[] {
  let offset = regionOffset;
  return chunkBuffer(data, params).map((length) => {
    const c = { offset, length };
    offset += length;
    return c;
  });
}

function textLike(bytes: number, seed: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(seed, 12);
  const raw = createCipheriv("aes-128-ctr", Buffer.alloc(16, 7), iv).update(Buffer.alloc(bytes));
  const alphabet = Buffer.from("etaoinshrdlu \n.,");
  for (let i = 0; i < raw.length; i++) raw[i] = alphabet[raw[i]! & 15]!;
  return raw;
}

describe("parallel chunking by stitching", () => {
  const random = randomBytes(6 << 20);

  it("equals sequential chunking on random data for block sizes from below a chunk to several MiB", () => {
    const expected = sequential(random);
    for (const size of [1 << 20, 8 << 20, 3 << 20, 300_000, 65_536, 40_000, 4096]) {
      expect(
        stitched(random, () => size),
        `blocks of ${size}`,
      ).toEqual(expected);
    }
  });

  it("equals sequential chunking on constant runs (forced cuts only) and mixes of runs, text and random data", () => {
    const zeros = Buffer.alloc(5 << 20);
    expect(stitched(zeros, () => 1 << 20)).toEqual(sequential(zeros));
    expect(stitched(zeros, () => 700_000)).toEqual(sequential(zeros));
    const mix = Buffer.concat([textLike(1 << 20, 1), Buffer.alloc(3 << 20, 0xaa), random.subarray(0, 2 << 20), Buffer.alloc(100_000), textLike(777_777, 2)]);
    for (const size of [1 << 20, 2 << 20, 123_457])
      expect(
        stitched(mix, () => size),
        `blocks of ${size}`,
      ).toEqual(sequential(mix));
  });

  it("equals sequential chunking for random block sizes (property)", async () => {
    // async: the event loop turns between runs (a long synchronous loop starves vitest's RPC on a loaded machine)
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 2 << 20 }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 2 << 20 }),
        async (sizes, length) => {
          await new Promise((resolve) => setImmediate(resolve));
          // The stitcher re-scans its carried tail (< maxSize) at every block until it cuts, so
          // the cost is blocks x tail: with 1-byte blocks, 1 MiB took two minutes (before the
          // WebAssembly scan too) and timed the test out at random. At most 8192 blocks per
          // run keeps every block size, and data of several chunks from 32-byte blocks on.
          const data = random.subarray(0, Math.min(length, 8192 * Math.min(...sizes)));
          expect(stitched(data, (i) => sizes[i % sizes.length]!)).toEqual(sequential(data));
        },
      ),
      { numRuns: 40 },
    );
  });

  it("re-synchronizes within a few chunks of each block start on ordinary data", () => {
    const stitcher = new CutStitcher(params, 0);
    let sequentialChunks = 0;
    let all = 0;
    const text = textLike(8 << 20, 3);
    for (let pos = 0; pos < text.length; pos += 1 << 20) {
      const block = text.subarray(pos, pos + (1 << 20));
      for (const c of stitcher.push(block, candidateCuts(block, params))) {
        all++;
        if (c.kind === "sequential") sequentialChunks++;
      }
    }
    expect(all).toBeGreaterThan(100);
    expect(sequentialChunks).toBeLessThanOrEqual(8 * 3); // at most a few per block
  });
});

describe("CutStitcher's own copies", () => {
  const canFree = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === "function";

  it.runIf(canFree)("are freed at the next call (not left to the GC), and the caller's blocks never are", () => {
    const stitcher = new CutStitcher(params, 0);
    const text = textLike(6 << 20, 5);
    const blockBytes = 1 << 20;
    let fromCopies: Buffer[] = [];
    let copiesSeen = 0;
    const blocks: Buffer[] = [];
    for (let pos = 0; pos < text.length; pos += blockBytes) {
      const block = Buffer.from(text.subarray(pos, pos + blockBytes));
      blocks.push(block);
      const out = stitcher.push(block, candidateCuts(block, params));
      for (const copy of fromCopies) expect(copy.length, "a copy returned by the previous push is freed").toBe(0);
      fromCopies = [];
      for (const c of out) {
        if (c.kind !== "sequential") continue;
        expect(c.bytes.equals(text.subarray(c.offset, c.offset + c.bytes.length))).toBe(true);
        if (c.bytes.buffer !== block.buffer) fromCopies.push(c.bytes);
      }
      copiesSeen += fromCopies.length;
    }
    const last = stitcher.finish();
    for (const copy of fromCopies) expect(copy.length).toBe(0);
    // the remainder is handed over, not freed
    expect(last === null || last.bytes.equals(text.subarray(last.offset))).toBe(true);
    expect(copiesSeen).toBeGreaterThan(2);
    blocks.forEach((block, i) => expect(block.equals(text.subarray(i * blockBytes, (i + 1) * blockBytes))).toBe(true));
  });
});
