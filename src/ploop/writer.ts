/**
 * Writing ploop images and descriptors (docs/ploop.md 1.12):
 *  - createPloopImageWriter: the restore target. v2, data clusters in virtual order right
 *    after the BAT, every byte written (ploop 1.15 `check -f` rejects sparse images),
 *    header written last so an interrupted restore never looks like a valid image.
 *  - writeImageFromRaw: build an image from a raw disk (fixtures, corpus, bench, demo),
 *    zero clusters unallocated, physical order optionally shuffled like a real, aged image.
 *  - writeDescriptorFile: DiskDescriptor.xml via temp file + fsync + rename, as ploop does.
 */
import { randomBytes } from "node:crypto";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { readFully, writeFully } from "../util/positional-io.js";
import { join } from "node:path";
import { renderDescriptor, type RenderImage } from "./descriptor.js";
import {
  SECTOR_BYTES,
  encodeBat,
  encodeHeader,
  fileClusterToBatEntry,
  isValidClusterSectors,
  newHeader,
  type PloopHeader,
  type PloopVersion,
} from "./format.js";
import { errorLine } from "../errors.js";
import { isAllZero, zeroView } from "../util/zeros.js";

export const DESCRIPTOR_FILE_NAME = "DiskDescriptor.xml";

async function writeZeros(fh: FileHandle, position: number, length: number): Promise<void> {
  const step = 1 << 20;
  for (let done = 0; done < length; done += step) await writeFully(fh, zeroView(Math.min(step, length - done)), position + done);
}

function checkClusterBytes(clusterBytes: number): number {
  const sectors = clusterBytes / SECTOR_BYTES;
  if (!isValidClusterSectors(sectors)) throw new RangeError(`invalid cluster size ${clusterBytes} bytes (power of two, 32 KiB..64 MiB)`);
  return sectors;
}

/** Header + BAT + zero padding up to the first data cluster. */
function headerArea(header: PloopHeader, bat: Uint32Array): Buffer {
  const area = Buffer.alloc(header.firstBlockOffsetSectors * SECTOR_BYTES);
  encodeHeader(header).copy(area, 0);
  encodeBat(bat).copy(area, 64);
  return area;
}

// ---------------------------------------------------------------------------------------
// Restore writer

export interface PloopImageWriterOptions {
  /** Logical disk size; rounded up to a whole cluster like `ploop init` does. */
  sizeBytes: number;
  clusterBytes: number;
  /** Sorted virtual cluster indices that will hold data; all others stay unallocated. */
  allocatedClusters: readonly number[];
}

export interface PloopImageWriter {
  readonly path: string;
  /** Final image file size. */
  readonly fileBytes: number;
  /**
   * Positional write of logical bytes; may be called concurrently and may span clusters,
   * but only inside allocated clusters. Overlapping writes are allowed (last wins).
   */
  write(logicalOffset: number, data: Uint8Array): Promise<void>;
  /** Zero-fill what was never written, write header (CIF_Empty iff no data) + BAT, fsync, close. */
  finish(): Promise<void>;
  /** Stop and delete the file. */
  abort(): Promise<void>;
}

/** Add [start, end) to a sorted list of disjoint intervals; returns the covered total. */
function addInterval(list: [number, number][], start: number, end: number): number {
  list.push([start, end]);
  list.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const iv of list) {
    const last = merged[merged.length - 1];
    if (last !== undefined && iv[0] <= last[1]) last[1] = Math.max(last[1], iv[1]);
    else merged.push([iv[0], iv[1]]);
  }
  list.splice(0, list.length, ...merged);
  return merged.reduce((s, [a, b]) => s + (b - a), 0);
}

/**
 * Create a v2 image at `path` (must not exist). Data cluster k (k-th allocated cluster in
 * virtual order) sits at file cluster firstDataCluster + k.
 */
export async function createPloopImageWriter(path: string, options: PloopImageWriterOptions): Promise<PloopImageWriter> {
  const { clusterBytes, allocatedClusters } = options;
  const clusterSectors = checkClusterBytes(clusterBytes);
  if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes <= 0) throw new RangeError(`invalid disk size ${options.sizeBytes}`);
  const n = allocatedClusters.length;
  const header = newHeader({ version: 2, sizeSectors: Math.ceil(options.sizeBytes / SECTOR_BYTES), clusterSectors, empty: n === 0 });
  const sizeBytes = header.sizeSectors * SECTOR_BYTES;
  const firstDataCluster = header.firstBlockOffsetSectors / clusterSectors;
  const bat = new Uint32Array(header.batEntries);
  for (let k = 0; k < n; k++) {
    const v = allocatedClusters[k]!;
    if (!Number.isInteger(v) || v < 0 || v >= header.batEntries)
      throw new RangeError(`allocated cluster ${v} is outside the disk (${header.batEntries} clusters)`);
    if (k > 0 && v <= allocatedClusters[k - 1]!) throw new RangeError("allocatedClusters must be sorted ascending without duplicates");
    bat[v] = fileClusterToBatEntry(header, firstDataCluster + k);
  }
  const fileBytes = (firstDataCluster + n) * clusterBytes;

  // Coverage per data cluster: 2 = fully written, 1 = partly (ranges in `partial`), 0 = not yet.
  const state = new Uint8Array(n);
  const partial = new Map<number, [number, number][]>();
  const inflight = new Set<Promise<void>>();
  let failed: unknown = null;
  let phase: "open" | "finishing" | "done" = "open";

  const fh = await open(path, "wx", 0o600); // ploop creates images 0600

  const markWritten = (offset: number, length: number): void => {
    let at = offset;
    const end = offset + length;
    while (at < end) {
      const v = Math.floor(at / clusterBytes);
      const k = bat[v]! - firstDataCluster;
      const start = at - v * clusterBytes;
      const stop = Math.min(clusterBytes, end - v * clusterBytes);
      if (state[k] !== 2) {
        if (start === 0 && stop === clusterBytes) {
          state[k] = 2;
          partial.delete(k);
        } else {
          const list = partial.get(k) ?? [];
          partial.set(k, list);
          state[k] = 1;
          if (addInterval(list, start, stop) === clusterBytes) {
            state[k] = 2;
            partial.delete(k);
          }
        }
      }
      at = v * clusterBytes + stop;
    }
  };

  /** Caller mistakes are refused before any I/O, so they leave the image consistent. */
  const refusal = (logicalOffset: number, data: Uint8Array): Error | null => {
    if (phase !== "open") return new Error(`${path}: write after finish/abort`);
    if (!Number.isSafeInteger(logicalOffset) || logicalOffset < 0 || logicalOffset + data.length > sizeBytes) {
      return new RangeError(`${path}: write of ${data.length} bytes at ${logicalOffset} is outside the disk (${sizeBytes} bytes)`);
    }
    const first = Math.floor(logicalOffset / clusterBytes);
    const last = Math.floor((logicalOffset + data.length - 1) / clusterBytes);
    for (let v = first; v <= last; v++) {
      if (bat[v] === 0) return new RangeError(`${path}: write at logical offset ${logicalOffset} touches cluster ${v}, which is not allocated`);
    }
    return null;
  };

  const doWrite = async (logicalOffset: number, data: Uint8Array): Promise<void> => {
    const first = Math.floor(logicalOffset / clusterBytes);
    // Consecutive allocated virtual clusters are consecutive in the file: one write.
    const position = bat[first]! * clusterBytes + (logicalOffset - first * clusterBytes);
    await writeFully(fh, data, position);
    markWritten(logicalOffset, data.length);
  };

  return {
    path,
    fileBytes,
    write(logicalOffset: number, data: Uint8Array): Promise<void> {
      const refused = refusal(logicalOffset, data);
      if (refused !== null) return Promise.reject(refused);
      if (data.length === 0) return Promise.resolve();
      // An I/O failure, unlike a refusal, leaves the file in an unknown state: finish() must fail.
      const p = doWrite(logicalOffset, data);
      const tracked = p.then(
        () => undefined,
        (error: unknown) => {
          failed ??= error;
        },
      );
      inflight.add(tracked);
      void tracked.finally(() => inflight.delete(tracked));
      return p;
    },
    async finish(): Promise<void> {
      if (phase !== "open") throw new Error(`${path}: finish after finish/abort`);
      phase = "finishing";
      await Promise.all([...inflight]);
      if (failed !== null) throw new Error(`${path}: cannot finish, a write failed: ${errorLine(failed)}`);
      // No holes: allocated clusters (or parts) never written become explicit zeros.
      let k = 0;
      while (k < n) {
        if (state[k] === 0) {
          let end = k;
          while (end < n && state[end] === 0) end++;
          await writeZeros(fh, (firstDataCluster + k) * clusterBytes, (end - k) * clusterBytes);
          k = end;
          continue;
        }
        if (state[k] === 1) {
          let at = 0;
          for (const [s, e] of partial.get(k) ?? []) {
            if (s > at) await writeZeros(fh, (firstDataCluster + k) * clusterBytes + at, s - at);
            at = e;
          }
          if (at < clusterBytes) await writeZeros(fh, (firstDataCluster + k) * clusterBytes + at, clusterBytes - at);
        }
        k++;
      }
      await writeFully(fh, headerArea(header, bat), 0);
      const size = (await fh.stat()).size;
      if (size !== fileBytes) throw new Error(`${path}: image is ${size} bytes after writing, expected ${fileBytes}`);
      await fh.sync();
      await fh.close();
      phase = "done";
    },
    async abort(): Promise<void> {
      if (phase === "done") return;
      phase = "done";
      await Promise.all([...inflight]);
      await fh.close().catch(() => undefined);
      await rm(path, { force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------
// Raw disk -> ploop image (fixtures, corpus, bench, demo)

export interface RawToImageOptions {
  version: PloopVersion;
  clusterBytes: number;
  /** Lay data clusters out in a seeded random order (like an image that has lived a while). */
  shuffle?: boolean;
  seed?: number;
  /** Leave all-zero clusters unallocated (default true). */
  skipZeroClusters?: boolean;
  /** Replace an existing image file (default: refuse). */
  overwrite?: boolean;
}

export interface RawToImageResult {
  /** Virtual size (raw size rounded up to a cluster). */
  sizeBytes: number;
  clusterBytes: number;
  version: PloopVersion;
  /** Virtual cluster indices that were allocated, ascending. */
  allocated: number[];
  fileBytes: number;
}

/** Deterministic PRNG (mulberry32): a seed gives the same layout on every machine. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function writeImageFromRaw(rawPath: string, imagePath: string, options: RawToImageOptions): Promise<RawToImageResult> {
  const { version, clusterBytes } = options;
  const clusterSectors = checkClusterBytes(clusterBytes);
  const raw = await open(rawPath, "r");
  try {
    const rawSize = (await raw.stat()).size;
    if (rawSize === 0) throw new RangeError(`${rawPath}: raw disk is empty`);
    const clusters = Math.ceil(rawSize / clusterBytes);
    const buf = Buffer.alloc(clusterBytes);
    const readCluster = async (v: number): Promise<Buffer> => {
      const got = await readFully(raw, v * clusterBytes, buf);
      if (got < clusterBytes) buf.fill(0, got); // last, partial cluster of the raw file
      return buf;
    };
    // Pass 1: which clusters hold data.
    const allocated: number[] = [];
    for (let v = 0; v < clusters; v++) {
      if (options.skipZeroClusters === false || !isAllZero(await readCluster(v))) allocated.push(v);
    }
    const header = newHeader({ version, sizeSectors: clusters * clusterSectors, clusterSectors, empty: allocated.length === 0 });
    const firstDataCluster = header.firstBlockOffsetSectors / clusterSectors;
    const slots = allocated.map((_, k) => k);
    if (options.shuffle) {
      const random = prng(options.seed ?? 1);
      for (let k = slots.length - 1; k > 0; k--) {
        const j = Math.floor(random() * (k + 1));
        [slots[k], slots[j]] = [slots[j]!, slots[k]!];
      }
    }
    const bat = new Uint32Array(header.batEntries);
    const out = await open(imagePath, options.overwrite ? "w" : "wx", 0o600);
    try {
      // Pass 2: copy each data cluster to its slot; every byte of the file gets written.
      for (let k = 0; k < allocated.length; k++) {
        const v = allocated[k]!;
        const fileCluster = firstDataCluster + slots[k]!;
        bat[v] = fileClusterToBatEntry(header, fileCluster);
        await writeFully(out, await readCluster(v), fileCluster * clusterBytes);
      }
      await writeFully(out, headerArea(header, bat), 0);
      await out.sync();
    } finally {
      await out.close();
    }
    return {
      sizeBytes: header.sizeSectors * SECTOR_BYTES,
      clusterBytes,
      version,
      allocated,
      fileBytes: (firstDataCluster + allocated.length) * clusterBytes,
    };
  } finally {
    await raw.close();
  }
}

// ---------------------------------------------------------------------------------------
// DiskDescriptor.xml

export interface DescriptorFileOptions {
  sizeBytes: number;
  clusterBytes: number;
  /** Single-image disk: the image file name (gets TOP_GUID, parent NONE_GUID). */
  imageFile?: string;
  /** A chain instead, base first (each image's parent is the previous one). */
  images?: readonly RenderImage[];
}

/** Fsync a directory so a rename inside it is durable. */
async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/**
 * Write DIR/DiskDescriptor.xml atomically (temp file, fsync, rename, fsync dir): a reader
 * sees the old or the new descriptor, never half of one. Returns its path.
 */
export async function writeDescriptorFile(dir: string, options: DescriptorFileOptions): Promise<string> {
  const images = options.images ?? (options.imageFile === undefined ? undefined : [{ file: options.imageFile }]);
  if (images === undefined) throw new RangeError("writeDescriptorFile needs imageFile or images");
  const clusterSectors = checkClusterBytes(options.clusterBytes);
  const sizeSectors = Math.ceil(Math.ceil(options.sizeBytes / SECTOR_BYTES) / clusterSectors) * clusterSectors;
  const xml = renderDescriptor({ sizeSectors, clusterSectors, images });
  const target = join(dir, DESCRIPTOR_FILE_NAME);
  const temp = join(dir, `.${DESCRIPTOR_FILE_NAME}.${randomBytes(4).toString("hex")}.tmp`);
  // owner-only like the image (ploop and vzctl run as root; ploop itself would use 0666 & ~umask)
  const fh = await open(temp, "wx", 0o600);
  try {
    await writeFully(fh, Buffer.from(xml, "utf8"), 0);
    await fh.sync();
  } catch (error) {
    await fh.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw error;
  }
  await fh.close();
  try {
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await syncDir(dir);
  return target;
}
