/**
 * The per-chunk CPU work of a backup spread over the cores:
 *  - ids (SHA-256, or HMAC-SHA256 in an encrypted repository) on libuv's thread pool
 *    through WebCrypto, so the main thread only reads and cuts chunks;
 *  - the known-set lookup on the main thread (a binary search);
 *  - encoding of NEW chunks only (zstd, then AES-256-GCM when encrypted) in a pool of
 *    worker threads, started at the first new chunk: an unchanged re-backup starts none
 *    (each worker is a V8 isolate of ~40 MB and needs a copy of every chunk it encodes).
 * The codec spec (compression level and, for an encrypted repository, the data and id
 * keys) goes to each worker in workerData; it is key material and never logged.
 */
import { Worker } from "node:worker_threads";
import { attachedChunkCodec, ChunkCodec } from "../repository/chunk-codec.js";
import type { ChunkIdSet } from "../repository/chunk-id-set.js";
import type { ChunkProcessor, ProcessedChunk } from "./chunk-processor.js";

interface Reply {
  seq: number;
  object?: Uint8Array;
  error?: string;
}

interface Pending {
  resolve: (object: Buffer) => void;
  reject: (error: Error) => void;
}

export class WorkerChunkProcessor implements ChunkProcessor {
  private readonly codec: ChunkCodec;
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private failed: Error | null = null;
  private closed = false;

  /**
   * `codec`: the repository's ChunkCodec, or (older callers) a compression level, in
   * which case the codec attached to `known` is used if there is one.
   */
  constructor(
    private readonly known: ChunkIdSet,
    codec: ChunkCodec | number,
    private readonly threads: number,
  ) {
    this.codec = codec instanceof ChunkCodec ? codec : (attachedChunkCodec(known) ?? new ChunkCodec({ compressionLevel: codec, keys: null }));
  }

  async process(plain: Buffer): Promise<ProcessedChunk> {
    if (this.failed) throw this.failed;
    // Copy now: `plain` is a view into a read buffer that will be reused. The copy is
    // what a worker gets (transferred, not copied again) if the chunk is new.
    const copy = new Uint8Array(plain.length);
    copy.set(plain);
    const id = await this.codec.idAsync(copy);
    if (this.known.has(id)) return { id, object: null };
    return { id, object: await this.encode(copy, id) };
  }

  private encode(plain: Uint8Array, id: Buffer): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.workers.length === 0) this.start();
    let target = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[target]!) target = i;
    const seq = this.seq++;
    this.load[target]!++;
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[target]!.postMessage({ seq, data: plain.buffer, id: new Uint8Array(id) }, [plain.buffer as ArrayBuffer]);
    });
  }

  private start(): void {
    const spec = this.codec.workerSpec();
    for (let i = 0; i < Math.max(1, this.threads); i++) {
      const worker = new Worker(new URL("./chunk-worker.js", import.meta.url), { workerData: { codec: spec } });
      worker.on("message", (reply: Reply) => this.onReply(i, reply));
      worker.on("error", (error) => this.fail(error));
      worker.on("exit", (code) => {
        if (code !== 0 && !this.closed) this.fail(new Error(`chunk worker exited with code ${code}`));
      });
      this.workers.push(worker);
      this.load.push(0);
    }
  }

  private onReply(worker: number, reply: Reply): void {
    this.load[worker]!--;
    const waiter = this.pending.get(reply.seq);
    if (!waiter) return;
    this.pending.delete(reply.seq);
    if (reply.error !== undefined || reply.object === undefined) {
      waiter.reject(new Error(`chunk worker: ${reply.error ?? "no result"}`));
      return;
    }
    waiter.resolve(Buffer.from(reply.object.buffer, reply.object.byteOffset, reply.object.byteLength));
  }

  private fail(error: Error): void {
    if (this.failed) return;
    this.failed = error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
