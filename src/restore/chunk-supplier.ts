/**
 * Where a restored chunk's bytes come from: nowhere for a chunk of zeros, a seed when its
 * bytes at the entry's range hash to the chunk id, else the repository (through its
 * verified reads; a fetch of the same id already in flight is shared).
 */
import { PloopvaultError } from "../errors.js";
import type { Manifest, ManifestEntry } from "../manifest/format.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import type { Seed } from "./seed.js";

export type ChunkEntry = Extract<ManifestEntry, { kind: "chunk" }>;

export function chunkEntries(manifest: Manifest): ChunkEntry[] {
  return manifest.entries.filter((e): e is ChunkEntry => e.kind === "chunk");
}

export class ChunkSupplier {
  fetchedChunks = 0;
  seededChunks = 0;
  private readonly fetching = new Map<string, Promise<Buffer>>();
  private readonly zeroId: Buffer;

  constructor(
    private readonly repo: Repository,
    readonly ref: BackupRef,
    private readonly seed: Seed | null,
  ) {
    // Long runs of zeros inside allocated clusters are cut at the chunker's maximum.
    this.zeroId = repo.chunkId(Buffer.alloc(repo.config.chunker.maxSize));
  }

  /** A max-size chunk of zeros: its bytes are known without a fetch. */
  isZeroChunk(entry: ChunkEntry): boolean {
    return entry.length === this.repo.config.chunker.maxSize && entry.id.equals(this.zeroId);
  }

  /** Whether `bytes` are the chunk of `entry` (the repository's chunk id, ChunkCodec.idToCheck). */
  async holds(entry: ChunkEntry, bytes: Buffer): Promise<boolean> {
    return (await this.repo.chunkCodec.idToCheck(bytes)).equals(entry.id);
  }

  /** The plain bytes of `entry`, or null for a chunk of zeros (nothing to write). */
  async get(entry: ChunkEntry): Promise<Buffer | null> {
    if (this.isZeroChunk(entry)) return null;
    if (this.seed !== null) {
      const candidate = Buffer.allocUnsafe(entry.length);
      await this.seed.read(entry.offset, candidate);
      if (await this.holds(entry, candidate)) {
        this.seededChunks++;
        return candidate;
      }
    }
    return this.fetch(entry);
  }

  /** The chunk of `entry` from the repository, verified against its id. */
  async fetch(entry: ChunkEntry): Promise<Buffer> {
    const idHex = entry.id.toString("hex");
    let fetch = this.fetching.get(idHex);
    if (fetch === undefined) {
      fetch = this.repo.getChunk(idHex, this.ref).finally(() => this.fetching.delete(idHex));
      this.fetching.set(idHex, fetch);
      this.fetchedChunks++;
    }
    const plain = await fetch;
    if (plain.length !== entry.length) {
      throw new PloopvaultError(`chunk ${idHex} has ${plain.length} bytes, manifest of ${this.ref.ct}/${this.ref.id} says ${entry.length}`);
    }
    return plain;
  }
}
