/**
 * Walks the frames of zstd data without decompressing it (RFC 8878, section 3.1): the
 * content size each frame declares and where it ends. Pure. Decompression is bounded by
 * the declared sizes before any is attempted, whichever binding then decompresses.
 */

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MAGIC_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
const FCS_FIELD_BYTES = [0, 2, 4, 8];
const DICTIONARY_ID_BYTES = [0, 1, 2, 4];

export interface ZstdFrameInfo {
  /** Bytes of this frame (header, blocks, checksum). */
  frameBytes: number;
  /** Decompressed bytes the frame declares (0 for a skippable frame). */
  contentBytes: number;
  /** A skippable frame (user data that decoders skip) rather than a zstd frame. */
  skippable: boolean;
}

/** Largest content of one block (RFC 8878, 3.1.1.2.4: Block_Maximum_Size is at most 128 KiB). */
export const ZSTD_MAX_BLOCK_CONTENT = 128 << 10;

export interface ZstdBlockInfo {
  /** Offset in the frame just past the block. */
  end: number;
  /** The most content the block can hold: its size for raw and RLE blocks, else 128 KiB. */
  maxContent: number;
}

/** The first frame of `data`. Throws an Error (the caller adds context) if it is not a complete frame with a content size. */
export function readZstdFrame(data: Uint8Array): ZstdFrameInfo {
  return parseZstdFrame(data, null);
}

/** The blocks of the zstd frame at the start of `frame` (none for a skippable frame). */
export function zstdFrameBlocks(frame: Uint8Array): ZstdBlockInfo[] {
  const blocks: ZstdBlockInfo[] = [];
  parseZstdFrame(frame, blocks);
  return blocks;
}

function parseZstdFrame(data: Uint8Array, blocks: ZstdBlockInfo[] | null): ZstdFrameInfo {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const need = (bytes: number, what: string): void => {
    if (data.length < bytes) throw new Error(`truncated zstd frame (${what})`);
  };
  need(4, "magic number");
  const magic = view.getUint32(0, true);
  if ((magic & SKIPPABLE_MAGIC_MASK) >>> 0 === SKIPPABLE_MAGIC) {
    need(8, "skippable frame size");
    const frameBytes = 8 + view.getUint32(4, true);
    need(frameBytes, "skippable frame");
    return { frameBytes, contentBytes: 0, skippable: true };
  }
  if (magic !== ZSTD_MAGIC) throw new Error(`not a zstd frame (magic 0x${magic.toString(16).padStart(8, "0")})`);
  need(5, "frame header");
  const descriptor = data[4]!;
  if ((descriptor & 0x08) !== 0) throw new Error("zstd frame header has the reserved bit set");
  const singleSegment = (descriptor & 0x20) !== 0;
  const fcsFlag = descriptor >> 6;
  const fcsBytes = fcsFlag === 0 && singleSegment ? 1 : FCS_FIELD_BYTES[fcsFlag]!;
  if (fcsBytes === 0) throw new Error("zstd frame without a content size");
  let pos = 5 + (singleSegment ? 0 : 1) + DICTIONARY_ID_BYTES[descriptor & 0x03]!;
  need(pos + fcsBytes, "frame header");
  let contentBytes: number;
  if (fcsBytes === 1) contentBytes = data[pos]!;
  else if (fcsBytes === 2) contentBytes = view.getUint16(pos, true) + 256;
  else if (fcsBytes === 4) contentBytes = view.getUint32(pos, true);
  else contentBytes = Number(view.getBigUint64(pos, true)); // beyond 2^53 it is only compared with a limit
  pos += fcsBytes;
  for (;;) {
    need(pos + 3, "block header");
    const header = data[pos]! | (data[pos + 1]! << 8) | (data[pos + 2]! << 16);
    const last = (header & 1) !== 0;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) throw new Error("zstd block of the reserved type");
    pos += 3 + (type === 1 ? 1 : size); // an RLE block stores one byte
    need(pos, "block");
    blocks?.push({ end: pos, maxContent: type === 2 ? ZSTD_MAX_BLOCK_CONTENT : size });
    if (last) break;
  }
  if ((descriptor & 0x04) !== 0) pos += 4; // content checksum
  need(pos, "content checksum");
  return { frameBytes: pos, contentBytes, skippable: false };
}

/**
 * The frames of `data`, which must be whole frames and nothing else, with their offsets;
 * throws as soon as their declared content exceeds `maxBytes` in all.
 */
export function listZstdFrames(data: Uint8Array, maxBytes = Number.MAX_SAFE_INTEGER): (ZstdFrameInfo & { offset: number })[] {
  if (data.length === 0) throw new Error("no zstd frame (empty data)");
  const frames: (ZstdFrameInfo & { offset: number })[] = [];
  let total = 0;
  for (let offset = 0; offset < data.length; ) {
    const frame = readZstdFrame(data.subarray(offset));
    total += frame.contentBytes;
    if (total > maxBytes) throw new Error(`zstd content size ${total} exceeds the limit ${maxBytes}`);
    frames.push({ ...frame, offset });
    offset += frame.frameBytes;
  }
  return frames;
}

/** Sum of the content sizes of all frames of `data` (see listZstdFrames). */
export function zstdContentBytes(data: Uint8Array, maxBytes = Number.MAX_SAFE_INTEGER): number {
  return listZstdFrames(data, maxBytes).reduce((sum, f) => sum + f.contentBytes, 0);
}
