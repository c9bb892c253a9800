/**
 * The logical disk of a ploop chain (docs/ploop.md 1.10): for every virtual cluster, the topmost
 * image of the chain that holds it supplies the data; clusters no image holds are holes
 * and read as zeros without touching any file.
 *
 * The cluster -> image map is computed once at open (1 byte per cluster: 10 MiB for a
 * 10 TiB disk at 1 MiB clusters), so allocatedRuns() and read() never walk the chain.
 */
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { PloopFormatError, PloopvaultError } from "../errors.js";
import { chainFor, normaliseGuid, parseDescriptor, type DiskDescriptor } from "./descriptor.js";
import { SECTOR_BYTES } from "./format.js";
import { openImage, openRawImage, type ImageFile } from "./image.js";

/** Logical bytes, cluster aligned (the last run may end at a raw disk's unaligned end). */
export interface DataRun {
  offset: number;
  length: number;
}

export interface LogicalDiskImage {
  readonly guid: string;
  /** Absolute path. */
  readonly path: string;
  readonly kind: "ploop" | "raw";
  /** ploop format version; 0 for a raw image. */
  readonly version: 0 | 1 | 2;
  /** m_DiskInUse says "in use" (running container, or unclean shutdown). */
  readonly inUse: boolean;
  /** Virtual size this image declares. */
  readonly sizeBytes: number;
}

export interface LogicalDisk {
  readonly descriptorPath: string;
  /** The chosen top's size. */
  readonly sizeBytes: number;
  readonly clusterBytes: number;
  /** Absolute, base first. */
  readonly imagePaths: readonly string[];
  readonly images: readonly LogicalDiskImage[];
  readonly topGuid: string;
  /** Absolute paths of chain images whose header says "in use": callers decide (refuse/warn). */
  readonly inUseImages: readonly string[];
  /** Format version of the topmost ploop1 image (0: the disk is a single raw image). */
  readonly formatVersion: 0 | 1 | 2;
  /** Number of clusters allocated in any image of the chain. */
  readonly allocatedClusters: number;
  /** Maximal runs of consecutive clusters allocated in ANY image of the chain, ascending. Never includes holes. */
  allocatedRuns(): DataRun[];
  /**
   * One byte per virtual cluster, 1 where an image above the image of `guid` (up to the
   * chosen top) holds the cluster: exactly what was written after that snapshot. null if
   * `guid` is not in this chain.
   */
  clustersWrittenAbove(guid: string): Uint8Array | null;
  /** Fill target with logical bytes starting at offset (holes read as zeros). */
  read(offset: number, target: Uint8Array): Promise<void>;
  /** Bytes actually read from image files so far. */
  readonly bytesRead: number;
  close(): Promise<void>;
}

export interface OpenLogicalDiskOptions {
  /** Read the disk as of this snapshot GUID (braces optional) instead of the live top. */
  topGuid?: string;
}

async function readDescriptor(path: string): Promise<DiskDescriptor> {
  let xml: string;
  try {
    xml = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new PloopvaultError(`${path}: cannot read disk descriptor (${code})`, { cause: error });
  }
  return parseDescriptor(xml, path);
}

export async function openLogicalDisk(descriptorPath: string, options: OpenLogicalDiskOptions = {}): Promise<LogicalDisk> {
  const ddPath = resolve(descriptorPath);
  const dd = await readDescriptor(ddPath);
  let topGuid = dd.topGuid;
  if (options.topGuid !== undefined) {
    const g = normaliseGuid(options.topGuid);
    if (g === null) throw new PloopvaultError(`${JSON.stringify(options.topGuid.slice(0, 80))} is not a snapshot GUID`);
    topGuid = g;
  }
  const chain = chainFor(dd, topGuid);
  const clusterBytes = dd.blocksizeSectors * SECTOR_BYTES;
  const baseDir = dirname(ddPath);

  const files: ImageFile[] = [];
  try {
    for (const entry of chain) {
      // Relative File paths are relative to the descriptor's directory (docs/ploop.md 2.2).
      const path = isAbsolute(entry.file) ? entry.file : resolve(baseDir, entry.file);
      if (entry.type === "Plain") {
        const raw = await openRawImage(path, clusterBytes, {
          referencedBy: ddPath,
          ...(dd.diskSizeSectors === undefined ? {} : { sizeBytes: dd.diskSizeSectors * SECTOR_BYTES }),
        });
        files.push(raw);
        continue;
      }
      const image = await openImage(path, { referencedBy: ddPath });
      files.push(image);
      if (image.header.clusterSectors !== dd.blocksizeSectors) {
        throw new PloopFormatError(`${path}: cluster size ${image.header.clusterSectors} sectors differs from <Blocksize> ${dd.blocksizeSectors} in ${ddPath}`);
      }
    }
  } catch (error) {
    await Promise.all(files.map((f) => f.close().catch(() => undefined)));
    throw error;
  }

  const top = files[files.length - 1]!;
  const sizeBytes = top.sizeBytes;
  const clusterCount = Math.ceil(sizeBytes / clusterBytes);
  // owner[i] = 1 + index into `files` of the image supplying cluster i; 0 = hole.
  // Filling base first lets upper images overwrite: the topmost holder wins.
  const owner = new Uint8Array(clusterCount);
  files.forEach((file, k) => {
    const limit = Math.min(file.clusterCount, clusterCount);
    if (file.kind === "raw") {
      owner.fill(k + 1, 0, limit);
      return;
    }
    const bat = file.bat;
    for (let i = 0; i < limit; i++) if (bat[i] !== 0) owner[i] = k + 1;
  });
  let allocatedClusters = 0;
  for (let i = 0; i < clusterCount; i++) if (owner[i] !== 0) allocatedClusters++;

  const images: LogicalDiskImage[] = files.map((f, k) => ({
    guid: chain[k]!.guid,
    path: f.path,
    kind: f.kind,
    version: f.kind === "ploop" ? f.version : 0,
    inUse: f.inUse,
    sizeBytes: f.sizeBytes,
  }));
  const topPloop = [...files].reverse().find((f) => f.kind === "ploop");
  let bytesRead = 0;
  let closed = false;

  const read = async (offset: number, target: Uint8Array): Promise<void> => {
    if (closed) throw new PloopvaultError(`${ddPath}: disk is closed`);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + target.length > sizeBytes) {
      throw new RangeError(`read of ${target.length} bytes at ${offset} is outside the disk (${sizeBytes} bytes)`);
    }
    const len = target.length;
    let pos = 0;
    while (pos < len) {
      const at = offset + pos;
      const cluster = Math.floor(at / clusterBytes);
      const inCluster = at - cluster * clusterBytes;
      const first = Math.min(clusterBytes - inCluster, len - pos);
      const who = owner[cluster]!;
      if (who === 0) {
        target.fill(0, pos, pos + first);
        pos += first;
        continue;
      }
      const file = files[who - 1]!;
      const fileOffset = file.clusterOffset(cluster) + inCluster;
      // Extend over following clusters held by the same image at the next file position:
      // one read instead of one per cluster.
      let end = pos + first;
      let next = cluster + 1;
      while (end < len && owner[next] === who && file.clusterOffset(next) === fileOffset + (end - pos)) {
        end += Math.min(clusterBytes, len - end);
        next++;
      }
      // not `bytesRead += await ...`: that reads the counter before the await and loses
      // the updates of concurrent reads
      const n = await file.readAt(fileOffset, target.subarray(pos, end));
      bytesRead += n;
      pos = end;
    }
  };

  return {
    descriptorPath: ddPath,
    sizeBytes,
    clusterBytes,
    imagePaths: files.map((f) => f.path),
    images,
    topGuid,
    inUseImages: files.filter((f) => f.inUse).map((f) => f.path),
    formatVersion: topPloop === undefined ? 0 : topPloop.version,
    allocatedClusters,
    allocatedRuns(): DataRun[] {
      const runs: DataRun[] = [];
      let i = 0;
      while (i < clusterCount) {
        if (owner[i] === 0) {
          i++;
          continue;
        }
        const start = i;
        while (i < clusterCount && owner[i] !== 0) i++;
        const offset = start * clusterBytes;
        runs.push({ offset, length: Math.min(i * clusterBytes, sizeBytes) - offset });
      }
      return runs;
    },
    clustersWrittenAbove(guid: string): Uint8Array | null {
      const g = normaliseGuid(guid);
      const k = images.findIndex((image) => image.guid === g);
      if (k < 0) return null;
      const written = new Uint8Array(clusterCount);
      for (let i = 0; i < clusterCount; i++) if (owner[i]! > k + 1) written[i] = 1;
      return written;
    },
    read,
    get bytesRead(): number {
      return bytesRead;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await Promise.all(files.map((f) => f.close()));
    },
  };
}
