/**
 * Per-chunk work of a backup, behind one interface with two implementations: inline on
 * the calling thread (InlineChunkProcessor, below), and a pool of worker threads
 * (worker-processor.ts) that keeps both cores busy while the main thread reads.
 *  - scan: cut a whole block of the disk from a fresh chunker state (candidate cuts,
 *    src/chunker/stitch.ts) and compute the id of every chunk between them;
 *  - process: the id of one chunk and, only if the repository does not know it yet, its
 *    encoding (zstd, then AES-256-GCM when encrypted);
 *  - encode: the encoding of a chunk whose id is already known to be new.
 * Both take the repository's ChunkCodec explicitly: ids are in the repository's id space
 * (SHA-256, or HMAC-SHA256 in an encrypted repository), and Repository.putChunkObject
 * refuses an object of the wrong kind.
 */
import { candidateCuts } from "../chunker/stitch.js";
import type { ChunkerParams } from "../chunker/params.js";
import type { ChunkCodec } from "../repository/chunk-codec.js";
import type { ChunkIdSet } from "../repository/chunk-id-set.js";

export interface ProcessedChunk {
  id: Buffer;
  /** The object to store, or null when the id is in the known set. */
  object: Buffer | null;
}

/** A scanned block: its candidate cuts and the ids of the chunks ending there. */
export interface ScannedBlock {
  /** The block itself (back from a worker, which had it transferred). */
  block: Buffer;
  /** Candidate cut ends, block-relative (src/chunker/stitch.ts). */
  cuts: Uint32Array;
  /** 32 bytes per candidate: the id of the chunk ending at cuts[i]. */
  ids: Buffer;
}

export interface ChunkProcessor {
  /** How many blocks can be worked on at once (the read-ahead depth follows it). */
  readonly parallelism: number;
  /**
   * Candidate cuts and chunk ids of the first `length` bytes of `block`. The buffer may be
   * transferred to a worker and back: do not touch it until this resolves.
   */
  scan(block: ArrayBuffer, length: number, params: ChunkerParams): Promise<ScannedBlock>;
  /**
   * `plain` is a view into a reusable read buffer, valid only until process() returns its
   * promise: an asynchronous implementation must copy it synchronously.
   */
  process(plain: Buffer): Promise<ProcessedChunk>;
  /** The object of a chunk known to be new; `plain` must own its ArrayBuffer (it may be transferred). */
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

export class InlineChunkProcessor implements ChunkProcessor {
  readonly parallelism = 1;

  constructor(
    private readonly known: ChunkIdSet,
    private readonly codec: ChunkCodec,
  ) {}

  async scan(block: ArrayBuffer, length: number, params: ChunkerParams): Promise<ScannedBlock> {
    const bytes = Buffer.from(block, 0, length);
    const { cuts, ids } = scanBlock(bytes, params, this.codec);
    return { block: bytes, cuts, ids: Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength) };
  }

  async process(plain: Buffer): Promise<ProcessedChunk> {
    const id = this.codec.id(plain);
    return { id, object: this.known.has(id) ? null : this.codec.encode(plain, id) };
  }

  async encode(plain: Uint8Array, id: Buffer): Promise<Buffer> {
    return this.codec.encode(plain, id);
  }

  async close(): Promise<void> {}
}
