// Run as a worker thread by test/repository/chunk-id-set-threads.test.ts: answers whether
// each id it is sent is in the known set it got once, shared, through workerData.
import { parentPort, workerData } from "node:worker_threads";
import { ChunkIdSet } from "../../dist/src/repository/chunk-id-set.js";

const known = ChunkIdSet.fromShared(workerData.known);
parentPort.on("message", (ids) => {
  const answers = [];
  for (let o = 0; o < ids.length; o += 32) answers.push(known.has(ids.subarray(o, o + 32)));
  parentPort.postMessage({ answers, size: known.size, shared: workerData.known.buffer instanceof SharedArrayBuffer });
});
