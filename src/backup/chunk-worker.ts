/**
 * Worker thread body for WorkerChunkProcessor: compute the id (SHA-256 or HMAC-SHA256),
 * look it up in the shared known set, encode new chunks (zstd, then AES-256-GCM in an
 * encrypted repository). Messages: {seq, data: ArrayBuffer} in, {seq, id, object|null}
 * out. workerData.codec holds key material: never log it, never echo it in errors.
 */
import { parentPort, workerData } from "node:worker_threads";
import { ChunkCodec, type ChunkCodecSpec } from "../repository/chunk-codec.js";
import { ChunkIdSet } from "../repository/chunk-id-set.js";

interface WorkerInit {
  known: SharedArrayBuffer;
  codec: ChunkCodecSpec;
}
interface Job {
  seq: number;
  data: ArrayBuffer;
}

const init = workerData as WorkerInit;
const known = ChunkIdSet.fromSortedBuffer(Buffer.from(init.known));
const codec = new ChunkCodec(init.codec);

parentPort!.on("message", (job: Job) => {
  try {
    const plain = Buffer.from(job.data);
    const id = codec.id(plain);
    if (known.has(id)) {
      parentPort!.postMessage({ seq: job.seq, id: new Uint8Array(id), object: null });
      return;
    }
    const object = codec.encode(plain, id);
    // Transfer the encoded bytes back instead of copying them.
    const copy = new Uint8Array(object.length);
    copy.set(object);
    parentPort!.postMessage({ seq: job.seq, id: new Uint8Array(id), object: copy }, [copy.buffer]);
  } catch (error) {
    parentPort!.postMessage({ seq: job.seq, error: error instanceof Error ? error.message : String(error) });
  }
});
