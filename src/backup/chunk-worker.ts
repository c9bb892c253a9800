/**
 * Worker thread body for WorkerChunkProcessor. Two jobs:
 *  - scan: cut a block of the disk from a fresh chunker state (candidate cuts, see
 *    src/chunker/stitch.ts) and compute the id of every chunk between them;
 *  - encode: compress (and, in an encrypted repository, encrypt) one new chunk.
 * Buffers travel by transfer, not copy: a scanned block goes back with its result.
 * workerData.codec holds key material: never log it, never echo it in errors.
 */
import { parentPort, workerData } from "node:worker_threads";
import { candidateCuts } from "../chunker/stitch.js";
import type { ChunkerParams } from "../chunker/params.js";
import { ChunkCodec, type ChunkCodecSpec } from "../repository/chunk-codec.js";

interface WorkerInit {
  codec: ChunkCodecSpec;
}
type Job =
  | { kind: "encode"; seq: number; data: ArrayBuffer; id: Uint8Array }
  | { kind: "scan"; seq: number; data: ArrayBuffer; length: number; params: ChunkerParams };

const init = workerData as WorkerInit;
const codec = new ChunkCodec(init.codec);

parentPort!.on("message", (job: Job) => {
  try {
    if (job.kind === "scan") {
      const block = new Uint8Array(job.data, 0, job.length);
      const cuts = Uint32Array.from(candidateCuts(block, job.params));
      const ids = new Uint8Array(cuts.length * 32);
      let start = 0;
      for (let i = 0; i < cuts.length; i++) {
        ids.set(codec.id(block.subarray(start, cuts[i]!)), i * 32);
        start = cuts[i]!;
      }
      parentPort!.postMessage({ seq: job.seq, cuts, ids, data: job.data }, [cuts.buffer, ids.buffer, job.data]);
      return;
    }
    const object = codec.encode(new Uint8Array(job.data), job.id);
    // Transfer the encoded bytes back instead of copying them.
    const copy = new Uint8Array(object.length);
    copy.set(object);
    parentPort!.postMessage({ seq: job.seq, object: copy }, [copy.buffer]);
  } catch (error) {
    parentPort!.postMessage({ seq: job.seq, error: error instanceof Error ? error.message : String(error) });
  }
});
