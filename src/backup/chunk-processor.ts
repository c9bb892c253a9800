/**
 * Per-chunk work of a backup: hash the plain chunk (its id) and, only if the repository
 * does not know it yet, encode it (zstd) into the object to store. Two implementations:
 * inline on the calling thread, and a worker-thread pool (worker-processor.ts) that keeps
 * both cores busy while the main thread reads and cuts chunks.
 */
import { chunkId } from "../repository/chunk-codec.js";
import type { ChunkIdSet } from "../repository/chunk-id-set.js";

export interface ProcessedChunk {
  id: Buffer;
  /** The object to store, or null when the id is in the known set. */
  object: Buffer | null;
}

export interface ChunkProcessor {
  /**
   * `plain` is a view into a reusable read buffer, valid only until process() returns its
   * promise: an asynchronous implementation must copy it synchronously.
   */
  process(plain: Buffer): Promise<ProcessedChunk>;
  close(): Promise<void>;
}

export type ChunkEncodeFn = (plain: Uint8Array) => Buffer;

export class InlineChunkProcessor implements ChunkProcessor {
  constructor(
    private readonly known: ChunkIdSet,
    private readonly encode: ChunkEncodeFn,
  ) {}

  async process(plain: Buffer): Promise<ProcessedChunk> {
    const id = chunkId(plain);
    return { id, object: this.known.has(id) ? null : this.encode(plain) };
  }

  async close(): Promise<void> {}
}
