/**
 * The ChunkProcessor (chunk-processor.ts) of a backup spread over the cores: scans of
 * whole blocks and encodings of NEW chunks run in a pool of worker threads (started on
 * first use; each is a V8 isolate of ~40 MB); ids of single chunks (those the stitcher
 * cut itself, near block starts) on libuv's thread pool through WebCrypto; the known-set
 * lookup on the main thread. The codec spec (compression level and, for an encrypted
 * repository, the data and id keys) goes to each worker in workerData; it is key material
 * and never logged.
 */
import { Worker } from "node:worker_threads";
import type { ChunkCodec } from "../repository/chunk-codec.js";
import type { ChunkerParams } from "../chunker/params.js";
import type { ChunkIdSet } from "../repository/chunk-id-set.js";
import type { ChunkProcessor, ProcessedChunk, ScannedBlock } from "./chunk-processor.js";

interface Reply {
  seq: number;
  object?: Uint8Array;
  cuts?: Uint32Array;
  ids?: Uint8Array;
  data?: ArrayBuffer;
  error?: string;
}

interface Pending {
  resolve: (reply: Reply) => void;
  reject: (error: Error) => void;
}

export class WorkerChunkProcessor implements ChunkProcessor {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private failed: Error | null = null;
  private closed = false;

  constructor(
    private readonly known: ChunkIdSet,
    private readonly codec: ChunkCodec,
    private readonly threads: number,
  ) {}

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

  get parallelism(): number {
    return Math.max(1, this.threads);
  }

  /** Encode a new chunk in a worker; `plain` must own its ArrayBuffer (it is transferred). */
  async encode(plain: Uint8Array, id: Buffer): Promise<Buffer> {
    const reply = await this.request({ kind: "encode", data: plain.buffer, id: new Uint8Array(id) }, [plain.buffer as ArrayBuffer]);
    if (reply.object === undefined) throw new Error("chunk worker: no encoded object");
    return Buffer.from(reply.object.buffer, reply.object.byteOffset, reply.object.byteLength);
  }

  /**
   * Candidate cuts and chunk ids of the first `length` bytes of `block` (transferred to a
   * worker and back: do not touch it until this resolves).
   */
  async scan(block: ArrayBuffer, length: number, params: ChunkerParams): Promise<ScannedBlock> {
    const reply = await this.request({ kind: "scan", data: block, length, params }, [block]);
    if (reply.cuts === undefined || reply.ids === undefined || reply.data === undefined) throw new Error("chunk worker: incomplete scan result");
    return { block: Buffer.from(reply.data, 0, length), cuts: reply.cuts, ids: Buffer.from(reply.ids.buffer, reply.ids.byteOffset, reply.ids.byteLength) };
  }

  private request(message: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<Reply> {
    if (this.failed) return Promise.reject(this.failed);
    // Never start workers after close(): nothing would terminate them.
    if (this.closed) return Promise.reject(new Error("chunk worker pool already closed"));
    if (this.workers.length === 0) this.start();
    let target = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[target]!) target = i;
    const seq = this.seq++;
    this.load[target]!++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[target]!.postMessage({ ...message, seq }, transfer);
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
    if (reply.error !== undefined) {
      waiter.reject(new Error(`chunk worker: ${reply.error}`));
      return;
    }
    waiter.resolve(reply);
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
