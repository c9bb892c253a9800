/**
 * FastCDC-style content-defined chunking with normalized chunk sizes (Xia et al. 2016),
 * a pure function of bytes in, cut points out: no I/O, no allocation per byte.
 *
 * A 32-bit gear hash h = (h << 1) + GEAR[byte] is rolled over the data; a cut is made
 * where the hash's top bits are all zero. Between min and avg the mask has 2 more bits
 * (cuts are rarer), after avg 2 fewer (cuts are likelier): this narrows the size
 * distribution around avg. The top bits are used because with a left shift they depend
 * on the last 32 bytes, the low bits only on the last few.
 */
import { GEAR } from "./gear.js";
import type { ChunkerParams } from "./params.js";

function topBitsMask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (((1 << bits) - 1) << (32 - bits)) >>> 0;
}

export interface CutMasks {
  readonly strict: number;
  readonly loose: number;
}

export function cutMasks(params: ChunkerParams): CutMasks {
  const bits = Math.round(Math.log2(params.avgSize));
  return { strict: topBitsMask(bits + 2), loose: topBitsMask(bits - 2) };
}

/** Scan state carried across calls so a chunk can span several input buffers. */
export interface ScanState {
  /** Bytes of the current chunk already scanned. */
  scanned: number;
  hash: number;
}

export function newScanState(): ScanState {
  return { scanned: 0, hash: 0 };
}

/**
 * Look for the end of the chunk that started `state.scanned` bytes before `data[from]`.
 * Scans data[from..end). Returns the index in `data` just past the cut, or -1 if no cut
 * was found in this range (state is updated so scanning can resume on the next buffer).
 * After a cut, the caller starts the next chunk with a fresh state.
 */
export function findCut(data: Uint8Array, from: number, end: number, params: ChunkerParams, masks: CutMasks, state: ScanState): number {
  const { minSize, avgSize, maxSize } = params;
  // chunkStart is where the current chunk began, relative to data (may be negative).
  const chunkStart = from - state.scanned;
  let hash = state.hash;
  let i = from;
  // Bytes below minSize never cut. The gear window is 32 bytes, so starting the hash
  // 32 bytes before minSize gives exactly the hash a full scan would have there.
  const warmStart = chunkStart + minSize - 32;
  if (i < warmStart) {
    if (warmStart >= end) {
      state.scanned = end - chunkStart;
      state.hash = 0;
      return -1;
    }
    i = warmStart;
    hash = 0;
  }
  const gear = GEAR;
  const minEnd = Math.min(end, chunkStart + minSize);
  while (i < minEnd) {
    hash = ((hash << 1) + gear[data[i]!]!) | 0;
    i++;
  }
  const strictEnd = Math.min(end, chunkStart + avgSize);
  const strict = masks.strict;
  while (i < strictEnd) {
    hash = ((hash << 1) + gear[data[i]!]!) | 0;
    i++;
    if ((hash & strict) === 0) return cut(state, i);
  }
  const looseEnd = Math.min(end, chunkStart + maxSize);
  const loose = masks.loose;
  while (i < looseEnd) {
    hash = ((hash << 1) + gear[data[i]!]!) | 0;
    i++;
    if ((hash & loose) === 0) return cut(state, i);
  }
  if (i === chunkStart + maxSize) return cut(state, i);
  state.scanned = i - chunkStart;
  state.hash = hash;
  return -1;
}

function cut(state: ScanState, at: number): number {
  state.scanned = 0;
  state.hash = 0;
  return at;
}
