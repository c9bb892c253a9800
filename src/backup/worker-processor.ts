/**
 * A pool of worker threads doing the per-chunk CPU work (id: SHA-256 or HMAC-SHA256,
 * known-set lookup, zstd, AES-256-GCM). The known set is shared read-only through a
 * SharedArrayBuffer, so workers skip compression of chunks the repository already has
 * without a round trip. The codec spec (compression level and, for an encrypted
 * repository, the data and id keys) goes to each worker in workerData; it is key
 * material and never logged.
 */
import { Worker } from "node:worker_threads";
import { attachedChunkCodec, ChunkCodec, type ChunkCodecSpec } from "../repository/chunk-codec.js";
import type { ChunkIdSet } from "../repository/chunk-id-set.js";
import type { ChunkProcessor, ProcessedChunk } from "./chunk-processor.js";

interface Reply {
  seq: number;
  id?: Uint8Array;
  object?: Uint8Array | null;
  error?: string;
}

interface Pending {
  resolve: (value: ProcessedChunk) => void;
  reject: (error: Error) => void;
}

export class WorkerChunkProcessor implements ChunkProcessor {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private failed: Error | null = null;

  /**
   * `codec`: the repository's ChunkCodec, or (older callers) a compression level, in
   * which case the codec attached to `known` is used if there is one.
   */
  constructor(known: ChunkIdSet, codec: ChunkCodec | number, threads: number) {
    const resolved = codec instanceof ChunkCodec ? codec : attachedChunkCodec(known);
    const spec: ChunkCodecSpec = resolved?.workerSpec() ?? { compressionLevel: codec as number, keys: null };
    const shared = new SharedArrayBuffer(known.buffer.length);
    Buffer.from(shared).set(known.buffer);
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL("./chunk-worker.js", import.meta.url), { workerData: { known: shared, codec: spec } });
      worker.on("message", (reply: Reply) => this.onReply(i, reply));
      worker.on("error", (error) => this.fail(error));
      worker.on("exit", (code) => {
        if (code !== 0) this.fail(new Error(`chunk worker exited with code ${code}`));
      });
      this.workers.push(worker);
      this.load.push(0);
    }
  }

  process(plain: Buffer): Promise<ProcessedChunk> {
    if (this.failed) return Promise.reject(this.failed);
    // Copy now: `plain` is a view into a read buffer that will be reused.
    const copy = new Uint8Array(plain.length);
    copy.set(plain);
    let target = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[target]!) target = i;
    const seq = this.seq++;
    this.load[target]!++;
    return new Promise<ProcessedChunk>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[target]!.postMessage({ seq, data: copy.buffer }, [copy.buffer]);
    });
  }

  private onReply(worker: number, reply: Reply): void {
    this.load[worker]!--;
    const waiter = this.pending.get(reply.seq);
    if (!waiter) return;
    this.pending.delete(reply.seq);
    if (reply.error !== undefined || reply.id === undefined) {
      waiter.reject(new Error(`chunk worker: ${reply.error ?? "no result"}`));
      return;
    }
    const id = Buffer.from(reply.id.buffer, reply.id.byteOffset, reply.id.byteLength);
    const object = reply.object ? Buffer.from(reply.object.buffer, reply.object.byteOffset, reply.object.byteLength) : null;
    waiter.resolve({ id, object });
  }

  private fail(error: Error): void {
    if (this.failed) return;
    this.failed = error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
