/**
 * A backup's logical disk as a BlockDevice, read lazily from the repository: a byte range
 * maps to the manifest entries it overlaps (binary search over their offsets), only those
 * chunks are fetched (several at a time for a large range), holes read as zeros without a
 * request, and recently used chunks stay in a bounded cache. File restore (ls, dump,
 * restore --include, check --fs) and the NBD export read disks through this.
 *
 * The cache and the de-duplication of fetches in flight are keyed by chunk id, not by
 * position: a disk repeats chunks (zeroed inode tables, copies of files), and each is
 * fetched once however many places it fills.
 */
import { PloopvaultError } from "../errors.js";
import { checkRange, type BlockDevice } from "../fs/block-device.js";
import type { Manifest } from "../manifest/format.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { forEachConcurrent } from "../util/limiter.js";

export interface LazyDiskOptions {
  /** Bytes of decoded chunks kept for reuse (default 64 MiB; at least one chunk is kept). */
  cacheBytes?: number;
  /** Chunks fetched at the same time for one large read (default 8). */
  concurrency?: number;
}

export interface LazyDiskStats {
  /** Chunk objects fetched from the repository (GETs, re-reads of damaged copies aside). */
  chunksFetched: number;
  /** Decoded bytes of those chunks. */
  bytesFetched: number;
  /** Reads served from the cache. */
  cacheHits: number;
}

/** A run of the disk that is stored data (one or more chunks) or a hole (zeros, never fetched). */
export interface DiskExtent {
  offset: number;
  length: number;
  hole: boolean;
}

export class LazyBackupDisk implements BlockDevice {
  readonly size: number;
  readonly stats: LazyDiskStats = { chunksFetched: 0, bytesFetched: 0, cacheHits: 0 };
  private readonly offsets: Float64Array;
  private readonly cacheLimit: number;
  private readonly concurrency: number;
  /** Chunk id (hex) -> decoded chunk; insertion order = recency (re-inserted on every hit). */
  private readonly cache = new Map<string, Buffer>();
  private cachedBytes = 0;
  private readonly inFlight = new Map<string, Promise<Buffer>>();

  constructor(
    private readonly repo: Repository,
    readonly ref: BackupRef,
    private readonly manifest: Manifest,
    options: LazyDiskOptions = {},
  ) {
    this.size = manifest.metadata.disk.logicalBytes;
    this.offsets = Float64Array.from(manifest.entries, (e) => e.offset);
    this.cacheLimit = options.cacheBytes ?? 64 * 1024 * 1024;
    this.concurrency = Math.max(1, options.concurrency ?? 8);
  }

  /** Index of the entry that contains byte `offset` (offset < size). */
  entryAt(offset: number): number {
    let lo = 0;
    let hi = this.offsets.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.offsets[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Where [offset, offset + length) has data and where holes, from the manifest alone (no
   * fetch): entries clipped to the range, in order, at most `limit` of them (the list then
   * ends early). What the NBD export reports as base:allocation and reads as hole chunks.
   */
  extents(offset: number, length: number, limit = Number.POSITIVE_INFINITY): DiskExtent[] {
    checkRange(this, offset, length, `disk of backup ${this.ref.ct}/${this.ref.id}`);
    const out: DiskExtent[] = [];
    const end = offset + length;
    for (let i = length === 0 ? this.offsets.length : this.entryAt(offset); i < this.offsets.length && this.offsets[i]! < end && out.length < limit; i++) {
      const entry = this.manifest.entries[i]!;
      const from = Math.max(offset, entry.offset);
      out.push({ offset: from, length: Math.min(end, entry.offset + entry.length) - from, hole: entry.kind === "hole" });
    }
    return out;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length, `disk of backup ${this.ref.ct}/${this.ref.id}`);
    const out = Buffer.alloc(length);
    if (length === 0) return out;
    const end = offset + length;
    const wanted: number[] = [];
    for (let i = this.entryAt(offset); i < this.offsets.length && this.offsets[i]! < end; i++) {
      if (this.manifest.entries[i]!.kind === "chunk") wanted.push(i);
    }
    await forEachConcurrent(wanted, this.concurrency, async (index) => {
      const plain = await this.chunk(index);
      const entryOffset = this.offsets[index]!;
      const from = Math.max(offset, entryOffset);
      const to = Math.min(end, entryOffset + plain.length);
      plain.copy(out, from - offset, from - entryOffset, to - entryOffset);
    });
    return out;
  }

  /** The decoded chunk of entry `index`, from the cache, a fetch in flight, or the repository. */
  private async chunk(index: number): Promise<Buffer> {
    const entry = this.manifest.entries[index]!;
    if (entry.kind !== "chunk") throw new Error(`internal error: entry ${index} is a hole`);
    const idHex = entry.id.toString("hex");
    const cached = this.cache.get(idHex);
    if (cached !== undefined) {
      this.stats.cacheHits++;
      this.cache.delete(idHex);
      this.cache.set(idHex, cached);
      return cached;
    }
    const pending = this.inFlight.get(idHex);
    if (pending !== undefined) return pending;
    const fetch = this.fetch(idHex, entry.length).finally(() => this.inFlight.delete(idHex));
    this.inFlight.set(idHex, fetch);
    return fetch;
  }

  private async fetch(idHex: string, length: number): Promise<Buffer> {
    const plain = await this.repo.getChunk(idHex, this.ref);
    if (plain.length !== length) {
      throw new PloopvaultError(`chunk ${idHex} has ${plain.length} bytes, manifest of ${this.ref.ct}/${this.ref.id} says ${length}`);
    }
    this.stats.chunksFetched++;
    this.stats.bytesFetched += plain.length;
    this.remember(idHex, plain);
    return plain;
  }

  private remember(idHex: string, plain: Buffer): void {
    this.cache.set(idHex, plain);
    this.cachedBytes += plain.length;
    for (const [old, body] of this.cache) {
      if (this.cachedBytes <= this.cacheLimit || this.cache.size <= 1) break;
      this.cache.delete(old);
      this.cachedBytes -= body.length;
    }
  }
}
