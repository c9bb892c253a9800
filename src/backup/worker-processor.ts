/**
 * The ChunkProcessor (chunk-processor.ts) of a backup spread over the cores: scans of
 * whole blocks and encodings of NEW chunks run in a pool of worker threads (started on
 * first use; each is a V8 isolate of ~40 MB); ids of single chunks (those the stitcher
 * cut itself, near block starts) on libuv's thread pool through WebCrypto. Each worker
 * gets the known set once, in shared memory (ChunkIdSet.shared(): the set is immutable,
 * nobody writes it), to encode a scanned block's new chunks in the same pass. The codec
 * spec (compression level and, for an encrypted repository, the data and id keys) goes
 * to each worker in workerData; it is key material and never logged.
 *
 * A run backs up one disk after another: ChunkWorkerPool keeps a finished backup's
 * workers (started, modules loaded, WebAssembly compiled: ~0.1 s) for the next one, which
 * hands them its own known set.
 */
import { Worker } from "node:worker_threads";
import type { ChunkCodec } from "../repository/chunk-codec.js";
import type { ChunkerParams } from "../chunker/params.js";
import { ChunkIdSet } from "../repository/chunk-id-set.js";
import { freeNow } from "../util/early-free.js";
import type { ChunkProcessor, ProcessedChunk, ScannedBlock } from "./chunk-processor.js";

interface Reply {
  seq: number;
  object?: Uint8Array;
  cuts?: Uint32Array;
  ids?: Uint8Array;
  objects?: Uint8Array;
  objectEnds?: Uint32Array;
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
  // encodeOwned() and scan() wrap buffers transferred from a worker, exactly sized
  readonly encodedBuffersOwned = true;

  constructor(
    private known: ChunkIdSet,
    private readonly codec: ChunkCodec,
    private readonly threads: number,
    /** Where close() returns healthy idle workers instead of terminating them. */
    private readonly pool: ChunkWorkerPool | null = null,
  ) {}

  /** Reopen a closed, idle processor for another backup with its known set (ChunkWorkerPool). */
  reopen(known: ChunkIdSet): void {
    if (!this.reusable) throw new Error("chunk worker pool: reopening a processor that is not idle");
    this.known = known;
    this.closed = false;
    if (this.workers.length === 0) return; // started with the first request, with this set
    const shared = known.shared();
    for (const worker of this.workers) worker.postMessage({ kind: "known", known: shared });
  }

  /**
   * Start the workers now, with an empty known set, and stay closed (idle): for
   * ChunkWorkerPool.prestart(), before any backup needs them. reopen() gives them the set.
   */
  startIdle(): void {
    if (this.workers.length === 0 && this.failed === null) this.start();
    this.closed = true;
  }

  /** Closed with no request outstanding and no worker failed: its workers may serve another backup. */
  get reusable(): boolean {
    return this.closed && this.failed === null && this.pending.size === 0;
  }

  async process(plain: Buffer): Promise<ProcessedChunk> {
    if (this.failed) throw this.failed;
    // Copy now: `plain` is a view into a read buffer that will be reused. The copy is
    // what a worker gets (transferred, not copied again) if the chunk is new.
    const copy = new Uint8Array(plain);
    const id = await this.codec.idAsync(copy);
    if (this.known.has(id)) {
      // hashed (the hash read its own copy of the bytes) and not needed: free it now
      freeNow(copy.buffer);
      return { id, object: null };
    }
    return { id, object: await this.encodeOwned(copy, id) };
  }

  get parallelism(): number {
    return Math.max(1, this.threads);
  }

  /** Encode a new chunk in a worker; `plain` is copied now (it may be a view of a reused buffer). */
  encode(plain: Uint8Array, id: Buffer): Promise<Buffer> {
    return this.encodeOwned(new Uint8Array(plain), id);
  }

  /** encode() of a chunk that owns its whole ArrayBuffer, which is transferred. */
  private async encodeOwned(plain: Uint8Array, id: Buffer): Promise<Buffer> {
    const reply = await this.request({ kind: "encode", data: plain.buffer, id: new Uint8Array(id) }, [plain.buffer as ArrayBuffer]);
    if (reply.object === undefined) throw new Error("chunk worker: no encoded object");
    return Buffer.from(reply.object.buffer, reply.object.byteOffset, reply.object.byteLength);
  }

  /**
   * Candidate cuts and chunk ids of the first `length` bytes of `block` (shared with a
   * worker, not copied: do not touch it until this resolves).
   */
  async scan(block: SharedArrayBuffer, length: number, params: ChunkerParams, encodeFrom: number): Promise<ScannedBlock> {
    const reply = await this.request({ kind: "scan", data: block, length, params, encodeFrom }, []);
    const { cuts, ids, objects, objectEnds } = reply;
    if (cuts === undefined || ids === undefined || objects === undefined || objectEnds === undefined) {
      throw new Error("chunk worker: incomplete scan result");
    }
    if (objectEnds.length !== cuts.length || (objectEnds.length > 0 && objectEnds[objectEnds.length - 1] !== objects.length)) {
      throw new Error("chunk worker: scan result with inconsistent objects");
    }
    return {
      block: Buffer.from(block, 0, length),
      cuts,
      ids: Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength),
      objects: { data: Buffer.from(objects.buffer, objects.byteOffset, objects.byteLength), ends: objectEnds },
    };
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
    const known = this.known.shared();
    for (let i = 0; i < Math.max(1, this.threads); i++) {
      const worker = new Worker(new URL("./chunk-worker.js", import.meta.url), { workerData: { codec: spec, known } });
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
    if (this.pool !== null && this.reusable && this.workers.length > 0) {
      this.pool.release(this);
      return;
    }
    await this.terminate();
  }

  async terminate(): Promise<void> {
    this.closed = true;
    const workers = this.workers.splice(0);
    this.load.length = 0;
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/**
 * Chunk workers kept from one backup of a run to the next (one repository, so one codec).
 * acquire() gives an idle processor (or a new one); its close() brings it back unless a
 * worker failed or a request is still outstanding (an aborted backup), which terminate.
 * close() of the pool terminates the idle ones; processors still in use terminate at their
 * own close().
 */
export class ChunkWorkerPool {
  private readonly idle: WorkerChunkProcessor[] = [];
  private closed = false;

  constructor(
    private readonly codec: ChunkCodec,
    private readonly threads: number,
  ) {}

  acquire(known: ChunkIdSet): WorkerChunkProcessor {
    for (let processor = this.idle.pop(); processor !== undefined; processor = this.idle.pop()) {
      if (processor.reusable) {
        processor.reopen(known);
        return processor;
      }
      void processor.terminate(); // a prestarted worker that failed since
    }
    return new WorkerChunkProcessor(known, this.codec, this.threads, this);
  }

  /**
   * Start a set of workers now, while the run does other work first (repository, lock,
   * descriptor, known set): their start-up (~0.05 s; ~0.1 s to the first block scanned)
   * is then off the first backup's path. For runs that will read a disk.
   */
  prestart(): void {
    if (this.closed || this.idle.length > 0) return;
    const processor = new WorkerChunkProcessor(ChunkIdSet.empty(), this.codec, this.threads, this);
    processor.startIdle();
    this.idle.push(processor);
  }

  /** Called by a processor's close(). */
  release(processor: WorkerChunkProcessor): void {
    if (this.closed) void processor.terminate();
    else this.idle.push(processor);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.idle.splice(0).map((p) => p.terminate()));
  }
}
