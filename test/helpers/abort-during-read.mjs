// Run by test/faults/abort-workers.test.ts: a backup through worker threads whose signal
// aborts while reads are still waiting on the read throttle. The reads finish after the
// pipeline gave up; this process must then exit by itself (no worker left running).
import { randomBytes } from "node:crypto";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { backupDisk } from "../../dist/src/backup/pipeline.js";
import { chunkerParamsForAverage } from "../../dist/src/chunker/index.js";
import { newRepositoryConfig } from "../../dist/src/repository/config.js";
import { ManifestCache } from "../../dist/src/repository/known-chunks.js";
import { Repository } from "../../dist/src/repository/repository.js";
import { MemoryStore } from "../../dist/src/uploader/memory.js";
import { memorySource } from "./memory-source.mjs";

const CLUSTER = 64 << 10;
const bytes = randomBytes(64 * CLUSTER);

const repo = await Repository.init(new MemoryStore("abort"), newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
const cache = ManifestCache.forRepository(repo, await mkdtemp(join(tmpdir(), "pv-abort-")));
const stop = new AbortController();
let reads = 0;
const readThrottle = () => {
  reads++;
  if (reads === 1) return Promise.resolve();
  stop.abort(); // later reads wait on the throttle past the abort
  return new Promise((resolve) => setTimeout(resolve, 300));
};
const source = memorySource(bytes, CLUSTER, "abort");
try {
  await backupDisk(repo, cache, source, {
    host: "node1",
    time: new Date("2026-02-01T00:00:00Z"),
    workerThreads: 2,
    uploadConcurrency: 2,
    signal: stop.signal,
    readThrottle,
    readBlockBytes: 1 << 20,
  });
  console.log("finished");
} catch (error) {
  console.log(`rejected: ${error.message}`);
}
