// Run by test/unit/early-free.test.ts against the built pipeline: a backup through chunk
// workers into an in-memory store that records every chunk body it is given (it stores a
// copy). Mode "ok": prints how many of those bodies were freed (detached) by the time the
// backup returned, and whether the backup restores bit-identical. Mode "fail": the fifth
// chunk upload fails; prints whether that body's memory was left alone.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { backupDisk } from "../../dist/src/backup/pipeline.js";
import { chunkerParamsForAverage } from "../../dist/src/chunker/index.js";
import { newRepositoryConfig } from "../../dist/src/repository/config.js";
import { ManifestCache } from "../../dist/src/repository/known-chunks.js";
import { Repository } from "../../dist/src/repository/repository.js";
import { restoreToStream } from "../../dist/src/restore/restore.js";
import { MemoryStore } from "../../dist/src/uploader/memory.js";
import { memorySource } from "./memory-source.mjs";

const mode = process.argv[2];
const CLUSTER = 64 << 10;
// random clusters, each written twice: chunks repeat within blocks and across them
const half = randomBytes(48 * CLUSTER);
const bytes = Buffer.concat([half, half]);

class RecordingStore extends MemoryStore {
  bodies = [];
  failed = null;
  async put(key, body, options) {
    if (key.startsWith("chunks/")) {
      this.bodies.push(body);
      if (mode === "fail" && this.bodies.length === 5) {
        this.failed = body;
        throw new Error("injected upload failure");
      }
    }
    return super.put(key, body, options);
  }
}

const store = new RecordingStore("early-free");
const repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
const state = await mkdtemp(join(tmpdir(), "pv-early-free-"));
const source = memorySource(bytes, CLUSTER, "301");
const freed = (body) => body.buffer.byteLength === 0;
try {
  const { manifest } = await backupDisk(repo, ManifestCache.forRepository(repo, state), source, {
    host: "node1",
    time: new Date("2026-02-01T00:00:00Z"),
    workerThreads: 2,
    uploadConcurrency: 3,
    readBlockBytes: 1 << 20,
  });
  const parts = [];
  const out = new Writable({
    write(chunk, _encoding, done) {
      parts.push(Buffer.from(chunk));
      done();
    },
  });
  await restoreToStream(repo, { ct: "301", id: manifest.metadata.id }, manifest, out, { concurrency: 4 });
  const restored = Buffer.concat(parts);
  console.log(
    JSON.stringify({
      mode,
      chunkPuts: store.bodies.length,
      freed: store.bodies.filter(freed).length,
      restoredEqual: restored.equals(bytes),
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ mode, error: error.message, failedBodyFreed: store.failed === null ? null : freed(store.failed) }));
} finally {
  await rm(state, { recursive: true, force: true });
}
