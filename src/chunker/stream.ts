/**
 * Streaming wrapper around findCut/findCuts: feed the bytes of one contiguous data region in
 * buffers of any size, get back complete chunks. A chunk may span input buffers; the
 * pending tail (< maxSize) is copied once so the caller may reuse its buffers.
 */
import { cutMasks, findCut, newScanState, type CutMasks, type ScanState } from "./fastcdc.js";
import type { ChunkerParams } from "./params.js";
import { findCuts } from "./scan.js";

export class StreamChunker {
  private readonly masks: CutMasks;
  private readonly state: ScanState = newScanState();
  /** Bytes of the current, unfinished chunk carried over from earlier pushes. */
  private pending: Buffer | null = null;

  constructor(private readonly params: ChunkerParams) {
    this.masks = cutMasks(params);
  }

  /**
   * Returns the chunks completed by this data. Returned buffers are either views into
   * `data` (valid until the caller reuses `data`) or fresh copies: consume them before
   * the next push if `data` is reused.
   */
  push(data: Buffer): Buffer[] {
    const chunks: Buffer[] = [];
    let work = data;
    let from = 0;
    if (this.pending !== null) {
      // Only the part needed to finish the pending chunk is joined (at most maxSize).
      const need = Math.min(data.length, this.params.maxSize - this.pending.length);
      const joined = Buffer.concat([this.pending, data.subarray(0, need)]);
      const scanFrom = this.pending.length;
      const at = findCut(joined, scanFrom, joined.length, this.params, this.masks, this.state);
      if (at < 0) {
        this.pending = joined;
        return chunks;
      }
      chunks.push(joined.subarray(0, at));
      this.pending = null;
      from = at - scanFrom;
      work = data;
    }
    let start = from;
    for (const at of findCuts(work, start, work.length, this.params, this.masks, this.state)) {
      chunks.push(work.subarray(start, at));
      start = at;
    }
    if (start < work.length) this.pending = Buffer.from(work.subarray(start));
    return chunks;
  }

  /** Ends the region: returns the last (short) chunk, if any, and resets. */
  finish(): Buffer | null {
    const last = this.pending;
    this.pending = null;
    this.state.scanned = 0;
    this.state.hash = 0;
    return last !== null && last.length > 0 ? last : null;
  }
}

/** Cut points of one whole buffer (for tests and measurements). */
export function chunkBuffer(data: Buffer, params: ChunkerParams): number[] {
  const lengths: number[] = [];
  let start = 0;
  for (const at of findCuts(data, 0, data.length, params, cutMasks(params), newScanState())) {
    lengths.push(at - start);
    start = at;
  }
  if (start < data.length) lengths.push(data.length - start);
  return lengths;
}
