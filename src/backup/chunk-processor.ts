/**
 * Per-chunk work of a backup, behind one interface with two implementations: inline on
 * the calling thread (InlineChunkProcessor, below), and a pool of worker threads
 * (worker-processor.ts) that keeps both cores busy while the main thread reads.
 *  - scan: cut a whole block of the disk from a fresh chunker state (candidate cuts,
 *    src/chunker/stitch.ts) and compute the id of every chunk between them; a worker also
 *    encodes the candidate chunks that are not in the known set, in the same pass, so the
 *    main thread neither copies them nor asks for their encoding;
 *  - process: the id of one chunk and, only if the repository does not know it yet, its
 *    encoding (zstd, then AES-256-GCM when encrypted);
 *  - encode: the encoding of a chunk whose id is already known to be new.
 * What is known is decided by the caller with its own set: an object a worker encoded
 * only saves work, and a candidate without one is encoded on request.
 * Both take the repository's ChunkCodec explicitly: ids are in the repository's id space
 * (SHA-256, or HMAC-SHA256 in an encrypted repository), and Repository.putChunkObject
 * refuses an object of the wrong kind.
 */
import { candidateCuts } from "../chunker/stitch.js";
import type { ChunkerParams } from "../chunker/params.js";
import type { ChunkCodec } from "../repository/chunk-codec.js";
import type { ChunkIdSet } from "../repository/chunk-id-set.js";
import { freeNow } from "../util/early-free.js";

export interface ProcessedChunk {
  id: Buffer;
  /** The object to store, or null when the id is in the known set. */
  object: Buffer | null;
}

/** A scanned block: its candidate cuts and the ids of the chunks ending there. */
export interface ScannedBlock {
  /** The block itself (a view of the buffer given to scan()). */
  block: Buffer;
  /** Candidate cut ends, block-relative (src/chunker/stitch.ts). */
  cuts: Uint32Array;
  /** 32 bytes per candidate: the id of the chunk ending at cuts[i]. */
  ids: Buffer;
  /**
   * Objects encoded with the scan (worker processor only): candidate i's is
   * data[ends[i-1] (0 for i = 0), ends[i]); empty when it was not encoded (known, a
   * repeat within the block, or before `encodeFrom`).
   */
  objects?: EncodedObjects;
}

export interface EncodedObjects {
  data: Buffer;
  ends: Uint32Array;
}

/** Candidate i's object encoded with its scan, or undefined. */
export function scannedObject(scanned: ScannedBlock, i: number): Buffer | undefined {
  const objects = scanned.objects;
  if (objects === undefined) return undefined;
  const start = i === 0 ? 0 : objects.ends[i - 1]!;
  const end = objects.ends[i]!;
  return end > start ? objects.data.subarray(start, end) : undefined;
}

export interface ChunkProcessor {
  /** How many blocks can be worked on at once (the read-ahead depth follows it). */
  readonly parallelism: number;
  /**
   * Every encoded object it returns (process(), encode()) and every scan's objects.data
   * owns its whole ArrayBuffer, referenced nowhere else: the pipeline frees it as soon as
   * the objects in it are stored (src/util/early-free.ts).
   */
  readonly encodedBuffersOwned: boolean;
  /**
   * Candidate cuts and chunk ids of the first `length` bytes of `block`, which is shared
   * with a worker: do not touch it until this resolves. Candidates from
   * index `encodeFrom` on that are not known may come back encoded (ScannedBlock.objects);
   * the ones before it are likely cut differently by the stitcher (the block does not start
   * at a confirmed cut) and would be encoded in vain.
   */
  scan(block: SharedArrayBuffer, length: number, params: ChunkerParams, encodeFrom: number): Promise<ScannedBlock>;
  /**
   * `plain` is a view into a reusable read buffer, valid only until process() returns its
   * promise: an asynchronous implementation must copy it synchronously.
   */
  process(plain: Buffer): Promise<ProcessedChunk>;
  /** The object of a chunk known to be new; `plain` is valid only until encode() returns its promise, as for process(). */
  encode(plain: Uint8Array, id: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

/** Candidate cuts of a block and the ids of the chunks between them (also the worker's job). */
export function scanBlock(block: Uint8Array, params: ChunkerParams, codec: ChunkCodec): { cuts: Uint32Array<ArrayBuffer>; ids: Uint8Array<ArrayBuffer> } {
  const cuts = Uint32Array.from(candidateCuts(block, params));
  const ids = new Uint8Array(cuts.length * 32);
  let start = 0;
  for (let i = 0; i < cuts.length; i++) {
    ids.set(codec.id(block.subarray(start, cuts[i]!)), i * 32);
    start = cuts[i]!;
  }
  return { cuts, ids };
}

/**
 * The objects of the candidate chunks of a scanned block (scanBlock) from index `from` on
 * that `known` does not hold, packed back to back in one buffer (one transfer, one
 * allocation) with each candidate's end (EncodedObjects); a repeat of an id within the
 * block is encoded once.
 */
export function encodeNewCandidates(
  block: Uint8Array,
  cuts: Uint32Array,
  ids: Uint8Array,
  from: number,
  known: ChunkIdSet,
  codec: ChunkCodec,
  scratch: EncodeScratch = new EncodeScratch(),
): { data: Uint8Array<ArrayBuffer>; ends: Uint32Array<ArrayBuffer> } {
  const ends = new Uint32Array(cuts.length);
  const seen = new Set<string>();
  let at = 0;
  for (let i = 0; i < cuts.length; i++) {
    if (i >= from) {
      const id = ids.subarray(i * 32, i * 32 + 32);
      const key = Buffer.from(id.buffer, id.byteOffset, 32).toString("latin1");
      if (!known.has(id) && !seen.has(key)) {
        seen.add(key);
        const plain = block.subarray(i === 0 ? 0 : cuts[i - 1]!, cuts[i]!);
        const bound = codec.encodedBound(plain.length);
        if (bound !== null) at += codec.encodeInto(plain, id, scratch.room(at, bound), at);
        else {
          const object = codec.encode(plain, id);
          scratch.room(at, object.length).set(object, at);
          at += object.length;
        }
      }
    }
    ends[i] = at;
  }
  return { data: scratch.copyOut(at), ends };
}

/** How much an EncodeScratch grows beyond what it needs at once. */
const GROWTH_STEP = 1 << 20;

/**
 * Where a worker encodes a block's new objects back to back, reused from block to block:
 * one exact-size copy per block goes out (transferred), instead of three fresh buffers per
 * chunk (zstd's output, the object, the packed copy).
 */
export class EncodeScratch {
  private buffer = new Uint8Array(0);

  /**
   * The buffer, with room for `bytes` more after the first `used` (kept when it grows).
   * It grows by what is needed plus GROWTH_STEP, not by doubling: it lives as long as the
   * worker, and doubling left it up to twice a block's objects (8-10 MiB per worker at the
   * peak of a first backup); it reaches its size within the first blocks.
   */
  room(used: number, bytes: number): Uint8Array {
    if (used + bytes > this.buffer.length) {
      const grown = new Uint8Array(used + bytes + GROWTH_STEP);
      grown.set(this.buffer.subarray(0, used));
      freeNow(this.buffer.buffer);
      this.buffer = grown;
    }
    return this.buffer;
  }

  /** A copy of the first `used` bytes in a buffer of their own (the scratch is reused). */
  copyOut(used: number): Uint8Array<ArrayBuffer> {
    return this.buffer.slice(0, used);
  }
}

export class InlineChunkProcessor implements ChunkProcessor {
  readonly parallelism = 1;
  // the codec's output may be a view of memory it reuses
  readonly encodedBuffersOwned = false;

  constructor(
    private readonly known: ChunkIdSet,
    private readonly codec: ChunkCodec,
  ) {}

  /** Encodes nothing ahead: inline, encoding later on request costs the same and never wastes an encode. */
  async scan(block: SharedArrayBuffer, length: number, params: ChunkerParams, _encodeFrom: number): Promise<ScannedBlock> {
    const bytes = Buffer.from(block, 0, length);
    const { cuts, ids } = scanBlock(bytes, params, this.codec);
    return { block: bytes, cuts, ids: Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength) };
  }

  async process(plain: Buffer): Promise<ProcessedChunk> {
    const id = this.codec.id(plain);
    return { id, object: this.known.has(id) ? null : this.codec.encode(plain, id) };
  }

  /** Synchronous inside: `plain` is read before this returns, so it needs no copy. */
  async encode(plain: Uint8Array, id: Buffer): Promise<Buffer> {
    return this.codec.encode(plain, id);
  }

  async close(): Promise<void> {}
}
