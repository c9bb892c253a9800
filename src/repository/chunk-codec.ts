/**
 * Stored chunk objects and chunk ids, for both kinds of repository.
 *
 * Unencrypted (format 0x01): byte 0 = 0x01, then one zstd frame of the plain chunk; the
 * id is SHA-256(plain).
 * Encrypted (format 0x02): the sealed envelope of src/crypto/aead.ts (0x02, nonce,
 * ciphertext, tag) whose plaintext is the 0x01 object above (compression before
 * encryption), bound to the chunk's object name; the id is HMAC-SHA256(idKey, plain), so
 * object names reveal nothing about the content while equal chunks still deduplicate.
 *
 * Every decode authenticates (encrypted), decompresses with a bound and re-computes the
 * id: content that does not match its name is reported as corruption naming the chunk.
 */
import { createHash, createHmac, webcrypto } from "node:crypto";
import { ENVELOPE_OVERHEAD, open, seal, SEALED_CHUNK, sealInto } from "../crypto/aead.js";
import { AuthenticationFailure } from "../crypto/errors.js";
import type { DataKeys } from "../crypto/keys.js";
import { errorLine, IntegrityError } from "../errors.js";
import { cpuHasSha256Instructions } from "../util/sha-instructions.js";
import { activeZstdBinding, zstdCompress, zstdDecompressBounded } from "../util/zstd.js";
import { chunkKey } from "./layout.js";

export const CHUNK_FORMAT_ZSTD = 0x01;
export const CHUNK_FORMAT_ENCRYPTED = SEALED_CHUNK;

/** SHA-256 id of an unencrypted repository's chunk. */
export function chunkId(plain: Uint8Array): Buffer {
  return createHash("sha256").update(plain).digest();
}

/** The unencrypted (0x01) chunk object. */
export function encodeChunk(plain: Uint8Array, compressionLevel: number): Buffer {
  const frame = zstdCompress(plain, compressionLevel);
  const out = Buffer.allocUnsafe(1 + frame.length);
  out[0] = CHUNK_FORMAT_ZSTD;
  frame.copy(out, 1);
  return out;
}

/** Decode and verify an unencrypted chunk; `maxBytes` bounds the decompressed size (the chunker's max). */
export function decodeChunk(object: Uint8Array, expectedIdHex: string, maxBytes: number): Buffer {
  const plain = decompressChunk(object, expectedIdHex, maxBytes);
  const actual = chunkId(plain).toString("hex");
  if (actual !== expectedIdHex) {
    throw new IntegrityError(`chunk ${expectedIdHex}: content does not match its id (corrupted object, hash ${actual.slice(0, 16)}...)`);
  }
  return plain;
}

function decompressChunk(object: Uint8Array, expectedIdHex: string, maxBytes: number): Buffer {
  if (object.length < 1 || object[0] !== CHUNK_FORMAT_ZSTD) {
    throw new IntegrityError(`chunk ${expectedIdHex}: unknown chunk format ${object.length < 1 ? "(empty object)" : `0x${object[0]!.toString(16)}`}`);
  }
  const zstd = activeZstdBinding(); // a missing binding is a set-up error, not a damaged chunk
  try {
    return zstdDecompressBounded(object.subarray(1), maxBytes, zstd);
  } catch (error) {
    throw new IntegrityError(`chunk ${expectedIdHex}: cannot be decompressed (${errorLine(error)})`);
  }
}

/**
 * What a chunk codec needs; plain data (structured-cloneable) so worker threads get it
 * through workerData. `keys` is key material: never log it.
 */
export interface ChunkCodecSpec {
  compressionLevel: number;
  keys: DataKeys | null;
}

/** Ids, encoding and decoding of one repository's chunks. */
export class ChunkCodec {
  private readonly dataKey: Buffer | null;
  private readonly idKey: Buffer | null;
  private hmacKey: Promise<webcrypto.CryptoKey> | undefined;
  /** encodeInto()'s compressed chunk before sealing (encrypted repositories), reused. */
  private innerScratch = new Uint8Array(0);

  constructor(readonly spec: ChunkCodecSpec) {
    this.dataKey = spec.keys === null ? null : Buffer.from(spec.keys.dataKey);
    this.idKey = spec.keys === null ? null : Buffer.from(spec.keys.idKey);
  }

  get encrypted(): boolean {
    return this.dataKey !== null;
  }

  /** A copy of the spec for a worker thread (own buffers, nothing else of the heap). */
  workerSpec(): ChunkCodecSpec {
    const keys = this.spec.keys === null ? null : { dataKey: new Uint8Array(this.spec.keys.dataKey), idKey: new Uint8Array(this.spec.keys.idKey) };
    return { compressionLevel: this.spec.compressionLevel, keys };
  }

  /** The chunk's id: SHA-256, or HMAC-SHA256 under the id key in an encrypted repository. */
  id(plain: Uint8Array): Buffer {
    return this.idKey === null ? chunkId(plain) : createHmac("sha256", this.idKey).update(plain).digest();
  }

  /**
   * The same id as id(), computed on libuv's thread pool (WebCrypto), so the calling
   * thread can go on cutting chunks meanwhile. `plain` is copied before this returns.
   */
  async idAsync(plain: Uint8Array): Promise<Buffer> {
    if (this.idKey === null) return Buffer.from(await webcrypto.subtle.digest("SHA-256", plain));
    this.hmacKey ??= webcrypto.subtle.importKey("raw", this.idKey, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return Buffer.from(await webcrypto.subtle.sign("HMAC", await this.hmacKey, plain));
  }

  /**
   * The id of bytes being checked against a known id (restore's verification, a seed's
   * ranges): computed in place where the CPU has SHA-256 instructions (cheaper than
   * WebCrypto's copy), else on libuv's pool (idAsync) while the calling thread goes on.
   * `hashInPlace` overrides the choice (tests).
   */
  async idToCheck(plain: Uint8Array, hashInPlace = cpuHasSha256Instructions()): Promise<Buffer> {
    return hashInPlace ? this.id(plain) : this.idAsync(plain);
  }

  /** The object to store for `plain`, whose id is `id` (computed if not given). */
  encode(plain: Uint8Array, id?: Uint8Array): Buffer {
    const inner = encodeChunk(plain, this.spec.compressionLevel);
    if (this.dataKey === null) return inner;
    const idHex = Buffer.from(id ?? this.id(plain)).toString("hex");
    return seal(this.dataKey, SEALED_CHUNK, chunkKey(idHex), inner);
  }

  /**
   * The most bytes encodeInto() writes for a chunk of `plainBytes`, or null where it cannot
   * encode in place (a zstd binding without compressInto): then encode() and copy.
   */
  encodedBound(plainBytes: number): number | null {
    const zstd = activeZstdBinding();
    if (zstd.compressInto === undefined || zstd.compressBound === undefined) return null;
    const inner = 1 + zstd.compressBound(plainBytes);
    return this.dataKey === null ? inner : ENVELOPE_OVERHEAD + inner;
  }

  /**
   * encode() written into `out` at `offset` (room for encodedBound(plain.length) bytes
   * there); returns the object's length. The same object as encode() (an encrypted one
   * differs only by its random nonce). `id` names the chunk an encrypted object is bound to.
   */
  encodeInto(plain: Uint8Array, id: Uint8Array, out: Uint8Array, offset: number): number {
    const zstd = activeZstdBinding();
    if (zstd.compressInto === undefined || zstd.compressBound === undefined) throw new Error("encodeInto: not available (check encodedBound first)");
    if (this.dataKey === null) {
      out[offset] = CHUNK_FORMAT_ZSTD;
      return 1 + zstd.compressInto(plain, this.spec.compressionLevel, false, out, offset + 1);
    }
    // the 0x01 object in a scratch of its own, then sealed into `out`
    const bound = 1 + zstd.compressBound(plain.length);
    if (this.innerScratch.length < bound) this.innerScratch = new Uint8Array(bound);
    const inner = this.innerScratch;
    inner[0] = CHUNK_FORMAT_ZSTD;
    const innerBytes = 1 + zstd.compressInto(plain, this.spec.compressionLevel, false, inner, 1);
    return sealInto(
      this.dataKey,
      SEALED_CHUNK,
      chunkKey(Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString("hex")),
      inner.subarray(0, innerBytes),
      out,
      offset,
    );
  }

  /** Authenticate, decompress (bounded by `maxBytes`) and verify a stored chunk. */
  decode(object: Uint8Array, expectedIdHex: string, maxBytes: number): Buffer {
    if (this.dataKey === null) return decodeChunk(object, expectedIdHex, maxBytes);
    const { plain } = this.unseal(object, expectedIdHex, maxBytes);
    if (this.id(plain).toString("hex") !== expectedIdHex) {
      throw new IntegrityError(`chunk ${expectedIdHex}: content does not match its id`);
    }
    return plain;
  }

  /**
   * decode() for restore, which verifies every chunk it fetches (idToCheck: in place where
   * the CPU has SHA-256 instructions, 13-14 % less CPU per restore than WebCrypto's copy;
   * elsewhere on libuv's thread pool, hashing being then half of a restore's CPU, while the
   * calling thread decompresses the next chunk). `hashInPlace` overrides the choice (tests).
   */
  async decodeAsync(object: Uint8Array, expectedIdHex: string, maxBytes: number, hashInPlace?: boolean): Promise<Buffer> {
    return (await this.decodeWithInner(object, expectedIdHex, maxBytes, hashInPlace)).plain;
  }

  /**
   * decodeAsync(), also returning the inner 0x01 object (the zstd frame, before
   * encryption): another repository stores the same chunk from it without compressing
   * again (encodeFromInner), which is how `copy` moves chunks between repositories.
   */
  async decodeWithInner(object: Uint8Array, expectedIdHex: string, maxBytes: number, hashInPlace?: boolean): Promise<{ plain: Buffer; inner: Buffer }> {
    const opened = this.unseal(object, expectedIdHex, maxBytes);
    const actual = (await this.idToCheck(opened.plain, hashInPlace)).toString("hex");
    if (actual !== expectedIdHex) {
      throw new IntegrityError(`chunk ${expectedIdHex}: content does not match its id (corrupted object, hash ${actual.slice(0, 16)}...)`);
    }
    return opened;
  }

  /** Open (authenticate, if encrypted) a chunk object and decompress it, without the id check. */
  private unseal(object: Uint8Array, expectedIdHex: string, maxBytes: number): { plain: Buffer; inner: Buffer } {
    if (this.dataKey === null) {
      return { plain: decompressChunk(object, expectedIdHex, maxBytes), inner: Buffer.from(object.buffer, object.byteOffset, object.byteLength) };
    }
    if (object.length < 1 || object[0] !== CHUNK_FORMAT_ENCRYPTED) {
      throw new IntegrityError(
        `chunk ${expectedIdHex}: not an encrypted chunk (format ${object.length < 1 ? "(empty object)" : `0x${object[0]!.toString(16)}`})`,
      );
    }
    let inner: Buffer;
    try {
      inner = open(this.dataKey, SEALED_CHUNK, chunkKey(expectedIdHex), object);
    } catch (error) {
      if (error instanceof AuthenticationFailure) throw new IntegrityError(`chunk ${expectedIdHex}: ${error.message}`);
      throw error;
    }
    return { plain: decompressChunk(inner, expectedIdHex, maxBytes), inner };
  }

  /** The object to store for a chunk whose inner 0x01 object (from decodeWithInner) is `inner` and whose id here is `id`. */
  encodeFromInner(inner: Buffer, id: Uint8Array): Buffer {
    if (this.dataKey === null) return inner;
    return seal(this.dataKey, SEALED_CHUNK, chunkKey(Buffer.from(id).toString("hex")), inner);
  }

  /** True when `object` has the format this codec writes (a guard against mixing kinds). */
  isOwnFormat(object: Uint8Array): boolean {
    return object[0] === (this.encrypted ? CHUNK_FORMAT_ENCRYPTED : CHUNK_FORMAT_ZSTD);
  }
}
