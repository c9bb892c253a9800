import { randomBytes, createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { StreamChunker, chunkBuffer, chunkerParamsForAverage } from "../../src/chunker/index.js";

const params = chunkerParamsForAverage(64 << 10);

function streamLengths(data: Buffer, splits: number[]): number[] {
  const chunker = new StreamChunker(params);
  const lengths: number[] = [];
  let pos = 0;
  for (const size of [...splits, data.length]) {
    const end = Math.min(data.length, pos + size);
    for (const c of chunker.push(data.subarray(pos, end))) lengths.push(c.length);
    pos = end;
    if (pos >= data.length) break;
  }
  const last = chunker.finish();
  if (last) lengths.push(last.length);
  return lengths;
}

describe("FastCDC chunker", () => {
  const data = randomBytes(8 << 20);

  it("respects min/max and averages near the target on random data", () => {
    const lengths = chunkBuffer(data, params);
    expect(lengths.reduce((a, b) => a + b, 0)).toBe(data.length);
    for (const l of lengths.slice(0, -1)) {
      expect(l).toBeGreaterThanOrEqual(params.minSize);
      expect(l).toBeLessThanOrEqual(params.maxSize);
    }
    const mean = data.length / lengths.length;
    expect(mean).toBeGreaterThan(params.avgSize * 0.6);
    expect(mean).toBeLessThan(params.avgSize * 1.6);
  });

  it("cuts identically however the stream is split", () => {
    const whole = chunkBuffer(data, params);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 700_000 }), { minLength: 1, maxLength: 30 }), (splits) => {
        expect(streamLengths(data, splits)).toEqual(whole);
      }),
      { numRuns: 40 },
    );
  });

  it("resynchronises after an insertion: most chunks of shifted data are unchanged", () => {
    const shifted = Buffer.concat([randomBytes(1234), data]);
    const ids = (buf: Buffer): Set<string> => {
      const out = new Set<string>();
      let pos = 0;
      for (const l of chunkBuffer(buf, params)) {
        out.add(
          createHash("sha256")
            .update(buf.subarray(pos, pos + l))
            .digest("hex"),
        );
        pos += l;
      }
      return out;
    };
    const a = ids(data);
    const b = ids(shifted);
    let shared = 0;
    for (const id of a) if (b.has(id)) shared++;
    expect(shared / a.size).toBeGreaterThan(0.9);
  });

  it("cuts zero-filled data at maxSize", () => {
    const zeros = Buffer.alloc(1 << 20);
    const lengths = chunkBuffer(zeros, params);
    expect(lengths[0]).toBe(params.maxSize);
  });
});
