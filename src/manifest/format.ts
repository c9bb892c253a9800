/**
 * The manifest: what one backup's logical disk is made of, plus its metadata.
 *
 * Object layout (version 1):
 *   bytes 0..3   "PVMF"
 *   byte  4      format version (1)
 *   bytes 5..36  SHA-256 of everything after it (zstd ignores some header bits, so its
 *                own checksum alone would miss a flip there: this catches any flip)
 *   bytes 37..   zstd frame of the payload, with zstd's content checksum
 * Payload:
 *   u32 LE       length of the metadata JSON
 *   JSON         ManifestMetadata (UTF-8)
 *   entries      back to back, in logical order, covering [0, logicalBytes) exactly:
 *                chunk: u8 1, u64 offset, u64 length, 32-byte chunk id
 *                hole:  u8 2, u64 offset, u64 length   (never read, never stored: zeros)
 * A binary table keeps a 100 GB disk's manifest at ~50 bytes per chunk instead of
 * ~150 for JSON, and decoding it is a linear scan with full validation.
 */
import { createHash } from "node:crypto";
import { activeZstdBinding, zstdCompress, zstdContentSize, zstdDecompressBounded, zstdDecompressPrefix } from "../util/zstd.js";
import { errorLine, IntegrityError } from "../errors.js";
import { validateChunkerParams, type ChunkerParams } from "../chunker/params.js";

export const MANIFEST_MAGIC = "PVMF";
export const MANIFEST_VERSION = 1;
export const CHUNK_ID_BYTES = 32;
const HEADER_BYTES = 5 + 32;

const KIND_CHUNK = 1;
const KIND_HOLE = 2;
const CHUNK_ENTRY_BYTES = 1 + 8 + 8 + CHUNK_ID_BYTES;
const HOLE_ENTRY_BYTES = 1 + 8 + 8;
/** Decompressed manifests larger than this are refused whatever their geometry. */
const MAX_PAYLOAD_BYTES = 2 ** 31 - 1;
/** The metadata JSON: a few KiB in practice (at most 127 image paths, docs/ploop.md 1.4). */
export const MAX_METADATA_BYTES = 1 << 20;
/** Cluster sizes: powers of two, 4 KiB (ploop's own minimum is 32 KiB) to 64 MiB. */
export const MIN_CLUSTER_BYTES = 4096;
export const MAX_CLUSTER_BYTES = 64 << 20;
/** ploop creates and grows disks up to 50 TiB (docs/ploop.md 1.4); a manifest may say 64 TiB at most. */
export const MAX_LOGICAL_BYTES = 64 * 2 ** 40;
/**
 * Names a ploop-format restore writes (PATH/root.hdd, PATH/DiskDescriptor.xml) or ploop
 * adds beside them (root.hdd.{GUID} deltas, DiskDescriptor.xml.lck), and the manifest's
 * own name: a side file named like one of them could overwrite the restored disk.
 */
const RESERVED_SIDE_FILE = /^(manifest|root\.hdd.*|DiskDescriptor\.xml.*)$/;

/**
 * The most entries a manifest of this geometry can hold. Proof for what backups write
 * (docs/repository-format.md): each allocated run of L bytes holds at most 2L/min + 1
 * chunks (every chunk but the last of a read segment is >= min, read segments are
 * separated by reused chunks, and reused chunks are >= min), runs and holes alternate
 * (at most one per cluster each way), so entries <= 2 logical/min + clusters + 2. Twice
 * the chunk term leaves room for manifests written before short chunks stopped being
 * reused (src/backup/plan.ts).
 */
export function maxManifestEntries(disk: { logicalBytes: number; clusterBytes: number }, minChunkBytes: number): number {
  return 4 * Math.ceil(disk.logicalBytes / minChunkBytes) + Math.ceil(disk.logicalBytes / disk.clusterBytes) + 16;
}

/** What is wrong with a disk geometry, or null: cluster a power of two in range, size in range and whole clusters. */
export function geometryProblem(disk: { logicalBytes: unknown; clusterBytes: unknown }): string | null {
  const { logicalBytes, clusterBytes } = disk;
  if (
    !Number.isSafeInteger(clusterBytes) ||
    (clusterBytes as number) < MIN_CLUSTER_BYTES ||
    (clusterBytes as number) > MAX_CLUSTER_BYTES ||
    ((clusterBytes as number) & ((clusterBytes as number) - 1)) !== 0
  ) {
    return `disk.clusterBytes ${show(clusterBytes)} is not a power of two from ${MIN_CLUSTER_BYTES} to ${MAX_CLUSTER_BYTES}`;
  }
  if (!Number.isSafeInteger(logicalBytes) || (logicalBytes as number) < 0 || (logicalBytes as number) > MAX_LOGICAL_BYTES) {
    return `disk.logicalBytes ${show(logicalBytes)} is not a disk size from 0 to ${MAX_LOGICAL_BYTES} (64 TiB)`;
  }
  if ((logicalBytes as number) % (clusterBytes as number) !== 0)
    return `disk.logicalBytes ${logicalBytes as number} is not a whole number of ${clusterBytes as number}-byte clusters`;
  return null;
}

export type ManifestEntry = { kind: "chunk"; offset: number; length: number; id: Buffer } | { kind: "hole"; offset: number; length: number };

export interface DiskGeometry {
  logicalBytes: number;
  clusterBytes: number;
  /** ploop format version of the source images (1 or 2). */
  sourceFormatVersion: number;
}

export interface BackupStats {
  /** Bytes read from image files. */
  readBytes: number;
  /** Logical bytes covered by chunks. */
  dataBytes: number;
  /** Logical bytes recorded as holes. */
  holeBytes: number;
  chunks: number;
  newChunks: number;
  /** Bytes of newly stored chunk objects (compressed). */
  newBytesStored: number;
  seconds: number;
  /** Incremental backups: chunk references taken unread from the previous backup. */
  reusedChunks?: number;
}

export interface ManifestMetadata {
  formatVersion: number;
  id: string;
  ct: string;
  host: string;
  /** ISO 8601 UTC. */
  time: string;
  tool: { name: string; version: string };
  disk: DiskGeometry;
  chunker: ChunkerParams;
  source: {
    descriptorPath: string;
    /** GUID of the image the backup was read as the top of (snapshot or live top). */
    topGuid: string;
    /** The snapshot the backup was taken from, if it was taken from one. */
    snapshotGuid: string | null;
    imageFiles: string[];
  };
  /** Extra per-backup objects stored beside the manifest (names under backups/<ct>/<id>/). */
  files: { descriptor: string; config: string | null };
  /** Set when the backup reused the unchanged part of a previous backup (read only what changed). */
  incremental?: { baseBackup: string; baseSnapshotGuid: string } | null;
  /**
   * backup --skip-free: allocated clusters that lay entirely in free filesystem blocks were
   * stored as holes (docs/skip-free.md): a restore has zeros there, not the source's bytes.
   */
  freeSpace?: { skippedBytes: number; clusterBytes: number; filesystems: string[] } | null;
  stats: BackupStats;
  entryCount: number;
  /** Labels given at backup time (`backup --tag`), for filters; absent in older manifests. */
  tags?: string[];
  /** A free-text note given at backup time (`backup --note`); absent in older manifests. */
  note?: string;
  /**
   * Object-lock repositories (docs/object-lock.md): the basis (start) of the run that wrote
   * this manifest; every chunk it references was retained per the repository's schedule
   * from this time before the manifest was written.
   */
  objectLock?: { at: string };
}

/** What `backup --tag/--note` record (optional metadata fields; older readers ignore them). */
export interface BackupAnnotations {
  tags?: string[];
  note?: string;
}

/** A tag: one word that a filter or a shell can carry as is. */
export const TAG_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,63}$/;
export const MAX_NOTE_CHARS = 1000;

/** Why an annotation is invalid, or null when it is fine (shared by the CLI's checks and the decoder). */
export function annotationProblem(a: BackupAnnotations): string | null {
  for (const tag of a.tags ?? []) {
    if (typeof tag !== "string" || !TAG_PATTERN.test(tag))
      return `tag ${show(tag)} is not a tag (letters, digits and . _ : @ + = -, at most 64, not starting with a symbol)`;
  }
  if (a.note !== undefined) {
    if (typeof a.note !== "string") return "note is not a string";
    if (a.note.length > MAX_NOTE_CHARS) return `note is longer than ${MAX_NOTE_CHARS} characters`;
    // one line: listings and logs print it as is
    if (/[\u0000-\u001f\u007f]/.test(a.note)) return "note contains a control character (a line break?)";
  }
  return null;
}

export interface Manifest {
  metadata: ManifestMetadata;
  entries: ManifestEntry[];
}

/** Refuses (plain Error: a bug, not bad input) what decodeManifest would refuse to read back. */
export function encodeManifest(manifest: Manifest): Buffer {
  const { disk, chunker } = manifest.metadata;
  const problem = geometryProblem(disk);
  if (problem !== null) throw new Error(`manifest: ${problem}`);
  validateEntries(manifest.entries, disk.logicalBytes, chunker.maxSize, "manifest");
  const maxEntries = maxManifestEntries(disk, chunker.minSize);
  if (manifest.entries.length > maxEntries)
    throw new Error(`manifest: ${manifest.entries.length} entries, more than a disk of this geometry can hold (${maxEntries})`);
  const metadata = { ...manifest.metadata, entryCount: manifest.entries.length };
  const json = Buffer.from(JSON.stringify(metadata), "utf8");
  if (json.length > MAX_METADATA_BYTES) throw new Error(`manifest: metadata of ${json.length} bytes exceeds ${MAX_METADATA_BYTES}`);
  let size = 4 + json.length;
  for (const e of manifest.entries) size += e.kind === "chunk" ? CHUNK_ENTRY_BYTES : HOLE_ENTRY_BYTES;
  const payload = Buffer.alloc(size);
  payload.writeUInt32LE(json.length, 0);
  json.copy(payload, 4);
  let pos = 4 + json.length;
  for (const e of manifest.entries) {
    payload[pos] = e.kind === "chunk" ? KIND_CHUNK : KIND_HOLE;
    payload.writeBigUInt64LE(BigInt(e.offset), pos + 1);
    payload.writeBigUInt64LE(BigInt(e.length), pos + 9);
    if (e.kind === "chunk") {
      e.id.copy(payload, pos + 17);
      pos += CHUNK_ENTRY_BYTES;
    } else {
      pos += HOLE_ENTRY_BYTES;
    }
  }
  const frame = zstdCompress(payload, 3, true);
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(MANIFEST_MAGIC, 0, "latin1");
  header[4] = MANIFEST_VERSION;
  createHash("sha256").update(frame).digest().copy(header, 5);
  return Buffer.concat([header, frame]);
}

/**
 * The cheap part of decodeManifest: magic, version and the SHA-256 of the frame (one hash,
 * no decompression). Enough to tell a copy damaged in transit or on a local disk from an
 * intact one, e.g. before caching it. Returns the zstd frame.
 */
export function verifyManifestEnvelope(object: Uint8Array, name: string): Buffer {
  const buf = Buffer.from(object.buffer, object.byteOffset, object.byteLength);
  const fail = (what: string): never => {
    throw new IntegrityError(`${name}: ${what}`);
  };
  if (buf.length < 5 || buf.toString("latin1", 0, 4) !== MANIFEST_MAGIC) fail("not a ploopvault manifest");
  if (buf.length < HEADER_BYTES) fail("truncated manifest");
  if (buf[4] !== MANIFEST_VERSION) fail(`unsupported manifest version ${buf[4]}`);
  const frame = buf.subarray(HEADER_BYTES);
  if (!createHash("sha256").update(frame).digest().equals(buf.subarray(5, HEADER_BYTES))) fail("corrupt manifest (checksum mismatch)");
  return frame;
}

/** Decode and fully validate a manifest object; `name` identifies it in errors. */
export function decodeManifest(object: Uint8Array, name: string): Manifest {
  const fail = (what: string): never => {
    throw new IntegrityError(`${name}: ${what}`);
  };
  const frame = verifyManifestEnvelope(object, name);
  const corrupt = (error: unknown): never => fail(`corrupt manifest (${errorLine(error)})`);
  const zstd = activeZstdBinding(); // a missing binding is a set-up error, not a damaged manifest
  // The metadata first (decompressing only its part), then the whole payload, with a
  // limit from the geometry the metadata declares: a hostile object cannot make us
  // allocate more than its own disk's entry table needs.
  let head: Buffer;
  let contentSize: number;
  try {
    contentSize = zstdContentSize(frame);
  } catch (error) {
    return corrupt(error);
  }
  if (contentSize > MAX_PAYLOAD_BYTES) fail(`manifest of ${contentSize} bytes exceeds the limit ${MAX_PAYLOAD_BYTES}`);
  try {
    head = zstdDecompressPrefix(frame, Math.min(contentSize, 4 + MAX_METADATA_BYTES), zstd);
  } catch (error) {
    return corrupt(error);
  }
  if (head.length < 4) fail("truncated manifest");
  const jsonLength = head.readUInt32LE(0);
  if (jsonLength > MAX_METADATA_BYTES) fail(`metadata of ${jsonLength} bytes exceeds the limit ${MAX_METADATA_BYTES}`);
  if (4 + jsonLength > head.length) fail("truncated manifest metadata");
  let parsed: unknown;
  try {
    parsed = JSON.parse(head.toString("utf8", 4, 4 + jsonLength));
  } catch {
    return fail("manifest metadata is not valid JSON");
  }
  validateMetadata(parsed, name);
  const metadata = parsed;
  const maxEntries = maxManifestEntries(metadata.disk, metadata.chunker.minSize);
  if (metadata.entryCount > maxEntries)
    fail(`entryCount ${metadata.entryCount} is more than a disk of ${metadata.disk.logicalBytes} bytes can have (${maxEntries})`);
  const limit = 4 + jsonLength + metadata.entryCount * CHUNK_ENTRY_BYTES;
  if (contentSize > limit) fail(`manifest of ${contentSize} bytes is larger than its ${metadata.entryCount} entries need (at most ${limit})`);
  let payload: Buffer;
  try {
    payload = zstdDecompressBounded(frame, limit, zstd);
  } catch (error) {
    return corrupt(error);
  }
  const entries: ManifestEntry[] = [];
  let pos = 4 + jsonLength;
  while (pos < payload.length) {
    if (entries.length >= metadata.entryCount) fail(`has more entries than its metadata says (${metadata.entryCount})`);
    const kind = payload[pos];
    if (kind === KIND_CHUNK) {
      if (pos + CHUNK_ENTRY_BYTES > payload.length) fail("truncated chunk entry");
      entries.push({
        kind: "chunk",
        offset: readSafe(payload, pos + 1, name),
        length: readSafe(payload, pos + 9, name),
        id: Buffer.from(payload.subarray(pos + 17, pos + 17 + CHUNK_ID_BYTES)),
      });
      pos += CHUNK_ENTRY_BYTES;
    } else if (kind === KIND_HOLE) {
      if (pos + HOLE_ENTRY_BYTES > payload.length) fail("truncated hole entry");
      entries.push({ kind: "hole", offset: readSafe(payload, pos + 1, name), length: readSafe(payload, pos + 9, name) });
      pos += HOLE_ENTRY_BYTES;
    } else {
      fail(`unknown entry kind ${kind} at byte ${pos}`);
    }
  }
  if (entries.length !== metadata.entryCount) fail(`has ${entries.length} entries, metadata says ${metadata.entryCount}`);
  validateEntries(entries, metadata.disk.logicalBytes, metadata.chunker.maxSize, name);
  return { metadata, entries };
}

function readSafe(buf: Buffer, at: number, name: string): number {
  const value = buf.readBigUInt64LE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new IntegrityError(`${name}: entry value out of range`);
  return Number(value);
}

/** Names of objects beside the manifest, container ids and backup ids: one plain path segment. */
const PLAIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A value from the object, shown in a one-line message (escaped, cut short). */
function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return (text.length > 80 ? `${text.slice(0, 80)}...` : text).replace(/[\u2028\u2029]/g, " ");
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const isCount = (v: unknown): boolean => typeof v === "number" && Number.isFinite(v) && v >= 0;

/**
 * Every field the code reads is checked for its type, so a damaged or hostile manifest is
 * refused here with one line instead of failing later (TypeError in a listing, a side-file
 * name that is a path). Unknown extra fields are allowed (newer writers).
 */
function validateMetadata(value: unknown, name: string): asserts value is ManifestMetadata {
  const fail = (what: string): never => {
    throw new IntegrityError(`${name}: invalid metadata: ${what}`);
  };
  if (!isObject(value)) return fail("not an object");
  const m = value as Partial<Record<keyof ManifestMetadata, unknown>>;
  if (m.formatVersion !== MANIFEST_VERSION) fail(`formatVersion ${show(m.formatVersion)}`);
  for (const key of ["id", "ct", "host", "time"] as const) if (typeof m[key] !== "string" || m[key] === "") fail(`missing ${key}`);
  for (const key of ["id", "ct"] as const) if (!PLAIN_NAME.test(m[key] as string)) fail(`${key} ${show(m[key])} is not a plain name`);
  if (Number.isNaN(Date.parse(m.time as string))) fail(`time ${show(m.time)} is not a date`);
  if (!isObject(m.tool) || typeof m.tool.name !== "string" || typeof m.tool.version !== "string") fail("tool");
  if (!isObject(m.disk)) return fail("missing disk");
  const { sourceFormatVersion } = m.disk;
  const geometry = geometryProblem(m.disk as { logicalBytes: unknown; clusterBytes: unknown });
  if (geometry !== null) fail(geometry);
  if (!Number.isSafeInteger(sourceFormatVersion) || (sourceFormatVersion as number) < 0 || (sourceFormatVersion as number) > 2)
    fail("disk.sourceFormatVersion");
  if (!isObject(m.chunker)) return fail("missing chunker");
  try {
    validateChunkerParams(m.chunker as unknown as ChunkerParams, name);
  } catch (error) {
    throw new IntegrityError(errorLine(error));
  }
  const files = m.files;
  if (!isObject(files) || typeof files.descriptor !== "string" || !PLAIN_NAME.test(files.descriptor)) fail("files.descriptor");
  const descriptor = (files as Record<string, unknown>).descriptor as string;
  if (descriptor === "manifest") fail("files.descriptor is the manifest's own name");
  const config = (files as Record<string, unknown>).config;
  if (config !== null && (typeof config !== "string" || !PLAIN_NAME.test(config))) fail("files.config");
  if (typeof config === "string" && (RESERVED_SIDE_FILE.test(config) || config === descriptor)) {
    fail(`files.config ${show(config)} collides with the manifest, the descriptor or a file a restore writes (root.hdd, DiskDescriptor.xml)`);
  }
  if (!Number.isSafeInteger(m.entryCount) || (m.entryCount as number) < 0) fail("entryCount");
  if (!isObject(m.stats)) return fail("stats");
  for (const key of ["readBytes", "dataBytes", "holeBytes", "chunks", "newChunks", "newBytesStored", "seconds"])
    if (!isCount(m.stats[key])) fail(`stats.${key}`);
  if (m.stats.reusedChunks !== undefined && !isCount(m.stats.reusedChunks)) fail("stats.reusedChunks");
  const source = m.source;
  if (!isObject(source)) return fail("source");
  if (typeof source.descriptorPath !== "string" || typeof source.topGuid !== "string") fail("source");
  if (source.snapshotGuid !== null && typeof source.snapshotGuid !== "string") fail("source.snapshotGuid");
  if (!Array.isArray(source.imageFiles) || !source.imageFiles.every((f) => typeof f === "string")) fail("source.imageFiles");
  if (m.tags !== undefined && !Array.isArray(m.tags)) fail("tags");
  const annotations = annotationProblem({
    ...(m.tags === undefined ? {} : { tags: m.tags as string[] }),
    ...(m.note === undefined ? {} : { note: m.note as string }),
  });
  if (annotations !== null) fail(annotations);
  const lock = m.objectLock;
  if (lock !== undefined && (!isObject(lock) || typeof lock.at !== "string" || Number.isNaN(Date.parse(lock.at)))) fail("objectLock");
  const inc = m.incremental;
  if (inc !== undefined && inc !== null && (!isObject(inc) || typeof inc.baseBackup !== "string" || typeof inc.baseSnapshotGuid !== "string"))
    fail("incremental");
  const free = m.freeSpace;
  if (free !== undefined && free !== null) {
    if (
      !isObject(free) ||
      !isCount(free.skippedBytes) ||
      !isCount(free.clusterBytes) ||
      !Array.isArray(free.filesystems) ||
      !free.filesystems.every((f) => typeof f === "string")
    )
      fail("freeSpace");
  }
}

/** Entries must tile [0, logicalBytes) in order, without gaps or overlaps. */
function validateEntries(entries: readonly ManifestEntry[], logicalBytes: number, maxChunk: number, name: string): void {
  let expected = 0;
  for (const [i, e] of entries.entries()) {
    if (e.offset !== expected) throw new IntegrityError(`${name}: entry ${i} starts at ${e.offset}, expected ${expected}`);
    if (!(e.length > 0)) throw new IntegrityError(`${name}: entry ${i} has length ${e.length}`);
    if (e.kind === "chunk") {
      if (e.length > maxChunk) throw new IntegrityError(`${name}: chunk entry ${i} is ${e.length} bytes, above the maximum ${maxChunk}`);
      if (e.id.length !== CHUNK_ID_BYTES) throw new IntegrityError(`${name}: chunk entry ${i} has a bad id`);
    }
    expected = e.offset + e.length;
  }
  if (expected !== logicalBytes) throw new IntegrityError(`${name}: entries cover ${expected} bytes, disk has ${logicalBytes}`);
}

/** Chunk ids referenced by a manifest (duplicates included). */
export function* chunkIds(entries: readonly ManifestEntry[]): Generator<Buffer> {
  for (const e of entries) if (e.kind === "chunk") yield e.id;
}
