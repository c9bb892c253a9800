/**
 * The chunker's cut points are part of the repository format: a change moves every cut
 * and loses all deduplication against existing backups. Golden vectors (golden-cuts.json,
 * computed once by the chunker before the WebAssembly scan, for the fixed inputs of
 * inputs.ts) pin them; the property tests hold the WebAssembly scan to the JavaScript
 * reference (findCut) on any data, split anywhere, at every allowed average size.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { chunkBuffer, chunkerParamsForAverage, StreamChunker } from "../../src/chunker/index.js";
import { cutMasks, newScanState, type ScanState } from "../../src/chunker/fastcdc.js";
import { wasmFindCuts, wasmGearAvailable } from "../../src/chunker/gear-wasm.js";
import { findCuts, findCutsJs } from "../../src/chunker/scan.js";
import { candidateCuts } from "../../src/chunker/stitch.js";
import { PROJECT_ROOT } from "../helpers/s3-server.js";
import { GOLDEN_INPUTS, seededMix, seededRandom, seededText } from "./inputs.js";

interface GoldenVector {
  input: string;
  bytes: number;
  sha256: string;
  avgSize: number;
  chunks: number;
  lengths: string;
}
const golden = JSON.parse(readFileSync(join(PROJECT_ROOT, "test", "chunker", "golden-cuts.json"), "utf8")) as { vectors: GoldenVector[] };
const inputs = new Map(GOLDEN_INPUTS.map((i) => [i.name, i.make()]));
const lengthsOf = (v: GoldenVector): number[] => v.lengths.split(",").map(Number);
const endsOf = (lengths: number[]): number[] => {
  let end = 0;
  return lengths.map((l) => (end += l));
};

describe("chunker golden vectors", () => {
  it("the inputs are the bytes the vectors were computed from", () => {
    expect(golden.vectors.length).toBe(GOLDEN_INPUTS.length * 4);
    for (const v of golden.vectors) {
      const data = inputs.get(v.input)!;
      expect(data.length, v.input).toBe(v.bytes);
      expect(createHash("sha256").update(data).digest("hex"), v.input).toBe(v.sha256);
    }
  });

  it("WebAssembly is available here, so the fast scan is what the tests below exercise", () => {
    expect(wasmGearAvailable()).toBe(true);
  });

  it("chunkBuffer, candidateCuts, StreamChunker and the reference cut exactly at the golden points", () => {
    for (const v of golden.vectors) {
      const data = inputs.get(v.input)!;
      const params = chunkerParamsForAverage(v.avgSize);
      const what = `${v.input}, avg ${v.avgSize}`;
      const lengths = lengthsOf(v);
      expect(lengths.length, what).toBe(v.chunks);
      expect(chunkBuffer(data, params), what).toEqual(lengths);
      const ends = endsOf(lengths);
      const realCuts = ends[ends.length - 1] === data.length && !isRemainder(lengths, params) ? ends : ends.slice(0, -1);
      expect(candidateCuts(data, params), what).toEqual(realCuts);
      expect(findCutsJs(data, 0, data.length, params, cutMasks(params), newScanState()), what).toEqual(realCuts);
      const stream = new StreamChunker(params);
      const streamed: number[] = [];
      for (let at = 0; at < data.length; at += 1_000_003) for (const c of stream.push(data.subarray(at, at + 1_000_003))) streamed.push(c.length);
      const last = stream.finish();
      if (last) streamed.push(last.length);
      expect(streamed, what).toEqual(lengths);
    }
  });

  it("without WebAssembly (node --jitless) the fallback cuts at the golden points too", async () => {
    const picked = golden.vectors.filter((v) => v.input === "random 70001 bytes" || (v.input === "text-like 4 MiB" && v.avgSize === 65536));
    const dir = await mkdtemp(join(tmpdir(), "pv-golden-"));
    try {
      const files = await Promise.all(
        picked.map(async (v, i) => {
          const file = join(dir, `${i}.bin`);
          await writeFile(file, inputs.get(v.input)!);
          return [file, v.avgSize] as const;
        }),
      );
      const script = `
        import { readFileSync } from "node:fs";
        import { chunkBuffer, chunkerParamsForAverage } from ${JSON.stringify(join(PROJECT_ROOT, "dist", "src", "chunker", "index.js"))};
        import { wasmGearAvailable } from ${JSON.stringify(join(PROJECT_ROOT, "dist", "src", "chunker", "gear-wasm.js"))};
        const lengths = ${JSON.stringify(files)}.map(([file, avg]) => chunkBuffer(readFileSync(file), chunkerParamsForAverage(avg)).join(","));
        console.log(JSON.stringify({ wasm: wasmGearAvailable(), lengths }));`;
      const r = await execa(process.execPath, ["--jitless", "--input-type=module", "-e", script]);
      const out = JSON.parse(r.stdout) as { wasm: boolean; lengths: string[] };
      expect(out.wasm).toBe(false);
      expect(out.lengths).toEqual(picked.map((v) => v.lengths));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** True when the last length is the remainder of the data (shorter than a forced or content-defined cut would make it). */
function isRemainder(lengths: number[], params: { maxSize: number }): boolean {
  return lengths[lengths.length - 1]! < params.maxSize;
}

describe("WebAssembly scan against the JavaScript reference (property)", () => {
  const random = seededRandom(5 << 20, "property random");
  const text = seededText(3 << 20, "property text");
  const mix = seededMix("property mix");
  const sources: [string, Buffer][] = [
    ["random", random],
    ["text-like", text],
    ["zeros", Buffer.alloc(6 << 20)],
    ["0xaa", Buffer.alloc(5 << 20, 0xaa)],
    ["mix", mix],
  ];
  const averages = [4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20];

  /** All cuts of data[from..end), the range split at `splits` with the state carried across, as a streaming caller does. */
  const cutsSplit = (scan: typeof findCutsJs, data: Buffer, from: number, end: number, splits: number[], avg: number, state: ScanState): number[] => {
    const params = chunkerParamsForAverage(avg);
    const masks = cutMasks(params);
    const cuts: number[] = [];
    let at = from;
    for (const s of [...splits.filter((x) => x > from && x < end).sort((a, b) => a - b), end]) {
      cuts.push(...scan(data, at, s, params, masks, state));
      at = s;
    }
    return cuts;
  };

  it("same cuts and end state for any slice, split anywhere, starting mid-chunk, every average size", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...sources),
        fc.constantFrom(...averages),
        fc.integer({ min: 0, max: 3 << 20 }),
        fc.integer({ min: 0, max: 3 << 20 }),
        fc.array(fc.integer({ min: 0, max: 6 << 20 }), { maxLength: 5 }),
        fc.integer({ min: 0, max: 4 << 20 }),
        fc.integer(),
        async ([, data], avg, a, b, splits, scanned, hash) => {
          await new Promise((resolve) => setImmediate(resolve)); // let vitest's RPC through between runs
          const from = Math.min(a, data.length);
          const end = Math.min(data.length, from + b);
          // a chunk that began before `from`, with any hash: what a resumed scan gets
          const start = { scanned: Math.min(scanned, chunkerParamsForAverage(avg).maxSize - 1), hash: hash | 0 };
          const wasmState = { ...start };
          const jsState = { ...start };
          const wasm = cutsSplit((...args) => wasmFindCuts(...args)!, data, from, end, splits, avg, wasmState);
          const js = cutsSplit(findCutsJs, data, from, end, splits, avg, jsState);
          expect(wasm).toEqual(js);
          expect(wasmState).toEqual(jsState);
        },
      ),
      { numRuns: 150 },
    );
  });

  it("an empty range leaves the state as findCut does (found by the property above on Node 20)", () => {
    const params = chunkerParamsForAverage(4096);
    const masks = cutMasks(params);
    const data = seededRandom(10_000, "empty range");
    for (const start of [
      { scanned: 0, hash: 1 },
      { scanned: 100, hash: 0 },
      { scanned: 2000, hash: 12345 },
    ]) {
      const wasm = { ...start };
      const js = { ...start };
      expect(wasmFindCuts(data, 500, 500, params, masks, wasm)).toEqual(findCutsJs(data, 500, 500, params, masks, js));
      expect(wasm).toEqual(js);
    }
  });

  it("the largest chunks (avg 16 MiB, max 64 MiB) across many windows, on zeros and random data", () => {
    const params = chunkerParamsForAverage(16 << 20);
    const masks = cutMasks(params);
    for (const data of [Buffer.alloc(70 << 20), Buffer.concat([seededRandom(40 << 20, "large random"), Buffer.alloc(30 << 20)])]) {
      const js = findCutsJs(data, 0, data.length, params, masks, newScanState());
      expect(findCuts(data, 0, data.length, params, masks, newScanState())).toEqual(js);
    }
  });

  it("candidate cuts of random blocks of every kind of data equal the reference's", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...sources),
        fc.constantFrom(...averages),
        fc.integer({ min: 0, max: 4 << 20 }),
        fc.integer({ min: 1, max: 9 << 20 }),
        ([, data], avg, from, size) => {
          const block = data.subarray(Math.min(from, data.length), Math.min(data.length, from + size));
          const params = chunkerParamsForAverage(avg);
          expect(candidateCuts(block, params)).toEqual(findCutsJs(block, 0, block.length, params, cutMasks(params), newScanState()));
        },
      ),
      { numRuns: 60 },
    );
  });
});
