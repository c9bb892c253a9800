/**
 * zstd with a bound on the decompressed size: a stored object is untrusted input, and
 * a frame header claiming gigabytes must not make us allocate them.
 */
import { createRequire } from "node:module";
import { compress, decompress } from "zstd-napi";

interface ZstdBinding {
  getFrameContentSize(frame: Uint8Array): number | null;
  findFrameCompressedSize(frame: Uint8Array): number;
}
const binding = createRequire(import.meta.url)("zstd-napi/binding") as ZstdBinding;

/** `checksum` adds zstd's content checksum (xxhash64), verified on decompression. */
export function zstdCompress(data: Uint8Array, level: number, checksum = false): Buffer {
  return compress(data, { compressionLevel: level, checksumFlag: checksum });
}

/** Throws an Error (caller adds context) if the data is not exactly one frame set within maxBytes. */
export function zstdDecompressBounded(data: Uint8Array, maxBytes: number): Buffer {
  let total = 0;
  let frame = data;
  while (frame.length > 0) {
    const size = binding.getFrameContentSize(frame);
    if (size === null) throw new Error("zstd frame without a content size");
    total += size;
    if (total > maxBytes) throw new Error(`zstd content size ${total} exceeds the limit ${maxBytes}`);
    frame = frame.subarray(binding.findFrameCompressedSize(frame));
  }
  return decompress(data);
}
