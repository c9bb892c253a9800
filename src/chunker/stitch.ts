/**
 * Parallel content-defined chunking with exactly the cut points of sequential chunking.
 *
 * Workers chunk the blocks of a region (e.g. 8 MiB each) independently, each from a fresh
 * state at its block's start, and report their cuts ("candidates"). Those are wrong only
 * near the block start, where the sequential chunker is still inside a chunk that began in
 * an earlier block. The stitcher continues the sequential chunker from the last confirmed
 * cut into the block until it cuts at a position that is also a candidate: after a cut
 * FastCDC's state is reset (hash 0, length 0), so from a common cut on both chunkings are
 * identical and the rest of the block's candidates are adopted as they are (with the
 * ids the worker computed). Usually that takes one or two chunks; on data without
 * content-defined cuts (long runs of one byte: every cut forced at maxSize) it may never
 * happen and the whole block is chunked sequentially here, still correctly.
 *
 * Pure: bytes and cut lists in, chunks out. The bytes of sequentially cut chunks are
 * returned (the caller hashes them); adopted chunks refer to the candidate's index.
 */
import { cutMasks, findCut, newScanState, type CutMasks } from "./fastcdc.js";
import type { ChunkerParams } from "./params.js";
import { findCuts } from "./scan.js";
import { freeNow } from "../util/early-free.js";

/** Real cut ends (not the remainder) of `block` chunked from a fresh state at its start. */
export function candidateCuts(block: Uint8Array, params: ChunkerParams, masks: CutMasks = cutMasks(params)): number[] {
  return findCuts(block, 0, block.length, params, masks, newScanState());
}

export type StitchedChunk =
  /**
   * Cut here: `bytes` must be hashed by the caller. A view of the block, or of a copy the
   * stitcher frees at its next push() or finish(): valid until then.
   */
  | { kind: "sequential"; offset: number; bytes: Buffer }
  /** The worker's chunk ending at candidates[index] (starting at the previous candidate, or the block start for index 0). */
  | { kind: "candidate"; offset: number; length: number; index: number };

export class CutStitcher {
  private readonly masks: CutMasks;
  /** Bytes since the last confirmed cut (< maxSize), copied out of earlier blocks. */
  private tail: Buffer = Buffer.alloc(0);
  /**
   * Copies joining the tail to a block, whose views the last push() returned: freed at
   * the next call, not left to the garbage collector (one or two of up to maxSize + block
   * per block: tens of MiB of garbage per GiB read otherwise).
   */
  private returned: Buffer[] = [];
  /** Logical offset of the next block's first byte. */
  private next: number;

  constructor(
    private readonly params: ChunkerParams,
    regionOffset: number,
  ) {
    this.masks = cutMasks(params);
    this.next = regionOffset;
  }

  /**
   * The chunks completed by this block, in order. `candidates`: candidateCuts() of this
   * very block (ascending block-relative ends).
   */
  push(block: Buffer, candidates: ArrayLike<number>): StitchedChunk[] {
    this.freeReturned();
    const out: StitchedChunk[] = [];
    const blockOffset = this.next;
    this.next += block.length;
    const isCandidate = new Set<number>();
    for (let i = 0; i < candidates.length; i++) isCandidate.add(candidates[i]!);
    // position in the block where the current chunk starts; negative: inside the tail
    let pos = -this.tail.length;
    let synced = this.tail.length === 0; // the block start is a confirmed cut
    while (!synced) {
      // the sequential chunker from the confirmed cut at `pos`; its next cut is within maxSize
      const from = Math.max(0, pos);
      const take = Math.min(block.length, from + this.params.maxSize - Math.max(0, -pos)) - from;
      const joinsTail = pos < 0;
      const joined = joinsTail ? this.tailJoinedWith(block.subarray(0, take)) : block.subarray(from, from + take);
      const at = findCut(joined, 0, joined.length, this.params, this.masks, newScanState());
      if (at < 0) {
        // the block ended inside this chunk: carry it over
        this.tail = joinsTail ? joined : ownedCopy(joined);
        return out;
      }
      out.push({ kind: "sequential", offset: blockOffset + pos, bytes: joined.subarray(0, at) });
      if (joinsTail) this.returned.push(joined);
      pos += at;
      this.tail = Buffer.alloc(0);
      if (pos === block.length) return out; // cut exactly at the block end: in sync for the next block
      synced = isCandidate.has(pos);
    }
    // in sync at `pos` (a candidate, or the block start): adopt the worker's chunks from here
    let index = 0;
    while (index < candidates.length && candidates[index]! <= pos) index++;
    let start = pos;
    for (; index < candidates.length; index++) {
      const end = candidates[index]!;
      out.push({ kind: "candidate", offset: blockOffset + start, length: end - start, index });
      start = end;
    }
    this.tail = ownedCopy(block.subarray(start));
    return out;
  }

  /** End of the region: the last, short chunk (the remainder), if any. */
  finish(): { offset: number; bytes: Buffer } | null {
    this.freeReturned();
    const last = this.tail;
    this.tail = Buffer.alloc(0);
    return last.length > 0 ? { offset: this.next - last.length, bytes: last } : null;
  }

  /** The tail and then `head` in one new buffer; the tail's own copy is freed. */
  private tailJoinedWith(head: Uint8Array): Buffer {
    const joined = ownedCopy(this.tail, head);
    freeNow(this.tail.buffer as ArrayBuffer);
    this.tail = Buffer.alloc(0);
    return joined;
  }

  private freeReturned(): void {
    for (const copy of this.returned) freeNow(copy.buffer as ArrayBuffer);
    this.returned = [];
  }
}

/** `parts` back to back in a buffer with an ArrayBuffer of its own (never Node's shared pool: freeNow may free it). */
function ownedCopy(...parts: Uint8Array[]): Buffer {
  let length = 0;
  for (const part of parts) length += part.length;
  const copy = Buffer.allocUnsafeSlow(length);
  let at = 0;
  for (const part of parts) {
    copy.set(part, at);
    at += part.length;
  }
  return copy;
}
