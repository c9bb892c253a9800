/**
 * Worker thread body for WorkerChunkProcessor: hash, look up in the shared known set,
 * compress new chunks. Messages: {seq, data: ArrayBuffer} in, {seq, id, object|null} out.
 */
import { parentPort, workerData } from "node:worker_threads";
import { chunkId, encodeChunk } from "../repository/chunk-codec.js";
import { ChunkIdSet } from "../repository/chunk-id-set.js";

interface WorkerInit {
  known: SharedArrayBuffer;
  compressionLevel: number;
}
interface Job {
  seq: number;
  data: ArrayBuffer;
}

const init = workerData as WorkerInit;
const known = ChunkIdSet.fromSortedBuffer(Buffer.from(init.known));

parentPort!.on("message", (job: Job) => {
  try {
    const plain = Buffer.from(job.data);
    const id = chunkId(plain);
    if (known.has(id)) {
      parentPort!.postMessage({ seq: job.seq, id: new Uint8Array(id), object: null });
      return;
    }
    const object = encodeChunk(plain, init.compressionLevel);
    // Transfer the compressed bytes back instead of copying them.
    const copy = new Uint8Array(object.length);
    copy.set(object);
    parentPort!.postMessage({ seq: job.seq, id: new Uint8Array(id), object: copy }, [copy.buffer]);
  } catch (error) {
    parentPort!.postMessage({ seq: job.seq, error: error instanceof Error ? error.message : String(error) });
  }
});
