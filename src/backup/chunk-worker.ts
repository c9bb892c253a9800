/**
 * Worker thread body for WorkerChunkProcessor (worker-processor.ts). Two jobs:
 *  - scan: cut a block of the disk from a fresh chunker state (candidate cuts, see
 *    src/chunker/stitch.ts), compute the id of every chunk between them and encode the
 *    chunks not in the known set (workerData.known: shared, read-only here);
 *  - encode: compress (and, in an encrypted repository, encrypt) one new chunk.
 * Buffers travel by transfer, not copy; a block to scan is shared memory (read here, in
 * place, while the main thread waits for the result).
 * workerData.codec holds key material: never log it, never echo it in errors.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { ChunkerParams } from "../chunker/params.js";
import { ChunkCodec, type ChunkCodecSpec } from "../repository/chunk-codec.js";
import { ChunkIdSet, type SharedChunkIds } from "../repository/chunk-id-set.js";
import { EncodeScratch, encodeNewCandidates, scanBlock } from "./chunk-processor.js";
import { errorLine } from "../errors.js";
import { youngGenerationCollector } from "../util/young-gc.js";

interface WorkerInit {
  codec: ChunkCodecSpec;
  known: SharedChunkIds;
}
type Job =
  | { kind: "known"; known: SharedChunkIds }
  | { kind: "encode"; seq: number; data: ArrayBuffer; id: Uint8Array }
  | { kind: "scan"; seq: number; data: SharedArrayBuffer; length: number; params: ChunkerParams; encodeFrom: number };

const init = workerData as WorkerInit;
const codec = new ChunkCodec(init.codec);
// The backup's known set; a pooled worker gets the next backup's (a "known" message).
let known = ChunkIdSet.fromShared(init.known);
const scratch = new EncodeScratch();
// Frees the backing stores of buffers already transferred away (src/util/young-gc.ts).
const collectYoung = youngGenerationCollector();

parentPort!.on("message", (job: Job) => {
  if (job.kind === "known") {
    known = ChunkIdSet.fromShared(job.known);
    return;
  }
  try {
    if (job.kind === "scan") {
      const block = new Uint8Array(job.data, 0, job.length);
      const { cuts, ids } = scanBlock(block, job.params, codec);
      const objects = encodeNewCandidates(block, cuts, ids, job.encodeFrom, known, codec, scratch);
      parentPort!.postMessage({ seq: job.seq, cuts, ids, objects: objects.data, objectEnds: objects.ends }, [
        cuts.buffer,
        ids.buffer,
        objects.data.buffer,
        objects.ends.buffer,
      ]);
      collectYoung?.();
      return;
    }
    const object = codec.encode(new Uint8Array(job.data), job.id);
    // Transfer the encoded bytes back instead of copying them.
    const copy = new Uint8Array(object.length);
    copy.set(object);
    parentPort!.postMessage({ seq: job.seq, object: copy }, [copy.buffer]);
  } catch (error) {
    parentPort!.postMessage({ seq: job.seq, error: errorLine(error) });
  }
});
