/**
 * Worker thread body for WorkerChunkProcessor: encode a new chunk (zstd, then AES-256-GCM
 * in an encrypted repository). Messages: {seq, data: ArrayBuffer, id} in, {seq, object}
 * out. workerData.codec holds key material: never log it, never echo it in errors.
 */
import { parentPort, workerData } from "node:worker_threads";
import { ChunkCodec, type ChunkCodecSpec } from "../repository/chunk-codec.js";

interface WorkerInit {
  codec: ChunkCodecSpec;
}
interface Job {
  seq: number;
  data: ArrayBuffer;
  id: Uint8Array;
}

const init = workerData as WorkerInit;
const codec = new ChunkCodec(init.codec);

parentPort!.on("message", (job: Job) => {
  try {
    const object = codec.encode(new Uint8Array(job.data), job.id);
    // Transfer the encoded bytes back instead of copying them.
    const copy = new Uint8Array(object.length);
    copy.set(object);
    parentPort!.postMessage({ seq: job.seq, object: copy }, [copy.buffer]);
  } catch (error) {
    parentPort!.postMessage({ seq: job.seq, error: error instanceof Error ? error.message : String(error) });
  }
});
