/**
 * Per-chunk work of a backup: compute the chunk's id in the repository's id space (SHA-256,
 * or HMAC-SHA256 in an encrypted repository) and, only if the repository does not know it
 * yet, encode it (zstd, then AES-256-GCM when encrypted) into the object to store. Two
 * implementations: inline on the calling thread, and a worker-thread pool
 * (worker-processor.ts) that keeps both cores busy while the main thread reads and cuts.
 *
 * Both take the repository's ChunkCodec explicitly, or find it on the known set that
 * ManifestCache.knownChunks() returned (attachChunkCodec); a set without one (tests) means
 * an unencrypted repository. Repository.putChunkObject refuses an object of the wrong kind,
 * so a mix-up cannot put plaintext into an encrypted repository.
 */
import { attachedChunkCodec, chunkId, ChunkCodec } from "../repository/chunk-codec.js";
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
  private readonly codec: ChunkCodec | undefined;
  private readonly encode: ChunkEncodeFn | undefined;

  /** `encode`: the repository's codec, or (older callers) an encoder of unencrypted objects. */
  constructor(
    private readonly known: ChunkIdSet,
    encode: ChunkEncodeFn | ChunkCodec,
  ) {
    if (encode instanceof ChunkCodec) this.codec = encode;
    else {
      this.codec = attachedChunkCodec(known);
      this.encode = encode;
    }
  }

  async process(plain: Buffer): Promise<ProcessedChunk> {
    if (this.codec !== undefined) {
      const id = this.codec.id(plain);
      return { id, object: this.known.has(id) ? null : this.codec.encode(plain, id) };
    }
    const id = chunkId(plain);
    return { id, object: this.known.has(id) ? null : this.encode!(plain) };
  }

  async close(): Promise<void> {}
}
