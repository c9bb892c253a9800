/**
 * One image file of a chain, opened read-only: a ploop1 image (header + BAT, validated
 * against the file size) or a raw (Plain) base. Never writes, never locks (docs/ploop.md 3.6:
 * frozen images are read with plain reads while the container runs).
 */
import { open, type FileHandle } from "node:fs/promises";
import { readFully } from "../util/positional-io.js";
import { PloopFormatError } from "../errors.js";
import {
  BAT_OFFSET_BYTES,
  HEADER_BYTES,
  SECTOR_BYTES,
  batBytesOf,
  batEntryToFileOffset,
  decodeBat,
  decodeHeader,
  isInUse,
  validateBat,
  type PloopHeader,
} from "./format.js";

interface ImageBase {
  readonly path: string;
  readonly clusterBytes: number;
  /** Virtual clusters this image can supply (ploop: BAT entries; raw: clusters overlapping the file). */
  readonly clusterCount: number;
  /** fstat size when opened. */
  readonly fileSize: number;
  readonly inUse: boolean;
  /** File byte offset of virtual cluster `cluster`, or -1 if this image does not hold it. */
  clusterOffset(cluster: number): number;
  /**
   * Fill `target` from file offset `position`, looping on short reads. Bytes past end of
   * file read as zeros (only possible for a raw image's last cluster). Returns the number
   * of bytes that came from the file.
   */
  readAt(position: number, target: Uint8Array): Promise<number>;
  close(): Promise<void>;
}

export interface PloopImage extends ImageBase {
  readonly kind: "ploop";
  readonly header: PloopHeader;
  readonly version: 1 | 2;
  /** Virtual disk size of this image in bytes. */
  readonly sizeBytes: number;
  readonly bat: Uint32Array;
  /** Number of non-zero BAT entries. */
  readonly allocatedClusters: number;
}

export interface RawImage extends ImageBase {
  readonly kind: "raw";
  readonly sizeBytes: number;
}

export type ImageFile = PloopImage | RawImage;

function errnoCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? String(error);
}

async function openReadOnly(path: string, referencedBy: string | undefined): Promise<FileHandle> {
  try {
    return await open(path, "r");
  } catch (error) {
    const code = errnoCode(error);
    if (code === "ENOENT") {
      throw new PloopFormatError(`${path}: image file missing${referencedBy === undefined ? "" : ` (referenced by ${referencedBy})`}`, { cause: error });
    }
    throw new PloopFormatError(`${path}: cannot open image (${code})`, { cause: error });
  }
}

function makeReader(fh: FileHandle, path: string): (position: number, target: Uint8Array) => Promise<number> {
  return async (position, target) => {
    let got: number;
    try {
      got = await readFully(fh, position, target);
    } catch (error) {
      throw new PloopFormatError(`${path}: read of ${target.length} bytes at ${position} failed (${errnoCode(error)})`, { cause: error });
    }
    if (got < target.length) target.fill(0, got);
    return got;
  };
}

export interface OpenImageOptions {
  /** Descriptor that names this image, for the "missing" message. */
  referencedBy?: string;
}

/** Open a ploop1 image: header and BAT are read and validated against the file size. */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<PloopImage> {
  const fh = await openReadOnly(path, options.referencedBy);
  try {
    const fileSize = (await fh.stat()).size;
    const readAt = makeReader(fh, path);
    const head = Buffer.alloc(HEADER_BYTES);
    const got = await readAt(0, head);
    const header = decodeHeader(got < HEADER_BYTES ? head.subarray(0, got) : head, path);
    const batBytes = batBytesOf(header);
    if (fileSize < BAT_OFFSET_BYTES + batBytes) {
      throw new PloopFormatError(`${path}: truncated image (${fileSize} bytes; header and BAT need ${BAT_OFFSET_BYTES + batBytes})`);
    }
    const raw = Buffer.alloc(batBytes);
    await readAt(BAT_OFFSET_BYTES, raw);
    const bat = decodeBat(raw, header, path);
    const allocatedClusters = validateBat(header, bat, fileSize, path);
    const clusterBytes = header.clusterSectors * SECTOR_BYTES;
    return {
      kind: "ploop",
      path,
      header,
      version: header.version,
      clusterBytes,
      clusterCount: header.batEntries,
      sizeBytes: header.sizeSectors * SECTOR_BYTES,
      fileSize,
      inUse: isInUse(header),
      bat,
      allocatedClusters,
      clusterOffset(cluster: number): number {
        if (cluster < 0 || cluster >= bat.length) return -1;
        const entry = bat[cluster]!;
        return entry === 0 ? -1 : batEntryToFileOffset(header, entry);
      },
      readAt,
      close: () => fh.close(),
    };
  } catch (error) {
    await fh.close().catch(() => undefined);
    throw error;
  }
}

/**
 * Open a raw (Plain) base image: virtual offset = file offset, zeros past end of file
 * (docs/ploop.md 1.10). `sizeBytes` is the disk size the descriptor claims (Disk_size), if any.
 */
export async function openRawImage(path: string, clusterBytes: number, options: OpenImageOptions & { sizeBytes?: number } = {}): Promise<RawImage> {
  const fh = await openReadOnly(path, options.referencedBy);
  try {
    const fileSize = (await fh.stat()).size;
    const sizeBytes = options.sizeBytes ?? fileSize;
    const clusterCount = Math.ceil(Math.min(fileSize, sizeBytes) / clusterBytes);
    return {
      kind: "raw",
      path,
      clusterBytes,
      clusterCount,
      sizeBytes,
      fileSize,
      inUse: false,
      clusterOffset: (cluster: number): number => (cluster >= 0 && cluster < clusterCount ? cluster * clusterBytes : -1),
      readAt: makeReader(fh, path),
      close: () => fh.close(),
    };
  } catch (error) {
    await fh.close().catch(() => undefined);
    throw error;
  }
}
