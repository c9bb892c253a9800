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

/**
 * Builds a ChunkIdSet from many ids with duplicates (the references of many manifests)
 * in O(n log n) time and memory proportional to the distinct ids: ids are appended to a
 * pending buffer; when it is full it is sorted, de-duplicated and merged into the sorted
 * base in one linear pass. The pending buffer grows with the base (at least 64 Ki, at most
 * 1 Mi ids), so merges copy the base O(references / base) times, not once per manifest
 * (merging per manifest is O(manifests x ids): 1000 manifests over 1M ids copy 32 GB).
 * Peak memory: about 2 x base + 40 bytes x pending.
 */
export class ChunkIdSetBuilder {
  private base: Buffer;
  private pending: Buffer;
  private pendingCount = 0;

  constructor(start: ChunkIdSet = ChunkIdSet.empty()) {
    this.base = start.buffer;
    this.pending = Buffer.allocUnsafe(MIN_PENDING * CHUNK_ID_BYTES);
  }

  add(id: Uint8Array): void {
    if (this.pendingCount * CHUNK_ID_BYTES === this.pending.length) this.makeRoom();
    this.pending.set(id.subarray(0, CHUNK_ID_BYTES), this.pendingCount * CHUNK_ID_BYTES);
    this.pendingCount++;
  }

  addAll(ids: Iterable<Uint8Array>): void {
    for (const id of ids) this.add(id);
  }

  /** The set of every id added so far (the builder can go on being used). */
  build(): ChunkIdSet {
    this.flush();
    return ChunkIdSet.fromSortedBuffer(this.base);
  }

  private makeRoom(): void {
    const capacity = this.pending.length / CHUNK_ID_BYTES;
    const want = Math.min(MAX_PENDING, Math.max(MIN_PENDING, this.base.length / CHUNK_ID_BYTES));
    if (want > capacity) {
      // grow instead of merging while the base is small compared with what is pending
      const bigger = Buffer.allocUnsafe(want * CHUNK_ID_BYTES);
      this.pending.copy(bigger, 0, 0, this.pendingCount * CHUNK_ID_BYTES);
      this.pending = bigger;
      return;
    }
    this.flush();
  }

  private flush(): void {
    if (this.pendingCount === 0) return;
    const fresh = sortUnique(this.pending, this.pendingCount);
    this.pendingCount = 0;
    this.base = mergeSorted(this.base, fresh);
  }
}

const MIN_PENDING = 1 << 16;
/** 1 Mi ids (32 MiB); the record index must fit in the 21 low bits of a float64 sort key. */
const MAX_PENDING = 1 << 20;
const INDEX_BITS = 2 ** 21;

/**
 * The first `count` 32-byte records of `records`, sorted and without duplicates, as a new
 * buffer. Sorting uses native Float64Array.sort on keys (first 4 id bytes x 2^21 + record
 * index), then orders runs with equal 4-byte prefixes (duplicates, rarely true prefix
 * collisions) by full comparison.
 */
function sortUnique(records: Buffer, count: number): Buffer {
  const keys = new Float64Array(count);
  for (let i = 0; i < count; i++) keys[i] = records.readUInt32BE(i * CHUNK_ID_BYTES) * INDEX_BITS + i;
  keys.sort();
  const out = Buffer.allocUnsafe(count * CHUNK_ID_BYTES);
  let o = 0;
  let runStart = 0;
  const run: number[] = [];
  while (runStart < count) {
    const prefix = Math.floor(keys[runStart]! / INDEX_BITS);
    let runEnd = runStart + 1;
    while (runEnd < count && Math.floor(keys[runEnd]! / INDEX_BITS) === prefix) runEnd++;
    if (runEnd - runStart === 1) {
      const at = (keys[runStart]! % INDEX_BITS) * CHUNK_ID_BYTES;
      records.copy(out, o, at, at + CHUNK_ID_BYTES);
      o += CHUNK_ID_BYTES;
    } else {
      // distinct ids of the run (usually one id repeated), then in order
      run.length = 0;
      for (let k = runStart; k < runEnd; k++) {
        const at = (keys[k]! % INDEX_BITS) * CHUNK_ID_BYTES;
        if (!run.some((r) => compareAt(records, r, records, at) === 0)) run.push(at);
      }
      run.sort((a, b) => compareAt(records, a, records, b));
      for (const at of run) {
        records.copy(out, o, at, at + CHUNK_ID_BYTES);
        o += CHUNK_ID_BYTES;
      }
    }
    runStart = runEnd;
  }
  return out.subarray(0, o);
}

/** Union of two sorted duplicate-free record buffers. */
function mergeSorted(a: Buffer, b: Buffer): Buffer {
  if (a.length === 0) return Buffer.from(b);
  if (b.length === 0) return a;
  const out = Buffer.allocUnsafe(a.length + b.length);
  let i = 0;
  let j = 0;
  let o = 0;
  while (i < a.length && j < b.length) {
    const c = compareAt(a, i, b, j);
    if (c <= 0) {
      a.copy(out, o, i, i + CHUNK_ID_BYTES);
      i += CHUNK_ID_BYTES;
      if (c === 0) j += CHUNK_ID_BYTES;
    } else {
      b.copy(out, o, j, j + CHUNK_ID_BYTES);
      j += CHUNK_ID_BYTES;
    }
    o += CHUNK_ID_BYTES;
  }
  if (i < a.length) {
    a.copy(out, o, i);
    o += a.length - i;
  }
  if (j < b.length) {
    b.copy(out, o, j);
    o += b.length - j;
  }
  // many duplicates: do not keep the unused tail alive
  return out.length - o > out.length / 8 ? Buffer.from(out.subarray(0, o)) : out.subarray(0, o);
}
