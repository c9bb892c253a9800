/**
 * A compact, immutable set of 32-byte chunk ids: one sorted Buffer, binary search.
 * 1M chunks take 32 MB instead of ~150 MB as a Set of hex strings.
 */
import { CHUNK_ID_BYTES } from "../manifest/format.js";

function compareAt(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): number {
  for (let i = 0; i < CHUNK_ID_BYTES; i++) {
    const d = a[aOff + i]! - b[bOff + i]!;
    if (d !== 0) return d;
  }
  return 0;
}

export class ChunkIdSet {
  private constructor(private readonly sorted: Buffer) {}

  static empty(): ChunkIdSet {
    return new ChunkIdSet(Buffer.alloc(0));
  }

  /** Trusts that `sorted` is sorted and duplicate-free (it came from this class). */
  static fromSortedBuffer(sorted: Buffer): ChunkIdSet {
    if (sorted.length % CHUNK_ID_BYTES !== 0) throw new Error("chunk id set: length is not a multiple of 32");
    return new ChunkIdSet(sorted);
  }

  get size(): number {
    return this.sorted.length / CHUNK_ID_BYTES;
  }

  get buffer(): Buffer {
    return this.sorted;
  }

  has(id: Uint8Array): boolean {
    let lo = 0;
    let hi = this.size - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareAt(this.sorted, mid * CHUNK_ID_BYTES, id, 0);
      if (c === 0) return true;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }

  /** Every id, in ascending order (views into the set's buffer). */
  *ids(): Generator<Buffer> {
    for (let o = 0; o < this.sorted.length; o += CHUNK_ID_BYTES) yield this.sorted.subarray(o, o + CHUNK_ID_BYTES);
  }

  /** A new set with these ids added. */
  withAdded(ids: Iterable<Uint8Array>): ChunkIdSet {
    const fresh = [...ids].filter((id) => !this.has(id)).sort((a, b) => compareAt(a, 0, b, 0));
    const out = Buffer.allocUnsafe(this.sorted.length + fresh.length * CHUNK_ID_BYTES);
    let i = 0;
    let j = 0;
    let o = 0;
    let last: Uint8Array | null = null;
    const n = this.size;
    while (i < n || j < fresh.length) {
      const takeOld = j >= fresh.length || (i < n && compareAt(this.sorted, i * CHUNK_ID_BYTES, fresh[j]!, 0) < 0);
      if (takeOld) {
        this.sorted.copy(out, o, i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES);
        i++;
        o += CHUNK_ID_BYTES;
      } else {
        const id = fresh[j++]!;
        if (last !== null && compareAt(last, 0, id, 0) === 0) continue; // duplicate among the new ids
        out.set(id.subarray(0, CHUNK_ID_BYTES), o);
        last = id;
        o += CHUNK_ID_BYTES;
      }
    }
    return new ChunkIdSet(out.subarray(0, o));
  }
}
