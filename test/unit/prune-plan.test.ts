/**
 * planPrune / executePrune against the in-memory store: the plan lists exactly what the
 * execution deletes, the execution's second look keeps what a backup written after the
 * plan references, and a dry run's plan writes nothing and cannot be carried out.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { backupDisk } from "../../src/backup/pipeline.js";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import { lockTiming } from "../../src/prune/locks.js";
import { executePrune, planPrune, type PruneOptions, type PrunePlan } from "../../src/prune/prune.js";
import { acquirePruneLock } from "../../src/prune/prune-lock.js";
import { newRepositoryConfig } from "../../src/repository/config.js";
import { ManifestCache } from "../../src/repository/known-chunks.js";
import { chunkKey } from "../../src/repository/layout.js";
import { Repository } from "../../src/repository/repository.js";
import { MemoryStore } from "../../src/uploader/memory.js";
import { diskWith, source } from "./memory-disk.js";

const options: PruneOptions = { policy: { last: 1 }, graceMs: 0, waitMs: 0, host: "node1", timing: lockTiming(), log: () => {}, warn: () => {} };
const backupOptions = (time: string) => ({ host: "node1", time: new Date(time), workerThreads: 0, uploadConcurrency: 4 });

async function keys(store: MemoryStore): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const info of store.list("")) out.add(info.key);
  return out;
}

/** Every key the plan says it deletes. */
function plannedKeys(plan: PrunePlan): string[] {
  return [
    ...plan.forget.flatMap((b) => [b.manifest!.key, ...b.files.map((f) => f.key)]),
    ...plan.candidateChunkKeys(),
    ...plan.orphans.map((f) => f.key),
  ].sort();
}

describe("planPrune then executePrune (in-memory store)", () => {
  let state: string;
  let store: MemoryStore;
  let repo: Repository;
  let cache: ManifestCache;
  let oldDisk: ReturnType<typeof diskWith>;
  const garbage = chunkKey("ab".repeat(32));
  const orphan = "backups/201/20260101T000000Z-dead/DiskDescriptor.xml";

  beforeEach(async () => {
    state = await mkdtemp(join(tmpdir(), "pv-plan-"));
    store = new MemoryStore("plan");
    repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
    cache = ManifestCache.forRepository(repo, state);
    oldDisk = diskWith(24, 1);
    await backupDisk(repo, cache, source(oldDisk, "201"), backupOptions("2026-01-02T00:00:00Z"));
    await backupDisk(repo, cache, source(diskWith(24, 2), "201"), backupOptions("2026-01-03T00:00:00Z"));
    await store.put(garbage, Buffer.from("not referenced by any manifest"));
    await store.put(orphan, Buffer.from("<Parallels_disk_image/>"));
  });
  afterEach(async () => {
    await rm(state, { recursive: true, force: true });
  });

  it("the plan lists exactly what executePrune deletes", async () => {
    const lock = await acquirePruneLock(store, { host: "node1", timing: options.timing, waitMs: 0 });
    try {
      const plan = await planPrune(repo, options, lock);
      const planned = plannedKeys(plan);
      expect(plan.report.forgotten).toBe(1);
      expect(planned).toContain(garbage);
      expect(planned).toContain(orphan);
      expect(planned.filter((k) => k.startsWith("chunks/")).length).toBe(plan.report.chunksDeleted);
      const before = await keys(store);
      const report = await executePrune(repo, plan, options);
      const after = await keys(store);
      const deleted = [...before].filter((k) => !after.has(k) && !k.startsWith("locks/")).sort();
      expect(deleted).toEqual(planned);
      expect(report).toMatchObject({ sweep: "done", forgotten: 1, chunksDeleted: plan.report.chunksDeleted, filesDeleted: plan.report.filesDeleted });
    } finally {
      await lock.release();
    }
  });

  it("executePrune keeps the chunks of a backup written after the plan (the second look)", async () => {
    const lock = await acquirePruneLock(store, { host: "node1", timing: options.timing, waitMs: 0 });
    try {
      const plan = await planPrune(repo, options, lock);
      // a backup of the disk the forgotten backup holds, in another container: it dedups
      // against the chunks the plan means to delete and uploads none of them again
      const late = await backupDisk(repo, cache, source(oldDisk, "202"), backupOptions("2026-01-04T00:00:00Z"));
      expect(late.stats.newChunks).toBe(0);
      const referenced = new Set(late.manifest.entries.flatMap((e) => (e.kind === "chunk" ? [chunkKey(e.id.toString("hex"))] : [])));
      const planned = plannedKeys(plan);
      expect(planned.filter((k) => referenced.has(k)).length).toBeGreaterThan(0);
      const before = await keys(store);
      await executePrune(repo, plan, options);
      const after = await keys(store);
      const deleted = [...before].filter((k) => !after.has(k) && !k.startsWith("locks/")).sort();
      expect(deleted).toEqual(planned.filter((k) => !referenced.has(k)));
      for (const k of referenced) expect(after.has(k), k).toBe(true);
    } finally {
      await lock.release();
    }
  });

  it("a dry run's plan changes nothing and cannot be carried out", async () => {
    const before = [...(await keys(store))].sort();
    const plan = await planPrune(repo, options);
    expect(plan.report).toMatchObject({ dryRun: true, sweep: "dry-run", forgotten: 1 });
    expect([...(await keys(store))].sort()).toEqual(before);
    await expect(executePrune(repo, plan, options)).rejects.toThrow(/without the prune lock/);
    expect([...(await keys(store))].sort()).toEqual(before);
  });
});
