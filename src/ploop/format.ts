/**
 * The ploop1 image format (v1 and v2), pure functions over Buffers. No I/O here: the
 * readers in image.ts / disk.ts and the writers in writer.ts do the file work.
 *
 * Reference: docs/ploop.md section 1. All on-disk integers are little-endian.
 *   0x00 16 signature      0x10 u32 type (2)      0x14 u32 heads     0x18 u32 cylinders
 *   0x1C u32 cluster size in sectors ("m_Sectors")   0x20 u32 BAT entries ("m_Size")
 *   0x24 size in sectors: v2 u64, v1 u32 (0x28 unused)   0x2C u32 in-use marker
 *   0x30 u32 first data block, sectors   0x34 u32 flags   0x38 u64 format extension, sectors
 *   0x40 BAT: u32 per virtual cluster; 0 = not in this image; v2 = file cluster, v1 = file sector
 */
import { PloopFormatError } from "../errors.js";

export const SECTOR_BYTES = 512;
export const HEADER_BYTES = 64;
/** BAT entry i lives at byte 64 + 4*i (the kernel calls this "16 u32 slots of map offset"). */
export const BAT_OFFSET_BYTES = HEADER_BYTES;
export const BAT_ENTRY_BYTES = 4;

export const SIG_V1 = "WithoutFreeSpace";
export const SIG_V2 = "WithouFreSpacExt";
/** m_Type: ploop only knows PRL_IMAGE_COMPRESSED. */
export const IMAGE_TYPE_COMPRESSED = 2;

/** GUID of the top image of every descriptor written by ploop. */
export const TOP_GUID = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";
/** ParentGUID of a base image. */
export const NONE_GUID = "{00000000-0000-0000-0000-000000000000}";

/** m_DiskInUse: "Ynot", image opened read-write (running, or not closed cleanly). */
export const DISK_IN_USE = 0x746f6e59;
/** m_DiskInUse: "v2.1", closed cleanly with a format extension (CBT) present. */
export const DISK_CLOSED_EXT = 0x312e3276;

/** m_Flags bit: the image holds no data cluster (ploop check validates it both ways). */
export const CIF_EMPTY = 0x1;
/** m_Flags bit: v1<->v2 conversion in progress; the BAT may be half converted. */
export const CIF_FMT_CONVERT = 0x2;

export const MIN_CLUSTER_SECTORS = 64;
export const MAX_CLUSTER_SECTORS = 131072;
export const DEFAULT_CLUSTER_SECTORS = 2048;
/** v1 stores sizes and BAT entries as 32-bit sector counts. */
export const V1_MAX_SECTORS = 0xffffffff;
const U32_MAX = 0xffffffff;

export type PloopVersion = 1 | 2;

export interface PloopHeader {
  version: PloopVersion;
  /** m_Type, always 2. */
  type: number;
  heads: number;
  cylinders: number;
  /** m_Sectors: the cluster size in 512-byte sectors. */
  clusterSectors: number;
  /**
   * Number of meaningful BAT entries. decodeHeader stores min(m_Size, sizeSectors/clusterSectors)
   * (docs/ploop.md 1.3: if they ever differ, the kernel ignores clusters beyond the size).
   */
  batEntries: number;
  /** Virtual disk size in sectors, a multiple of clusterSectors. */
  sizeSectors: number;
  /** m_DiskInUse: 0, DISK_IN_USE or DISK_CLOSED_EXT. */
  diskInUse: number;
  /** Start of the data area in sectors; header + BAT occupy whole clusters before it. */
  firstBlockOffsetSectors: number;
  flags: number;
  /** Sectors (not bytes: the code multiplies by 512). 0 = no extension. */
  formatExtensionOffsetSectors: number;
}

export function isValidClusterSectors(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_CLUSTER_SECTORS && n <= MAX_CLUSTER_SECTORS && (n & (n - 1)) === 0;
}

/** Only "Ynot" means in use here; "v2.1" is a clean close with CBT (1.15 disagrees, see docs/ploop.md 1.7). */
export function isInUse(header: PloopHeader): boolean {
  return header.diskInUse === DISK_IN_USE;
}

export function clusterBytesOf(header: PloopHeader): number {
  return header.clusterSectors * SECTOR_BYTES;
}

/** docs/ploop.md 1.5: header + BAT rounded up to a sector, then to a whole cluster. */
export function computeFirstBlockOffsetSectors(batEntries: number, clusterSectors: number): number {
  const bytes = HEADER_BYTES + BAT_ENTRY_BYTES * batEntries;
  const sectors = Math.ceil(bytes / SECTOR_BYTES);
  return Math.ceil(sectors / clusterSectors) * clusterSectors;
}

export interface ChsGeometry {
  cylinders: number;
  heads: number;
  /** Sectors per track (the descriptor's <Sectors> is recomputed from Disk_size, see renderDescriptor). */
  sectors: number;
}

/**
 * Legacy CHS geometry as ploop derives it (docs/ploop.md 1.6; confirmed against ploop 1.15 `init`
 * for 100M..2T). Informational only, but reproducing it makes our images byte-identical.
 */
export function computeGeometry(sizeSectors: number): ChsGeometry {
  if (sizeSectors > 1032192 && sizeSectors < 16777216) {
    return { sectors: 63, heads: 16, cylinders: Math.floor(sizeSectors / (63 * 16)) };
  }
  const sectors = [63, 32, 16, 8].find((s) => sizeSectors % s === 0);
  if (sectors !== undefined) {
    const perTrack = sizeSectors / sectors;
    const heads = [16, 8, 4, 2].find((h) => perTrack % h === 0);
    if (heads !== undefined) return { sectors, heads, cylinders: (perTrack / heads) >>> 0 };
  }
  return { sectors: 1, heads: 1, cylinders: sizeSectors >>> 0 };
}

/** Printable rendering of a foreign signature for an error message. */
function showSignature(raw: Buffer): string {
  return raw.toString("latin1").replace(/[^\x20-\x7e]/g, ".");
}

function u64(buf: Buffer, at: number, fileName: string, what: string): number {
  const value = buf.readBigUInt64LE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new PloopFormatError(`${fileName}: ${what} ${value} is out of range`);
  return Number(value);
}

/**
 * Decode and validate the 64-byte header. Every field a reader relies on is checked, so
 * later arithmetic (BAT size, offsets) cannot go wrong on a hostile or damaged file.
 */
export function decodeHeader(buf: Buffer, fileName: string): PloopHeader {
  const fail = (what: string): never => {
    throw new PloopFormatError(`${fileName}: ${what}`);
  };
  if (buf.length < HEADER_BYTES) fail(`truncated image (${buf.length} bytes, a ploop header needs ${HEADER_BYTES})`);
  const sig = buf.toString("latin1", 0, 16);
  const version: PloopVersion | 0 = sig === SIG_V2 ? 2 : sig === SIG_V1 ? 1 : 0;
  if (version === 0) return fail(`not a ploop image (signature "${showSignature(buf.subarray(0, 16))}")`);

  const type = buf.readUInt32LE(0x10);
  if (type !== IMAGE_TYPE_COMPRESSED) fail(`unsupported ploop image type ${type} (expected ${IMAGE_TYPE_COMPRESSED})`);
  const heads = buf.readUInt32LE(0x14);
  const cylinders = buf.readUInt32LE(0x18);
  const clusterSectors = buf.readUInt32LE(0x1c);
  if (!isValidClusterSectors(clusterSectors)) {
    fail(`invalid cluster size ${clusterSectors} sectors (must be a power of two, ${MIN_CLUSTER_SECTORS}..${MAX_CLUSTER_SECTORS})`);
  }
  const rawBatEntries = buf.readUInt32LE(0x20);
  // v1 has a 32-bit size at 0x24; the u32 at 0x28 is unused and ignored (docs/ploop.md 1.2).
  const sizeSectors = version === 2 ? u64(buf, 0x24, fileName, "disk size") : buf.readUInt32LE(0x24);
  if (sizeSectors === 0) fail("virtual disk size is 0");
  if (sizeSectors % clusterSectors !== 0) fail(`disk size ${sizeSectors} sectors is not a multiple of the cluster size ${clusterSectors} sectors`);
  const sizeClusters = sizeSectors / clusterSectors;
  if (sizeClusters > U32_MAX) fail(`disk size ${sizeSectors} sectors exceeds 2^32 clusters`);
  if (rawBatEntries === 0) fail("BAT has 0 entries");
  // docs/ploop.md 1.3: if m_Size and the size disagree, use the smaller (the kernel refuses the rest).
  const batEntries = Math.min(rawBatEntries, sizeClusters);

  const diskInUse = buf.readUInt32LE(0x2c);
  const firstBlockOffsetSectors = buf.readUInt32LE(0x30);
  if (firstBlockOffsetSectors === 0 || firstBlockOffsetSectors % clusterSectors !== 0) {
    fail(`first data block offset ${firstBlockOffsetSectors} sectors is not a positive multiple of the cluster size ${clusterSectors}`);
  }
  const batBytes = HEADER_BYTES + BAT_ENTRY_BYTES * batEntries;
  if (firstBlockOffsetSectors * SECTOR_BYTES < batBytes) {
    fail(`first data block offset ${firstBlockOffsetSectors} sectors is too small for a BAT of ${batEntries} entries`);
  }
  const flags = buf.readUInt32LE(0x34);
  if (flags & CIF_FMT_CONVERT) fail("v1/v2 format conversion in progress (CIF_FmtVersionConvert set); let ploop finish it first");
  const formatExtensionOffsetSectors = u64(buf, 0x38, fileName, "format extension offset");
  return {
    version,
    type,
    heads,
    cylinders,
    clusterSectors,
    batEntries,
    sizeSectors,
    diskInUse,
    firstBlockOffsetSectors,
    flags,
    formatExtensionOffsetSectors,
  };
}

/** The 64-byte header. Throws RangeError on values the format cannot store (caller bug). */
export function encodeHeader(h: PloopHeader): Buffer {
  const buf = Buffer.alloc(HEADER_BYTES);
  buf.write(h.version === 2 ? SIG_V2 : SIG_V1, 0, "latin1");
  buf.writeUInt32LE(h.type, 0x10);
  buf.writeUInt32LE(h.heads, 0x14);
  buf.writeUInt32LE(h.cylinders, 0x18);
  buf.writeUInt32LE(h.clusterSectors, 0x1c);
  buf.writeUInt32LE(h.batEntries, 0x20);
  if (h.version === 2) {
    buf.writeBigUInt64LE(BigInt(h.sizeSectors), 0x24);
  } else {
    if (h.sizeSectors > V1_MAX_SECTORS) throw new RangeError(`v1 image cannot hold ${h.sizeSectors} sectors`);
    buf.writeUInt32LE(h.sizeSectors, 0x24);
  }
  buf.writeUInt32LE(h.diskInUse, 0x2c);
  buf.writeUInt32LE(h.firstBlockOffsetSectors, 0x30);
  buf.writeUInt32LE(h.flags, 0x34);
  buf.writeBigUInt64LE(BigInt(h.formatExtensionOffsetSectors), 0x38);
  return buf;
}

/**
 * Header of a new, cleanly closed image as `ploop init` writes it (size rounded up to a
 * whole cluster; CIF_Empty iff no data cluster).
 */
export function newHeader(options: { version: PloopVersion; sizeSectors: number; clusterSectors: number; empty: boolean }): PloopHeader {
  const { version, clusterSectors } = options;
  if (!isValidClusterSectors(clusterSectors)) throw new RangeError(`invalid cluster size ${clusterSectors} sectors`);
  if (!Number.isSafeInteger(options.sizeSectors) || options.sizeSectors <= 0) throw new RangeError(`invalid disk size ${options.sizeSectors} sectors`);
  const batEntries = Math.ceil(options.sizeSectors / clusterSectors);
  const sizeSectors = batEntries * clusterSectors;
  if (batEntries > U32_MAX) throw new RangeError(`disk of ${sizeSectors} sectors exceeds 2^32 clusters`);
  if (version === 1 && sizeSectors > V1_MAX_SECTORS) throw new RangeError(`v1 image cannot hold ${sizeSectors} sectors (2 TiB limit)`);
  const geometry = computeGeometry(sizeSectors);
  return {
    version,
    type: IMAGE_TYPE_COMPRESSED,
    heads: geometry.heads,
    cylinders: geometry.cylinders,
    clusterSectors,
    batEntries,
    sizeSectors,
    diskInUse: 0,
    firstBlockOffsetSectors: computeFirstBlockOffsetSectors(batEntries, clusterSectors),
    flags: options.empty ? CIF_EMPTY : 0,
    formatExtensionOffsetSectors: 0,
  };
}

/** Bytes of BAT that follow the header: 4 per meaningful entry. */
export function batBytesOf(header: PloopHeader): number {
  return BAT_ENTRY_BYTES * header.batEntries;
}

/**
 * The BAT as raw entries. `batBytes` holds the bytes that follow the 64-byte header
 * (file offset 64 onwards), at least 4 * batEntries of them (fewer: a truncated BAT,
 * PloopFormatError naming `fileName`).
 */
export function decodeBat(batBytes: Buffer, header: PloopHeader, fileName = "ploop image"): Uint32Array {
  const n = header.batEntries;
  if (batBytes.length < n * BAT_ENTRY_BYTES) {
    throw new PloopFormatError(`${fileName}: truncated BAT (${batBytes.length} bytes, ${n} entries need ${n * BAT_ENTRY_BYTES})`);
  }
  const bat = new Uint32Array(n);
  for (let i = 0; i < n; i++) bat[i] = batBytes.readUInt32LE(i * BAT_ENTRY_BYTES);
  return bat;
}

/** BAT entries as bytes (little-endian), without the header and padding. */
export function encodeBat(bat: Uint32Array): Buffer {
  const buf = Buffer.alloc(bat.length * BAT_ENTRY_BYTES);
  for (let i = 0; i < bat.length; i++) buf.writeUInt32LE(bat[i]!, i * BAT_ENTRY_BYTES);
  return buf;
}

/** File cluster index a non-zero BAT entry points at (v1 entries are sectors). */
function entryToFileCluster(header: PloopHeader, entry: number): number {
  return header.version === 2 ? entry : entry / header.clusterSectors;
}

/** BAT entry value for the data cluster at file cluster index `fileCluster`. */
export function fileClusterToBatEntry(header: Pick<PloopHeader, "version" | "clusterSectors">, fileCluster: number): number {
  const entry = header.version === 2 ? fileCluster : fileCluster * header.clusterSectors;
  if (entry > U32_MAX) throw new RangeError(`file cluster ${fileCluster} does not fit a v${header.version} BAT entry`);
  return entry;
}

/** Byte offset in the image file of the cluster a non-zero BAT entry points at. */
export function batEntryToFileOffset(header: PloopHeader, entry: number): number {
  return header.version === 2 ? entry * header.clusterSectors * SECTOR_BYTES : entry * SECTOR_BYTES;
}

/**
 * Reject a BAT that would make a reader return wrong data: entries into the header/BAT
 * area, clusters not wholly inside the file (an unaligned tail is ignored, docs/ploop.md 1.9),
 * v1 entries that are not cluster aligned, and two virtual clusters sharing one file
 * cluster. Returns the number of allocated entries.
 */
export function validateBat(header: PloopHeader, bat: Uint32Array, fileSize: number, fileName: string): number {
  const clusterBytes = clusterBytesOf(header);
  const fileClusters = Math.floor(fileSize / clusterBytes);
  const firstDataCluster = header.firstBlockOffsetSectors / header.clusterSectors;
  const used = new Uint32Array(bat.length);
  let count = 0;
  for (let i = 0; i < bat.length; i++) {
    const entry = bat[i]!;
    if (entry === 0) continue;
    if (header.version === 1 && entry % header.clusterSectors !== 0) {
      throw new PloopFormatError(
        `${fileName}: BAT entry of cluster ${i} (sector ${entry}) is not a multiple of the cluster size ${header.clusterSectors} sectors`,
      );
    }
    const fileCluster = entryToFileCluster(header, entry);
    if (fileCluster < firstDataCluster) {
      throw new PloopFormatError(`${fileName}: BAT entry of cluster ${i} points into the header/BAT area (file cluster ${fileCluster})`);
    }
    if (fileCluster >= fileClusters) {
      throw new PloopFormatError(
        `${fileName}: BAT entry of cluster ${i} points beyond end of file (file cluster ${fileCluster}, file has ${fileClusters} whole clusters)`,
      );
    }
    used[count++] = fileCluster;
  }
  // Duplicates: sort the targets (typed-array sort is numeric), then look up who shares one.
  const sorted = used.subarray(0, count).sort();
  for (let k = 1; k < count; k++) {
    if (sorted[k] === sorted[k - 1]) {
      const target = sorted[k]!;
      const owners: number[] = [];
      for (let i = 0; i < bat.length && owners.length < 2; i++) {
        if (bat[i] !== 0 && entryToFileCluster(header, bat[i]!) === target) owners.push(i);
      }
      throw new PloopFormatError(`${fileName}: BAT entries of clusters ${owners[0]} and ${owners[1]} both point at file cluster ${target}`);
    }
  }
  return count;
}
