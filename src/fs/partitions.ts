/**
 * Partition tables as hosts have them, read-only: GPT (what `ploop init` writes: a
 * protective MBR and one partition at 1 MiB), MBR with primary and logical partitions
 * (older disks, images given to `backup --disk`), or none (a filesystem on the whole
 * disk). findExtFilesystem() picks the partition holding the ext2/3/4 filesystem.
 *
 * Everything read from the disk is bounded before use: a GPT entry array is at most
 * 1 MiB, an MBR's chain of logical partitions at most 128 links and never loops, and a
 * partition must lie inside the disk.
 */
import { crc32 } from "./checksums.js";
import { type BlockDevice, SubDevice } from "./block-device.js";
import { FilesystemError, UnsupportedFilesystemError } from "./errors.js";

export interface Partition {
  /** 1-based, as Linux numbers them (MBR logical partitions from 5). */
  number: number;
  /** Byte offset and size on the disk. */
  start: number;
  size: number;
  /** "gpt <type GUID>" or "mbr 0x83". */
  type: string;
}

export interface PartitionTable {
  kind: "gpt" | "mbr" | "none";
  partitions: Partition[];
}

const GPT_SIGNATURE = "EFI PART";
const MAX_GPT_ENTRY_BYTES = 1 << 20;
const MAX_LOGICAL_PARTITIONS = 128;
const EXT_MAGIC_OFFSET = 1024 + 0x38;

function guidString(b: Buffer, at: number): string {
  const hex = (from: number, to: number): string => b.subarray(at + from, at + to).toString("hex");
  const le = (from: number, len: number): string =>
    Buffer.from(b.subarray(at + from, at + from + len))
      .reverse()
      .toString("hex");
  return `${le(0, 4)}-${le(4, 2)}-${le(6, 2)}-${hex(8, 10)}-${hex(10, 16)}`.toUpperCase();
}

function safeNumber(v: bigint): number {
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** A GPT header at `lba` that verifies, or null. */
async function readGptHeader(device: BlockDevice, sector: number, lba: number): Promise<Buffer | null> {
  if ((lba + 1) * sector > device.size) return null;
  const h = await device.read(lba * sector, sector);
  if (h.toString("latin1", 0, 8) !== GPT_SIGNATURE) return null;
  const headerSize = h.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sector) return null;
  const copy = Buffer.from(h.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== h.readUInt32LE(16)) return null;
  return h;
}

async function readGpt(device: BlockDevice, label: string): Promise<PartitionTable | null> {
  for (const sector of [512, 4096]) {
    let header = await readGptHeader(device, sector, 1);
    // a damaged primary header: the backup one in the disk's last sector
    if (header === null && device.size >= 2 * sector) header = await readGptHeader(device, sector, Math.floor(device.size / sector) - 1);
    if (header === null) continue;
    const entriesLba = safeNumber(header.readBigUInt64LE(72));
    const count = header.readUInt32LE(80);
    const entrySize = header.readUInt32LE(84);
    if (entrySize < 128 || entrySize % 8 !== 0 || count * entrySize > MAX_GPT_ENTRY_BYTES || (entriesLba + 1) * sector > device.size) {
      throw new FilesystemError(`${label}: GPT entry array out of range (${count} entries of ${entrySize} bytes at sector ${entriesLba})`);
    }
    const bytes = count * entrySize;
    if (entriesLba * sector + bytes > device.size) throw new FilesystemError(`${label}: GPT entry array beyond the end of the disk`);
    const entries = await device.read(entriesLba * sector, bytes);
    if (crc32(entries) !== header.readUInt32LE(88)) throw new FilesystemError(`${label}: GPT partition entries checksum mismatch`);
    const partitions: Partition[] = [];
    for (let i = 0; i < count; i++) {
      const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
      if (e.subarray(0, 16).every((x) => x === 0)) continue;
      const first = safeNumber(e.readBigUInt64LE(32));
      const last = safeNumber(e.readBigUInt64LE(40));
      if (last < first || (last + 1) * sector > device.size) {
        throw new FilesystemError(`${label}: GPT partition ${i + 1} (sectors ${first}-${last}) lies outside the disk`);
      }
      partitions.push({ number: i + 1, start: first * sector, size: (last - first + 1) * sector, type: `gpt ${guidString(e, 0)}` });
    }
    return { kind: "gpt", partitions };
  }
  return null;
}

interface MbrEntry {
  type: number;
  startLba: number;
  sectors: number;
}

function mbrEntries(sector: Buffer): MbrEntry[] | null {
  if (sector[510] !== 0x55 || sector[511] !== 0xaa) return null;
  const out: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const e = 446 + 16 * i;
    const status = sector[e]!;
    if (status !== 0 && status !== 0x80) return null; // not a partition table (a boot sector of something else)
    out.push({ type: sector[e + 4]!, startLba: sector.readUInt32LE(e + 8), sectors: sector.readUInt32LE(e + 12) });
  }
  return out;
}

const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);

async function readMbr(device: BlockDevice, label: string): Promise<PartitionTable | null> {
  if (device.size < 512) return null;
  const entries = mbrEntries(await device.read(0, 512));
  if (entries === null) return null;
  const used = entries.filter((e) => e.type !== 0 && e.sectors > 0);
  if (used.length === 0) return null;
  if (used.some((e) => e.type === 0xee)) return null; // protective MBR of a GPT disk whose GPT did not verify
  const partitions: Partition[] = [];
  const inside = (startLba: number, sectors: number, what: string): void => {
    if ((startLba + sectors) * 512 > device.size) throw new FilesystemError(`${label}: MBR ${what} (sectors ${startLba}+${sectors}) lies outside the disk`);
  };
  for (let i = 0; i < 4; i++) {
    const e = entries[i]!;
    if (e.type === 0 || e.sectors === 0) continue;
    inside(e.startLba, e.sectors, `partition ${i + 1}`);
    if (!EXTENDED_TYPES.has(e.type)) {
      partitions.push({ number: i + 1, start: e.startLba * 512, size: e.sectors * 512, type: `mbr 0x${e.type.toString(16).padStart(2, "0")}` });
      continue;
    }
    // logical partitions: a chain of extended boot records, each relative to the extended partition
    const seen = new Set<number>();
    let ebr = e.startLba;
    for (let n = 5; ; n++) {
      if (seen.has(ebr) || seen.size >= MAX_LOGICAL_PARTITIONS)
        throw new FilesystemError(`${label}: MBR chain of logical partitions loops or exceeds ${MAX_LOGICAL_PARTITIONS} links`);
      seen.add(ebr);
      inside(ebr, 1, "extended boot record");
      const links = mbrEntries(await device.read(ebr * 512, 512));
      if (links === null) throw new FilesystemError(`${label}: damaged extended boot record at sector ${ebr}`);
      const [logical, next] = [links[0]!, links[1]!];
      if (logical.type !== 0 && logical.sectors > 0) {
        inside(ebr + logical.startLba, logical.sectors, `partition ${n}`);
        partitions.push({
          number: n,
          start: (ebr + logical.startLba) * 512,
          size: logical.sectors * 512,
          type: `mbr 0x${logical.type.toString(16).padStart(2, "0")}`,
        });
      }
      if (next.type === 0 || next.sectors === 0) break;
      ebr = e.startLba + next.startLba;
    }
  }
  return { kind: "mbr", partitions };
}

/** The disk's partition table (GPT first, then MBR), or kind "none". */
export async function readPartitionTable(device: BlockDevice, label: string): Promise<PartitionTable> {
  return (await readGpt(device, label)) ?? (await readMbr(device, label)) ?? { kind: "none", partitions: [] };
}

async function hasExtMagic(device: BlockDevice, start: number, size: number): Promise<boolean> {
  if (size < EXT_MAGIC_OFFSET + 2) return false;
  return (await device.read(start + EXT_MAGIC_OFFSET, 2)).readUInt16LE(0) === 0xef53;
}

export interface FoundFilesystem {
  /** The filesystem's bytes: a partition of the disk, or the whole disk. */
  device: BlockDevice;
  /** null: no partition table, the filesystem covers the disk. */
  partition: Partition | null;
  /** "partition 1 of DISK" or "DISK". */
  label: string;
}

/**
 * The ext2/3/4 filesystem on a disk: the only partition holding one (or the one numbered
 * `partitionNumber`), or the whole disk when it has no partition table.
 */
export async function findExtFilesystem(disk: BlockDevice, label: string, partitionNumber?: number): Promise<FoundFilesystem> {
  const all = await findExtFilesystems(disk, label);
  const table = all.table;
  if (partitionNumber !== undefined) {
    const p = table.partitions.find((x) => x.number === partitionNumber);
    if (p === undefined) throw new UnsupportedFilesystemError(`${label} has no partition ${partitionNumber} (${describeTable(table)})`);
    return { device: new SubDevice(disk, p.start, p.size), partition: p, label: `partition ${p.number} of ${label}` };
  }
  if (all.found.length === 1) return all.found[0]!;
  if (all.found.length === 0) throw new UnsupportedFilesystemError(`${label}: no ext2/ext3/ext4 filesystem found (${describeTable(table)})`);
  const numbers = all.found.map((f) => f.partition!.number).join(", ");
  throw new UnsupportedFilesystemError(`${label} has ext filesystems in partitions ${numbers}: choose one with --partition N`);
}

/** Every ext2/3/4 filesystem on the disk (check --fs walks them all). */
export async function findExtFilesystems(disk: BlockDevice, label: string): Promise<{ table: PartitionTable; found: FoundFilesystem[] }> {
  const table = await readPartitionTable(disk, label);
  if (table.kind === "none") {
    const found = (await hasExtMagic(disk, 0, disk.size)) ? [{ device: disk, partition: null, label }] : [];
    return { table, found };
  }
  const found: FoundFilesystem[] = [];
  for (const p of table.partitions) {
    if (await hasExtMagic(disk, p.start, p.size))
      found.push({ device: new SubDevice(disk, p.start, p.size), partition: p, label: `partition ${p.number} of ${label}` });
  }
  return { table, found };
}

function describeTable(table: PartitionTable): string {
  if (table.kind === "none") return "no partition table";
  if (table.partitions.length === 0) return `${table.kind.toUpperCase()} without partitions`;
  return `${table.kind.toUpperCase()} partitions: ${table.partitions.map((p) => `${p.number} (${p.type})`).join(", ")}`;
}
