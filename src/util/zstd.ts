/**
 * zstd with a bound on the decompressed size: a stored object is untrusted input, and
 * a frame header claiming gigabytes must not make us allocate them.
 */
import { createRequire } from "node:module";
import { compress, decompress } from "zstd-napi";

interface ZstdBinding {
  getFrameContentSize(frame: Uint8Array): number | null;
  findFrameCompressedSize(frame: Uint8Array): number;
  DCtx: new () => { decompressStream(dst: Uint8Array, src: Uint8Array): [number, number, number] };
}
const binding = createRequire(import.meta.url)("zstd-napi/binding") as ZstdBinding;

/** `checksum` adds zstd's content checksum (xxhash64), verified on decompression. */
export function zstdCompress(data: Uint8Array, level: number, checksum = false): Buffer {
  return compress(data, { compressionLevel: level, checksumFlag: checksum });
}

/**
 * The decompressed size the frame headers declare (every frame must declare one). Throws
 * an Error (caller adds context) for a frame without a size or damaged frame boundaries.
 */
export function zstdContentSize(data: Uint8Array): number {
  let total = 0;
  let frame = data;
  while (frame.length > 0) {
    const size = binding.getFrameContentSize(frame);
    if (size === null) throw new Error("zstd frame without a content size");
    total += size;
    frame = frame.subarray(binding.findFrameCompressedSize(frame));
  }
  return total;
}

/** Throws an Error (caller adds context) if the data is not exactly one frame set within maxBytes. */
export function zstdDecompressBounded(data: Uint8Array, maxBytes: number): Buffer {
  const total = zstdContentSize(data);
  if (total > maxBytes) throw new Error(`zstd content size ${total} exceeds the limit ${maxBytes}`);
  return decompress(data);
}

/**
 * The first `maxBytes` bytes of the content (all of it if shorter), decompressing only as
 * far as needed: a header can be read before deciding how much of the rest to allow.
 * Nothing is verified beyond what zstd checks on the way (the content checksum is at the
 * end of a frame: callers decompress the whole object before trusting it).
 */
export function zstdDecompressPrefix(data: Uint8Array, maxBytes: number): Buffer {
  const dctx = new binding.DCtx();
  const out = Buffer.allocUnsafe(maxBytes);
  let produced = 0;
  let consumed = 0;
  while (produced < maxBytes && consumed < data.length) {
    const [, wrote, read] = dctx.decompressStream(out.subarray(produced), data.subarray(consumed));
    produced += wrote;
    consumed += read;
    if (wrote === 0 && read === 0) break;
  }
  return out.subarray(0, produced);
}
