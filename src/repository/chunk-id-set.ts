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

/** A ChunkIdSet's ids in shared memory (structured-cloneable: worker threads see the same bytes). */
export interface SharedChunkIds {
  buffer: SharedArrayBuffer;
  byteOffset: number;
  byteLength: number;
}

export class ChunkIdSet {
  /** Never written after construction; shared() may move it to shared memory (same bytes). */
  private constructor(private sorted: Buffer) {}

  static empty(): ChunkIdSet {
    return new ChunkIdSet(Buffer.alloc(0));
  }

  /** Trusts that `sorted` is sorted and duplicate-free (it came from this class). */
  static fromSortedBuffer(sorted: Buffer): ChunkIdSet {
    if (sorted.length % CHUNK_ID_BYTES !== 0) throw new Error("chunk id set: length is not a multiple of 32");
    return new ChunkIdSet(sorted);
  }

  /** The same set over ids another thread shared (shared()); it only reads them. */
  static fromShared(ids: SharedChunkIds): ChunkIdSet {
    return ChunkIdSet.fromSortedBuffer(Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength));
  }

  /**
   * The ids in shared memory, for worker threads (which only read them). The set is
   * immutable, so it moves its own ids there once rather than keeping a second copy.
   */
  shared(): SharedChunkIds {
    if (!(this.sorted.buffer instanceof SharedArrayBuffer)) {
      const moved = Buffer.from(new SharedArrayBuffer(this.sorted.length));
      this.sorted.copy(moved);
      this.sorted = moved;
    }
    return { buffer: this.sorted.buffer as SharedArrayBuffer, byteOffset: this.sorted.byteOffset, byteLength: this.sorted.length };
  }

  get size(): number {
    return this.sorted.length / CHUNK_ID_BYTES;
  }

  get buffer(): Buffer {
    return this.sorted;
  }

  has(id: Uint8Array): boolean {
    return this.indexOf(id) >= 0;
  }

  /** The id's position in ascending order, or -1. */
  indexOf(id: Uint8Array): number {
    let lo = 0;
    let hi = this.size - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareAt(this.sorted, mid * CHUNK_ID_BYTES, id, 0);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Every id, in ascending order (views into the set's buffer). */
  *ids(): Generator<Buffer> {
    for (let o = 0; o < this.sorted.length; o += CHUNK_ID_BYTES) yield this.sorted.subarray(o, o + CHUNK_ID_BYTES);
  }

  /** A new set without the ids (hex) in `removed`. */
  without(removed: ReadonlySet<string>): ChunkIdSet {
    if (removed.size === 0) return this;
    const out = Buffer.allocUnsafe(this.sorted.length);
    let o = 0;
    for (const id of this.ids()) {
      if (removed.has(id.toString("hex"))) continue;
      id.copy(out, o);
      o += CHUNK_ID_BYTES;
    }
    return new ChunkIdSet(out.subarray(0, o));
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
 * A hash set of 32-byte chunk ids: the ids back to back in one buffer (32 bytes each, in
 * insertion order, each id's index stable) plus an open-addressing table of indexes
 * (4 bytes x 2-4 slots per id). About 45 bytes per distinct id, no object per id; an add
 * or lookup costs one hash and usually one 32-byte comparison, whatever the size. Ids
 * are hashes themselves (SHA-256, or HMAC in encrypted repositories), so a few of their
 * bytes are the table hash.
 *
 * Used where many references with duplicates meet (the chunk lists of many manifests):
 * de-duplicating on insert is O(references), where sorting and merging per manifest is
 * O(manifests x ids) (1000 manifests over 1M ids copy 32 GB).
 */
export class ChunkIdHashSet {
  private records: Buffer;
  private count = 0;
  private slots: Int32Array;
  private mask: number;

  constructor(expected = 1024) {
    let capacity = 1024;
    while (capacity < expected * 2) capacity *= 2;
    this.slots = new Int32Array(capacity).fill(-1);
    this.mask = capacity - 1;
    this.records = Buffer.allocUnsafe(Math.max(64, expected) * CHUNK_ID_BYTES);
  }

  get size(): number {
    return this.count;
  }

  /** The id at `index` (a view into the set's buffer). */
  id(index: number): Buffer {
    return this.records.subarray(index * CHUNK_ID_BYTES, (index + 1) * CHUNK_ID_BYTES);
  }

  /** The index of the id, or -1. */
  indexOf(id: Uint8Array): number {
    let slot = hashOf(id, 0) & this.mask;
    for (;;) {
      const index = this.slots[slot]!;
      if (index < 0) return -1;
      if (compareAt(this.records, index * CHUNK_ID_BYTES, id, 0) === 0) return index;
      slot = (slot + 1) & this.mask;
    }
  }

  has(id: Uint8Array): boolean {
    return this.indexOf(id) >= 0;
  }

  /** The id's index; the id is added first if it is new. */
  add(id: Uint8Array): number {
    let slot = hashOf(id, 0) & this.mask;
    for (;;) {
      const index = this.slots[slot]!;
      if (index < 0) break;
      if (compareAt(this.records, index * CHUNK_ID_BYTES, id, 0) === 0) return index;
      slot = (slot + 1) & this.mask;
    }
    const index = this.count;
    if ((index + 1) * CHUNK_ID_BYTES > this.records.length) {
      const bigger = Buffer.allocUnsafe(this.records.length * 2);
      this.records.copy(bigger, 0, 0, index * CHUNK_ID_BYTES);
      this.records = bigger;
    }
    copyId(id, 0, this.records, index * CHUNK_ID_BYTES);
    this.count++;
    this.slots[slot] = index;
    if (this.count * 2 > this.slots.length) this.grow();
    return index;
  }

  private grow(): void {
    const slots = new Int32Array(this.slots.length * 2).fill(-1);
    const mask = slots.length - 1;
    for (let index = 0; index < this.count; index++) {
      let slot = hashOf(this.records, index * CHUNK_ID_BYTES) & mask;
      while (slots[slot]! >= 0) slot = (slot + 1) & mask;
      slots[slot] = index;
    }
    this.slots = slots;
    this.mask = mask;
  }

  /** The ids as a sorted ChunkIdSet (a new buffer of 32 bytes per id). */
  toSortedSet(): ChunkIdSet {
    return ChunkIdSet.fromSortedBuffer(sortRecords(this.records, this.count));
  }
}

/** Table hash: ids are uniformly distributed; mixing both ends also copes with ids that share a prefix. */
function hashOf(a: Uint8Array, o: number): number {
  return (
    ((a[o]! | (a[o + 1]! << 8) | (a[o + 2]! << 16) | (a[o + 3]! << 24)) ^ (a[o + 28]! | (a[o + 29]! << 8) | (a[o + 30]! << 16) | (a[o + 31]! << 24))) >>> 0
  );
}

/**
 * Builds a ChunkIdSet from many ids with duplicates (the references of many manifests):
 * de-duplicated on insert (ChunkIdHashSet), sorted once at the end. Memory: ~45 bytes per
 * distinct id while building, plus the sorted result (32 bytes per id).
 */
export class ChunkIdSetBuilder {
  private readonly set: ChunkIdHashSet;

  constructor(start: ChunkIdSet = ChunkIdSet.empty()) {
    this.set = new ChunkIdHashSet(Math.max(1024, start.size * 2));
    for (const id of start.ids()) this.set.add(id);
  }

  add(id: Uint8Array): void {
    this.set.add(id);
  }

  addAll(ids: Iterable<Uint8Array>): void {
    for (const id of ids) this.set.add(id);
  }

  get size(): number {
    return this.set.size;
  }

  build(): ChunkIdSet {
    return this.set.toSortedSet();
  }
}

/**
 * `count` distinct 32-byte records, sorted, as a new buffer: a counting sort on the first
 * two bytes (ids are uniform), then each bucket by full comparison (insertion sort while
 * small, about 16 ids per bucket at 1M ids).
 */
function sortRecords(records: Buffer, count: number): Buffer {
  const starts = new Uint32Array(65537);
  for (let i = 0; i < count; i++) starts[((records[i * CHUNK_ID_BYTES]! << 8) | records[i * CHUNK_ID_BYTES + 1]!) + 1]!++;
  for (let b = 1; b <= 65536; b++) starts[b]! += starts[b - 1]!;
  const next = starts.slice(0, 65536);
  const order = new Uint32Array(count);
  for (let i = 0; i < count; i++) order[next[(records[i * CHUNK_ID_BYTES]! << 8) | records[i * CHUNK_ID_BYTES + 1]!]!++] = i;
  const cmp = (x: number, y: number): number => compareAt(records, x * CHUNK_ID_BYTES, records, y * CHUNK_ID_BYTES);
  for (let b = 0; b < 65536; b++) {
    const s = starts[b]!;
    const e = starts[b + 1]!;
    if (e - s < 2) continue;
    if (e - s <= 32) {
      for (let i = s + 1; i < e; i++) {
        const v = order[i]!;
        let j = i - 1;
        while (j >= s && cmp(order[j]!, v) > 0) {
          order[j + 1] = order[j]!;
          j--;
        }
        order[j + 1] = v;
      }
    } else {
      order.set(Array.from(order.subarray(s, e)).sort(cmp), s);
    }
  }
  const out = Buffer.allocUnsafe(count * CHUNK_ID_BYTES);
  for (let k = 0; k < count; k++) copyId(records, order[k]! * CHUNK_ID_BYTES, out, k * CHUNK_ID_BYTES);
  return out;
}

/** 32 bytes; a plain loop beats Buffer.copy/TypedArray.set at this size (no argument checks). */
function copyId(from: Uint8Array, fromOff: number, to: Uint8Array, toOff: number): void {
  for (let k = 0; k < CHUNK_ID_BYTES; k++) to[toOff + k] = from[fromOff + k]!;
}

/**
 * Chunk ids, each with the latest of the times noted for it (u32 seconds): the chunk lock
 * times of an object-lock repository (the latest basis of the manifests referencing each
 * chunk, src/repository/object-lock.ts). De-duplicated on insert like ChunkIdSetBuilder,
 * plus 4 bytes per id.
 */
export class ChunkIdTimesBuilder {
  private readonly set: ChunkIdHashSet;
  private times: Uint32Array;

  constructor(start: ChunkIdSet = ChunkIdSet.empty(), startTimes: Uint32Array = new Uint32Array(0)) {
    this.set = new ChunkIdHashSet(Math.max(1024, start.size * 2));
    this.times = new Uint32Array(Math.max(1024, start.size * 2));
    let i = 0;
    for (const id of start.ids()) this.add(id, startTimes[i++] ?? 0);
  }

  add(id: Uint8Array, seconds: number): void {
    const index = this.set.add(id);
    if (index >= this.times.length) {
      const bigger = new Uint32Array(this.times.length * 2);
      bigger.set(this.times);
      this.times = bigger;
    }
    if (seconds > this.times[index]!) this.times[index] = seconds;
  }

  get size(): number {
    return this.set.size;
  }

  /** The ids in ascending order and their times in the same order. */
  build(): { set: ChunkIdSet; times: Uint32Array } {
    const set = this.set.toSortedSet();
    const times = new Uint32Array(set.size);
    let k = 0;
    for (const id of set.ids()) times[k++] = this.times[this.set.indexOf(id)]!;
    return { set, times };
  }
}
