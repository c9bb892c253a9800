/**
 * Stored chunk objects. Version 1: byte 0 = 0x01 (zstd, unencrypted), then one zstd
 * frame of the plain chunk. The chunk id is the SHA-256 of the plain content, so every
 * decode re-hashes and refuses content that does not match its name.
 */
import { createHash } from "node:crypto";
import { IntegrityError } from "../errors.js";
import { zstdCompress, zstdDecompressBounded } from "../util/zstd.js";

export const CHUNK_FORMAT_ZSTD = 0x01;

export function chunkId(plain: Uint8Array): Buffer {
  return createHash("sha256").update(plain).digest();
}

export function encodeChunk(plain: Uint8Array, compressionLevel: number): Buffer {
  const frame = zstdCompress(plain, compressionLevel);
  const out = Buffer.allocUnsafe(1 + frame.length);
  out[0] = CHUNK_FORMAT_ZSTD;
  frame.copy(out, 1);
  return out;
}

/** Decode and verify; `maxBytes` bounds the decompressed size (the chunker's max). */
export function decodeChunk(object: Uint8Array, expectedIdHex: string, maxBytes: number): Buffer {
  if (object.length < 1 || object[0] !== CHUNK_FORMAT_ZSTD) {
    throw new IntegrityError(`chunk ${expectedIdHex}: unknown chunk format ${object.length < 1 ? "(empty object)" : `0x${object[0]!.toString(16)}`}`);
  }
  let plain: Buffer;
  try {
    plain = zstdDecompressBounded(object.subarray(1), maxBytes);
  } catch (error) {
    throw new IntegrityError(`chunk ${expectedIdHex}: cannot be decompressed (${error instanceof Error ? error.message : String(error)})`);
  }
  const actual = chunkId(plain).toString("hex");
  if (actual !== expectedIdHex) {
    throw new IntegrityError(`chunk ${expectedIdHex}: content does not match its id (corrupted object, hash ${actual.slice(0, 16)}...)`);
  }
  return plain;
}
