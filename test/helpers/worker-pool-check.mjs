// Runs ChunkWorkerPool (src/backup/worker-processor.ts) from the build (its workers load
// dist/src/backup/chunk-worker.js) and prints what test/repository/chunk-worker-pool.test.ts checks.
import { randomBytes } from "node:crypto";
import { scannedObject } from "../../dist/src/backup/chunk-processor.js";
import { ChunkWorkerPool } from "../../dist/src/backup/worker-processor.js";
import { chunkerParamsForAverage } from "../../dist/src/chunker/index.js";
import { ChunkCodec } from "../../dist/src/repository/chunk-codec.js";
import { ChunkIdSetBuilder } from "../../dist/src/repository/chunk-id-set.js";

const params = chunkerParamsForAverage(16 << 10);
const codec = new ChunkCodec({ compressionLevel: 3, keys: null });
const setOf = (ids) => {
  const builder = new ChunkIdSetBuilder();
  for (const id of ids) builder.add(id);
  return builder.build();
};
async function scan(processor, block) {
  const buffer = new SharedArrayBuffer(block.length);
  new Uint8Array(buffer).set(block);
  const scanned = await processor.scan(buffer, block.length, params, 0);
  const ids = [];
  const encoded = [];
  for (let i = 0; i < scanned.cuts.length; i++) {
    ids.push(Buffer.from(scanned.ids.subarray(i * 32, i * 32 + 32)));
    encoded.push(scannedObject(scanned, i) !== undefined);
  }
  return { ids, encoded };
}

const result = {};
const pool = new ChunkWorkerPool(codec, 2);
const block = randomBytes(600 << 10);
const first = pool.acquire(setOf([]));
const before = await scan(first, block);
result.candidates = before.ids.length;
result.firstEncoded = before.encoded;
await first.close();
// the next backup knows every other chunk of the block
const second = pool.acquire(setOf(before.ids.filter((_, i) => i % 2 === 0)));
result.sameProcessor = second === first;
result.secondEncoded = (await scan(second, block)).encoded;
await second.close();

// closed with a request outstanding (an aborted backup): not handed out again
const aborted = pool.acquire(setOf([]));
result.abortedIsIdleOne = aborted === first;
const buffer = new SharedArrayBuffer(4 << 20);
new Uint8Array(buffer).set(randomBytes(4 << 20));
aborted.scan(buffer, buffer.byteLength, params, 0).catch(() => undefined);
await aborted.close();
result.abortedReusable = aborted.reusable;
const next = pool.acquire(setOf([]));
result.nextIsAborted = next === aborted;
await next.close();
await pool.close();

// workers started before any backup (prestart) get the first backup's known set
const early = new ChunkWorkerPool(codec, 2);
early.prestart();
const prestarted = early.acquire(setOf(before.ids.filter((_, i) => i % 2 === 0)));
result.prestartedEncoded = (await scan(prestarted, block)).encoded;
await prestarted.close();
await early.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
