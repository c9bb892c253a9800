/**
 * The unit tier (npm run test:unit): backup, restore, prune and check through the real
 * pipeline against the in-memory store and an in-memory disk: no RGW, no ploop, no root.
 * The end-to-end suite proves the same on real images and servers; this tier is for a
 * quick edit-test loop.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backupDisk } from "../../src/backup/pipeline.js";
import { planBackup, readBlocksOf } from "../../src/backup/plan.js";
import { checkRepository } from "../../src/check/check.js";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import { lockTiming } from "../../src/prune/locks.js";
import { runPrune } from "../../src/prune/prune.js";
import { newRepositoryConfig } from "../../src/repository/config.js";
import { ManifestCache } from "../../src/repository/known-chunks.js";
import { CHUNKS_PREFIX } from "../../src/repository/layout.js";
import { Repository } from "../../src/repository/repository.js";
import { restoreToStream } from "../../src/restore/restore.js";
import { MemoryStore } from "../../src/uploader/memory.js";
import type { ObjectStore, PutOptions } from "../../src/uploader/store.js";
import { diskWith, source } from "./memory-disk.js";

async function chunkKeys(store: MemoryStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of store.list(CHUNKS_PREFIX)) keys.push(info.key);
  return keys;
}

async function restoreBytes(repo: Repository, ct: string, id: string): Promise<Buffer> {
  const ref = { ct, id };
  const manifest = await repo.loadManifest(ref);
  const parts: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _encoding, done) {
      parts.push(Buffer.from(chunk));
      done();
    },
  });
  await restoreToStream(repo, ref, manifest, out, { concurrency: 4 });
  return Buffer.concat(parts);
}

describe("pipeline against the in-memory store", () => {
  let state: string;
  let store: MemoryStore;
  let repo: Repository;
  let cache: ManifestCache;
  const options = (time: string) => ({ host: "node1", time: new Date(time), workerThreads: 0, uploadConcurrency: 4 });

  beforeAll(async () => {
    state = await mkdtemp(join(tmpdir(), "pv-unit-"));
    store = new MemoryStore("unit");
    repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
    cache = ManifestCache.forRepository(repo, state);
  });
  afterAll(async () => {
    await rm(state, { recursive: true, force: true });
  });

  it("backs up, restores bit-identical (holes as zeros), and stores an unchanged disk once", async () => {
    const disk = diskWith(48, 1);
    const first = await backupDisk(repo, cache, source(disk, "101"), options("2026-01-02T00:00:00Z"));
    expect(first.stats.holeBytes).toBeGreaterThan(0);
    expect((await restoreBytes(repo, "101", first.manifest.metadata.id)).equals(disk.bytes)).toBe(true);
    const again = await backupDisk(repo, cache, source(disk, "101"), options("2026-01-03T00:00:00Z"));
    expect(again.stats.newChunks).toBe(0);
    expect(again.stats.chunks).toBe(first.stats.chunks);
  });

  it("prune forgets by policy and deletes exactly the chunks only forgotten backups used; check is clean", async () => {
    const old = diskWith(32, 2);
    const oldBackup = await backupDisk(repo, cache, source(old, "102"), options("2026-01-04T00:00:00Z"));
    const current = diskWith(32, 3);
    const newBackup = await backupDisk(repo, cache, source(current, "102"), options("2026-01-05T00:00:00Z"));
    const chunksBefore = await chunkKeys(store);
    const report = await runPrune(repo, {
      policy: { last: 1 },
      ct: "102",
      graceMs: 0,
      waitMs: 0,
      host: "node1",
      timing: lockTiming(),
      log: () => {},
      warn: () => {},
    });
    expect(report.sweep).toBe("done");
    expect(report.forgotten).toBe(1);
    expect(report.chunksDeleted).toBe(oldBackup.stats.newChunks);
    expect((await chunkKeys(store)).length).toBe(chunksBefore.length - oldBackup.stats.newChunks);
    expect((await restoreBytes(repo, "102", newBackup.manifest.metadata.id)).equals(current.bytes)).toBe(true);
    const check = await checkRepository(repo, { readData: true, concurrency: 4 });
    expect(check.damaged).toEqual([]);
    expect(check.chunksMissing + check.chunksCorrupt + check.chunksUnreferenced).toBe(0);
  });

  it("stores chunks with deferred names and flushes them before the side files and the manifest", async () => {
    const events: string[] = [];
    const recorded = new MemoryStore("flush-order");
    const recordingStore: ObjectStore = {
      location: recorded.location,
      put: async (key, body, putOptions?: PutOptions) => {
        events.push(
          `${key.startsWith(CHUNKS_PREFIX) ? "chunk" : `file ${key.slice(key.lastIndexOf("/") + 1)}`}${putOptions?.deferNameSync ? " deferred" : ""}`,
        );
        await recorded.put(key, body, putOptions);
      },
      get: (key) => recorded.get(key),
      getRange: (key, offset, length) => recorded.getRange(key, offset, length),
      stat: (key) => recorded.stat(key),
      list: (prefix) => recorded.list(prefix),
      delete: (keys) => recorded.delete(keys),
      flush: async () => {
        events.push("flush");
      },
      close: () => recorded.close(),
    };
    const flushRepo = await Repository.init(recordingStore, newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
    const flushCache = ManifestCache.forRepository(flushRepo, state);
    events.length = 0;
    const disk = diskWith(24, 9);
    await backupDisk(flushRepo, flushCache, source(disk, "109"), options("2026-01-09T00:00:00Z"));
    const firstFile = events.findIndex((e) => e.startsWith("file"));
    const flush = events.indexOf("flush");
    expect(events.filter((e) => e === "chunk deferred").length).toBeGreaterThan(3);
    expect(events).not.toContain("chunk");
    expect(flush).toBeGreaterThan(events.lastIndexOf("chunk deferred"));
    expect(firstFile).toBeGreaterThan(flush);
    expect(events.slice(firstFile).every((e) => e.startsWith("file") && !e.endsWith("deferred"))).toBe(true);
  });

  it("check --read-data names a backup whose chunk was damaged", async () => {
    const disk = diskWith(16, 4);
    const backup = await backupDisk(repo, cache, source(disk, "103"), options("2026-01-06T00:00:00Z"));
    const ids = new Set(backup.manifest.entries.flatMap((e) => (e.kind === "chunk" ? [e.id.toString("hex")] : [])));
    const key = (await chunkKeys(store)).find((k) => ids.has(k.slice(k.lastIndexOf("/") + 1)));
    expect(key).toBeDefined();
    const body = await store.get(key!);
    body[body.length >> 1] ^= 0xff;
    await store.put(key!, body);
    const check = await checkRepository(repo, { readData: true, concurrency: 4 });
    expect(check.chunksCorrupt).toBe(1);
    expect(check.damaged.map((d) => `${d.ct}/${d.id}`)).toContain(`103/${backup.manifest.metadata.id}`);
  });
});

describe("planBackup (golden)", () => {
  const id = (n: number): Buffer => Buffer.alloc(32, n);
  it("a full read: allocated runs are read, the rest are holes", () => {
    // an 8-cluster disk of 1 KiB clusters; clusters 2-3 and 6 allocated
    const plan = planBackup(
      [
        { offset: 2048, length: 2048 },
        { offset: 6144, length: 1024 },
      ],
      8192,
      null,
      256,
    );
    expect(plan).toEqual([
      { kind: "hole", offset: 0, length: 2048 },
      { kind: "read", offset: 2048, length: 2048 },
      { kind: "hole", offset: 4096, length: 2048 },
      { kind: "read", offset: 6144, length: 1024 },
      { kind: "hole", offset: 7168, length: 1024 },
    ]);
  });

  it("incremental: clean chunks inside a run are reused, chunks over written clusters or too small are read again", () => {
    const entries = [
      { kind: "chunk" as const, offset: 0, length: 1536, id: id(1) }, // clusters 0-1, clean
      { kind: "chunk" as const, offset: 1536, length: 1024, id: id(2) }, // clusters 1-2, cluster 2 written
      { kind: "chunk" as const, offset: 2560, length: 1536, id: id(3) }, // clusters 2-3, cluster 2 written
      { kind: "chunk" as const, offset: 4096, length: 128, id: id(4) }, // below the minimum: read
      { kind: "chunk" as const, offset: 4224, length: 1920, id: id(5) }, // clusters 4-5, clean
      { kind: "hole" as const, offset: 6144, length: 2048 },
    ];
    const written = Uint8Array.from([0, 0, 1, 0, 0, 0, 0, 0]);
    const plan = planBackup([{ offset: 0, length: 6144 }], 8192, { entries, written, clusterBytes: 1024 }, 256);
    expect(plan).toEqual([
      { kind: "reuse", entry: entries[0] },
      { kind: "read", offset: 1536, length: 2688 },
      { kind: "reuse", entry: entries[4] },
      { kind: "hole", offset: 6144, length: 2048 },
    ]);
  });
});

describe("reading the plan's segments", () => {
  it("blocks of each read segment in plan order; only a segment's first block may encode its first candidate", () => {
    const plan = planBackup(
      [
        { offset: 0, length: 2500 },
        { offset: 4096, length: 1024 },
      ],
      8192,
      null,
      256,
    );
    expect(readBlocksOf(plan, 1024)).toEqual([
      { at: 0, size: 1024, encodeFrom: 0 },
      { at: 1024, size: 1024, encodeFrom: 1 },
      { at: 2048, size: 452, encodeFrom: 1 },
      { at: 4096, size: 1024, encodeFrom: 0 },
    ]);
  });

  it("reads ahead across segments: the next segment's block is read before the previous one is stitched", async () => {
    // 64 KiB clusters, every fifth a hole: ~16 read segments of 256 KiB, each one block
    const disk = diskWith(80, 1);
    const repo = await Repository.init(new MemoryStore("ahead"), newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
    const state = await mkdtemp(join(tmpdir(), "pv-ahead-"));
    try {
      let readsStarted = 0;
      let blocksStitched = 0;
      let mostOutstanding = 0;
      const read = disk.read.bind(disk);
      disk.read = async (offset, target) => {
        readsStarted++;
        mostOutstanding = Math.max(mostOutstanding, readsStarted - blocksStitched);
        return read(offset, target);
      };
      const { stats } = await backupDisk(repo, ManifestCache.forRepository(repo, state), source(disk, "301"), {
        host: "node1",
        time: new Date("2026-01-02T00:00:00Z"),
        workerThreads: 0,
        uploadConcurrency: 4,
        onProgress: () => blocksStitched++,
      });
      expect(readsStarted).toBe(disk.allocatedRuns().length);
      expect(readsStarted).toBeGreaterThan(10);
      expect(stats.readBytes).toBe(disk.allocatedClusters * disk.clusterBytes);
      // one at a time when each segment waited for the previous one to be stitched
      expect(mostOutstanding).toBeGreaterThanOrEqual(2);
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });
});

describe("the known set while a prune forgets backups", () => {
  it("a manifest forgotten between the listing and its read is skipped, not a failure; its chunks are not known", async () => {
    const state = await mkdtemp(join(tmpdir(), "pv-unit-known-"));
    try {
      const store = new MemoryStore("known");
      const repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
      const writer = ManifestCache.forRepository(repo, join(state, "writer"));
      const kept = await backupDisk(repo, writer, source(diskWith(8, 5), "201"), {
        host: "a",
        time: new Date("2026-01-02T00:00:00Z"),
        workerThreads: 0,
        uploadConcurrency: 2,
      });
      const gone = await backupDisk(repo, writer, source(diskWith(8, 6), "202"), {
        host: "a",
        time: new Date("2026-01-03T00:00:00Z"),
        workerThreads: 0,
        uploadConcurrency: 2,
      });
      // another host, nothing cached: the manifest of 202 disappears right after the listing
      const goneKey = `backups/202/${gone.manifest.metadata.id}/manifest`;
      const racing = Object.create(store) as MemoryStore;
      racing.get = async (key: string): Promise<Buffer> => {
        if (key === goneKey) await store.delete([goneKey]);
        return store.get(key);
      };
      const reader = ManifestCache.forRepository(await Repository.open(racing), join(state, "reader"));
      const known = await reader.knownChunks();
      const ids = (e: { entries: readonly { kind: string; id?: Buffer }[] }): Buffer[] => e.entries.flatMap((x) => (x.kind === "chunk" && x.id ? [x.id] : []));
      expect(ids(kept.manifest).every((id) => known.has(id))).toBe(true);
      expect(ids(gone.manifest).some((id) => known.has(id))).toBe(false);
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });
});

describe("the known set of one backup run (ManifestCache.forRun)", () => {
  it("lists backups/ once per run, reads missing/ for every container, and rebuilds after a distrust", async () => {
    const state = await mkdtemp(join(tmpdir(), "pv-unit-run-"));
    try {
      const store = new MemoryStore("run");
      const repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
      const opts = (time: string) => ({ host: "a", time: new Date(time), workerThreads: 0, uploadConcurrency: 2 });
      const disk301 = diskWith(8, 7);
      await backupDisk(repo, ManifestCache.forRepository(repo, state), source(disk301, "301"), opts("2026-01-02T00:00:00Z"));
      const listings: string[] = [];
      const counting = Object.create(store) as MemoryStore;
      counting.list = (prefix: string) => {
        listings.push(prefix);
        return store.list(prefix);
      };
      const runRepo = await Repository.open(counting);
      const count = (prefix: string): number => listings.filter((p) => p === prefix).length;

      // the classic cache lists backups/ for each container
      const perCall = ManifestCache.forRepository(runRepo, state);
      await perCall.knownChunks();
      await perCall.knownChunks();
      expect(count("backups/")).toBe(2);

      listings.length = 0;
      const run = ManifestCache.forRun(runRepo, state);
      const first = await backupDisk(runRepo, run, source(disk301, "301"), opts("2026-01-03T00:00:00Z"));
      expect(first.stats.newChunks).toBe(0);
      // a second container of the run: its new chunks are new, the first one's known
      const second = await backupDisk(runRepo, run, source(diskWith(8, 8), "302"), opts("2026-01-03T00:00:01Z"));
      expect(second.stats.newChunks).toBeGreaterThan(0);
      expect(count("backups/")).toBe(1);
      expect(count("missing/")).toBe(2);

      // a distrusted backup of the run is no longer known: the set is built again without it
      const ref = { ct: "302", id: second.manifest.metadata.id };
      await run.distrust(ref);
      const known = await run.knownChunks();
      expect(count("backups/")).toBe(2);
      const only302 = second.manifest.entries.flatMap((e) =>
        e.kind === "chunk" && e.id && !first.manifest.entries.some((f) => f.kind === "chunk" && f.id?.equals(e.id!)) ? [e.id] : [],
      );
      expect(only302.length).toBeGreaterThan(0);
      expect(only302.some((id) => known.has(id))).toBe(false);
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });

  it("knows what the run's earlier containers stored (else their chunks are encoded and stored again)", async () => {
    const state = await mkdtemp(join(tmpdir(), "pv-unit-run-"));
    try {
      const repo = await Repository.init(new MemoryStore("run2"), newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
      const opts = (time: string) => ({ host: "a", time: new Date(time), workerThreads: 0, uploadConcurrency: 2 });
      const run = ManifestCache.forRun(repo, state);
      const same = diskWith(8, 11);
      const first = await backupDisk(repo, run, source(same, "401"), opts("2026-01-03T00:00:00Z"));
      expect(first.stats.newChunks).toBeGreaterThan(0);
      const known = await run.knownChunks();
      expect(first.manifest.entries.every((e) => e.kind !== "chunk" || known.has(e.id))).toBe(true);
      // another container with the same data, same run (no shared storedThisRun here): nothing new
      const second = await backupDisk(repo, run, source(same, "402"), opts("2026-01-03T00:00:01Z"));
      expect(second.stats.newChunks).toBe(0);
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });
});
