/**
 * The parts of prune that need no CLI: the keep policy (restic's semantics), durations,
 * the batched id-set builder, and the lock machinery in-process on a local directory
 * store (where a lock object is made "old" by setting its mtime): a lease fences itself
 * when it cannot refresh in time, a backup waits for a live sweep marker but not for a
 * dead one, one prune lock winner among many, takeover of a dead prune's lock.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { parseDuration } from "../../src/prune/duration.js";
import { Lease } from "../../src/prune/lease.js";
import { listLocks, lockBody, lockTiming, PRUNE_LOCK_KEY, type LockTiming } from "../../src/prune/locks.js";
import { applyPolicy, planForget, type BackupInfo } from "../../src/prune/policy.js";
import { acquirePruneLock } from "../../src/prune/prune-lock.js";
import { BackupRegistration } from "../../src/prune/registration.js";
import { ChunkIdSet, ChunkIdSetBuilder } from "../../src/repository/chunk-id-set.js";
import { LocalDirectoryStore } from "../../src/uploader/local.js";
import type { ObjectStore, PutOptions } from "../../src/uploader/store.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempStore(): { store: LocalDirectoryStore; root: string } {
  const root = mkdtempSync(join(tmpdir(), "pv-units-"));
  dirs.push(root);
  return { store: new LocalDirectoryStore(root), root };
}
/** Make a lock object look `seconds` old (local store: its mtime). */
function age(root: string, key: string, seconds: number): void {
  const t = new Date(Date.now() - seconds * 1000);
  utimesSync(join(root, ...key.split("/")), t, t);
}

describe("keep policy (restic forget semantics, UTC buckets)", () => {
  const b = (id: string, time: string, host = "n1", ct = "101"): BackupInfo => ({ ct, id, host, time: new Date(time) });
  const ids = (list: { id: string }[]): string[] => list.map((x) => x.id).sort();

  it("keep-last keeps the N newest, per container and host", () => {
    const all = [
      b("a1", "2026-01-01T00:00:00Z"),
      b("a2", "2026-01-02T00:00:00Z"),
      b("a3", "2026-01-03T00:00:00Z"),
      b("x1", "2026-01-01T00:00:00Z", "n2"),
      b("y1", "2026-01-01T00:00:00Z", "n1", "102"),
    ];
    const plans = planForget(all, { last: 2 });
    expect(plans.map((p) => [p.ct, p.host, ids(p.keep), ids(p.forget)])).toEqual([
      ["101", "n1", ["a2", "a3"], ["a1"]],
      ["101", "n2", ["x1"], []],
      ["102", "n1", ["y1"], []],
    ]);
  });

  it("daily keeps the newest of each day; counts left keep the oldest too", () => {
    const all = [
      b("d1a", "2026-03-01T08:00:00Z"),
      b("d1b", "2026-03-01T20:00:00Z"),
      b("d2a", "2026-03-02T01:00:00Z"),
      b("d2b", "2026-03-02T23:59:59Z"),
      b("d3", "2026-03-03T12:00:00Z"),
    ];
    expect(ids(applyPolicy(all, { daily: 2 }).keep)).toEqual(["d2b", "d3"]);
    // 5 days of counts but only 3 days: the group's oldest backup is kept as well (restic >= 0.14)
    expect(ids(applyPolicy(all, { daily: 5 }).keep)).toEqual(["d1a", "d1b", "d2b", "d3"]);
    // a day is a UTC day: 23:30 and 00:30 UTC are different days whatever the local zone
    expect(ids(applyPolicy([b("late", "2026-03-01T23:30:00Z"), b("early", "2026-03-02T00:30:00Z")], { daily: 1 }).keep)).toEqual(["early"]);
  });

  it("weekly uses ISO weeks, monthly and yearly calendar buckets; any rule keeps", () => {
    // 2026-01-04 is a Sunday (ISO week 1 of 2026), 2026-01-05 a Monday (week 2)
    const all = [b("sun", "2026-01-04T10:00:00Z"), b("mon", "2026-01-05T10:00:00Z"), b("dec", "2025-12-31T10:00:00Z"), b("old", "2024-06-01T10:00:00Z")];
    expect(ids(applyPolicy(all, { weekly: 2 }).keep)).toEqual(["mon", "sun"]);
    expect(ids(applyPolicy(all, { monthly: 2 }).keep)).toEqual(["dec", "mon"]);
    expect(ids(applyPolicy(all, { yearly: 3 }).keep)).toEqual(["dec", "mon", "old"]);
    expect(ids(applyPolicy(all, { last: 1, yearly: 1 }).keep)).toEqual(["mon"]);
    const r = applyPolicy(all, { last: 1, monthly: 2 });
    expect(r.keep.find((k) => k.id === "mon")!.reasons).toEqual(["last", "monthly"]);
  });

  it("keep-within is relative to the group's newest backup, not to now", () => {
    const all = [b("n", "2020-05-10T00:00:00Z"), b("m", "2020-05-08T00:00:01Z"), b("o", "2020-05-07T23:59:59Z")];
    expect(ids(applyPolicy(all, { withinMs: parseDuration("2d", "x") }, new Date("2026-01-01T00:00:00Z")).keep)).toEqual(["m", "n"]);
  });

  it("durations", () => {
    expect(parseDuration("0", "x")).toBe(0);
    expect(parseDuration("90s", "x")).toBe(90_000);
    expect(parseDuration("1d12h", "x")).toBe(36 * 3_600_000);
    expect(parseDuration("2w", "x")).toBe(14 * 86_400_000);
    expect(parseDuration("1.5", "x")).toBe(1500);
    expect(() => parseDuration("3 days", "--grace")).toThrow(/--grace/);
  });
});

describe("ChunkIdSetBuilder", () => {
  it("equals the naive set for any multiset of ids (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 3000 }), fc.integer({ min: 0, max: 3 }), (picks, prefixBits) => {
        // few distinct ids, many duplicates; some share long prefixes (prefix collisions)
        const idOf = (n: number): Buffer => {
          const id = Buffer.alloc(32);
          if (prefixBits > 0) id.writeUInt32BE(n % prefixBits, 0);
          else id.writeUInt32BE((n * 2654435761) >>> 0, 0);
          id.writeUInt32BE(n, 28);
          return id;
        };
        const builder = new ChunkIdSetBuilder(ChunkIdSet.empty().withAdded(picks.slice(0, 10).map(idOf)));
        for (const p of picks) builder.add(idOf(p));
        const got = builder.build();
        const expected = [...new Set(picks.map((p) => idOf(p).toString("hex")))].sort();
        expect([...got.ids()].map((id) => id.toString("hex"))).toEqual(expected);
      }),
      { numRuns: 60 },
    );
  });

  it("de-duplicates 1.5 M references of 500 k ids without per-manifest merges", () => {
    const n = 500_000;
    const all = randomBytes(32 * n);
    const id = (k: number): Buffer => all.subarray(k * 32, k * 32 + 32);
    const builder = new ChunkIdSetBuilder();
    const started = performance.now();
    for (let round = 0; round < 3; round++) for (let i = 0; i < n; i++) builder.add(id((i * 7919 + round * 31) % n));
    const set = builder.build();
    const seconds = (performance.now() - started) / 1000;
    expect(set.size).toBe(n);
    expect(set.has(id(12345))).toBe(true);
    expect(seconds).toBeLessThan(60); // ~1.5 s on an idle 2-core machine
  });
});

/** A store whose puts can be held back (a slow or unreachable server). */
class SlowStore implements ObjectStore {
  delayMs = 0;
  constructor(private readonly inner: ObjectStore) {}
  get location(): string {
    return this.inner.location;
  }
  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    return this.inner.put(key, body, options);
  }
  get = (key: string) => this.inner.get(key);
  getRange = (key: string, offset: number, length: number) => this.inner.getRange(key, offset, length);
  stat = (key: string) => this.inner.stat(key);
  list = (prefix: string) => this.inner.list(prefix);
  delete = (keys: readonly string[]) => this.inner.delete(keys);
  close = () => this.inner.close();
}

const fast: LockTiming = { ttlMs: 6000, refreshMs: 500, marginMs: 2000, pollMs: 200 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("locks in-process (local directory store)", () => {
  it("a lease that cannot refresh within TTL - margin fences itself and removes its object", async () => {
    const { store } = tempStore();
    const slow = new SlowStore(store);
    const lease = new Lease(slow, "locks/backup-t-1-aa", () => lockBody("backup", "t", fast, new Date()), fast, { what: "test registration" });
    await lease.create();
    await sleep(1200);
    expect(lease.lapsed()).toBeNull();
    expect(() => lease.assertValid("write")).not.toThrow();
    slow.delayMs = 5000; // every refresh now takes longer than the 4 s limit
    await sleep(5000);
    expect(lease.lapsed()).toMatch(/refresh/);
    expect(() => lease.assertValid("write the manifest")).toThrow(/lapsed.*refusing to write the manifest/);
    expect(lease.signal.aborted).toBe(true);
    await sleep(5000); // the in-flight refresh finished; the fenced lease removed its object
    await lease.release();
    expect((await listLocks(store)).map((l) => l.key)).toEqual([]);
  });

  it("a backup waits while a live sweep marker exists, and not for a dead one", async () => {
    const { store, root } = tempStore();
    const marker = new Lease(store, "locks/sweep-other-7-bb", () => lockBody("sweep", "other", fast, new Date()), fast, { what: "marker" });
    await marker.create();
    const started = performance.now();
    const logs: string[] = [];
    const registering = BackupRegistration.start({ store }, "node1", { timing: fast, log: (l) => logs.push(l) });
    await sleep(1200);
    const keys = (await listLocks(store)).map((l) => l.key);
    expect(keys.some((k) => k.startsWith("locks/backup-node1-"))).toBe(true); // registered first, then waits
    await marker.release();
    const reg = await registering;
    expect(performance.now() - started).toBeGreaterThan(1100);
    expect(logs.join("\n")).toMatch(/waiting for prune.*other pid \d+/);
    await reg.stop();

    // a dead prune's marker: stale by TTL on the storage clock, so it blocks nobody
    await store.put("locks/sweep-dead-9-cc", lockBody("sweep", "dead", fast, new Date()));
    age(root, "locks/sweep-dead-9-cc", 20);
    const t0 = performance.now();
    const reg2 = await BackupRegistration.start({ store }, "node1", { timing: fast });
    expect(performance.now() - t0).toBeLessThan(3000);
    await reg2.stop();

    // a live one that does not go away: bounded wait, then a clear error
    const stuck = new Lease(store, "locks/sweep-busy-5-dd", () => lockBody("sweep", "busy", fast, new Date()), fast, { what: "marker" });
    await stuck.create();
    await expect(BackupRegistration.start({ store }, "node1", { timing: fast, sweepWaitMs: 700 })).rejects.toThrow(
      /being pruned.*busy pid \d+.*gave up waiting/,
    );
    await stuck.release();
    expect((await listLocks(store)).map((l) => l.key)).toEqual(["locks/sweep-dead-9-cc"]);
  });

  it("one prune lock winner among many; a dead holder's lock is taken over after its TTL", async () => {
    const { store, root } = tempStore();
    const timing = lockTiming({ ttlMs: 6000, refreshMs: 500 });
    const contenders = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => acquirePruneLock(store, { host: `h${i}`, timing, waitMs: 0 })));
    const won = contenders.filter((c) => c.status === "fulfilled");
    expect(won).toHaveLength(1);
    expect(contenders.filter((c) => c.status === "rejected").map((c) => String((c as PromiseRejectedResult).reason))).toEqual(
      Array(4).fill(expect.stringMatching(/another prune is running/)),
    );
    const holder = (won[0] as PromiseFulfilledResult<Lease>).value;
    await holder.release();

    // a holder that died: its lock stops being refreshed; after TTL it is taken over, once
    await store.put(PRUNE_LOCK_KEY, lockBody("prune", "dead", timing, new Date()));
    age(root, PRUNE_LOCK_KEY, 20);
    const logs: string[] = [];
    const takers = await Promise.allSettled(
      Array.from({ length: 4 }, (_, i) => acquirePruneLock(store, { host: `t${i}`, timing, waitMs: 0, log: (l) => logs.push(l) })),
    );
    const taken = takers.filter((c) => c.status === "fulfilled");
    expect(taken).toHaveLength(1);
    expect(logs.join("\n")).toMatch(/took over the prune lock of dead pid/);
    const lease = (taken[0] as PromiseFulfilledResult<Lease>).value;
    await sleep(1200); // refreshes with conditional overwrites on its own etag
    expect(lease.lapsed()).toBeNull();
    // someone else overwrites it: the holder notices at its next refresh and stops
    await store.put(PRUNE_LOCK_KEY, lockBody("prune", "intruder", timing, new Date()));
    await sleep(1500);
    expect(lease.lapsed()).toMatch(/taken over/);
    await lease.release();
    expect((await store.get(PRUNE_LOCK_KEY)).toString()).toMatch(/intruder/); // not ours to delete
  });
});
