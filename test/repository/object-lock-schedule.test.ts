/**
 * The object-lock retention schedule (src/repository/object-lock.ts), pure: every chunk's
 * retention reaches what a run needs and at most W beyond it, on the chunk's own phase;
 * a chunk counts as covered exactly when its boundary from the manifest's basis reaches
 * the run's needs; the phases spread the extensions over W. And the keeper sends an
 * extension for exactly the uncovered chunks a run references, once each.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkRetentionKeeper, ObjectLockView, RetentionSchedule } from "../../src/repository/object-lock.js";
import type { ChunkLockTimes } from "../../src/repository/known-chunks.js";
import type { ObjectInfo, ObjectStore, ObjectVersion, Retention, VersionRead } from "../../src/uploader/store.js";

const DAY = 86_400;

function schedule(days: number, extensionDays: number): RetentionSchedule {
  return new RetentionSchedule({ mode: "governance", retentionSeconds: days * DAY, extensionSeconds: extensionDays * DAY, lockBucket: "x-locks" });
}

describe("retention schedule", () => {
  it("until(C, b) is on the chunk's phase, at or after b + D and before b + D + W", () => {
    const s = schedule(30, 15);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 1_600_000_000, max: 2_000_000_000 }), (id, basisSeconds) => {
        const basis = basisSeconds * 1000;
        const until = s.chunkUntil(id, basis);
        expect(until).toBeGreaterThanOrEqual(basis + s.retentionMs);
        expect(until).toBeLessThan(basis + s.retentionMs + s.extensionMs);
        expect((until - s.phaseMs(id)) % s.extensionMs).toBe(0);
      }),
    );
  });

  it("a chunk is covered exactly when its boundary from the last basis reaches the run's needs, and coverage only shrinks with time", () => {
    const s = schedule(30, 15);
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 1_600_000_000, max: 1_900_000_000 }),
        fc.integer({ min: 0, max: 60 * DAY }),
        (id, at, later) => {
          const lockedAt = at * 1000;
          const basis = lockedAt + later * 1000;
          const covered = s.chunkCovered(id, lockedAt, basis);
          expect(covered).toBe(s.chunkUntil(id, lockedAt) >= basis + s.retentionMs);
          // within W after the basis that set it, some chunks are still covered; after W none is
          if (later * 1000 >= s.extensionMs) expect(covered).toBe(false);
          if (later === 0) expect(covered).toBe(true);
        },
      ),
    );
    expect(s.chunkCovered(randomBytes(32), 0, Date.now())).toBe(false); // unknown lock time: never covered
  });

  it("daily runs extend each chunk about once per W, spread evenly over the days", () => {
    const s = schedule(30, 15);
    const ids = Array.from({ length: 3000 }, () => randomBytes(32));
    const start = Date.UTC(2026, 0, 1);
    const lockedAt = new Map(ids.map((id) => [id, start]));
    const perDay: number[] = [];
    for (let day = 1; day <= 60; day++) {
      const basis = start + day * DAY * 1000;
      let extended = 0;
      for (const id of ids) {
        if (s.chunkCovered(id, lockedAt.get(id)!, basis)) continue;
        lockedAt.set(id, basis); // the run extends it and publishes a manifest with this basis
        extended++;
      }
      perDay.push(extended);
    }
    const total = perDay.reduce((a, b) => a + b, 0);
    // 60 days / W of 15 days: each chunk about 4 times (not once a day: 60)
    expect(total / ids.length).toBeGreaterThan(3.5);
    expect(total / ids.length).toBeLessThan(4.5);
    // spread: no day extends more than about 2/15 of the chunks (a burst would be all of them)
    expect(Math.max(...perDay.slice(15))).toBeLessThan(ids.length * (2.2 / 15));
  });

  it("retentions are whole seconds, rounded up", () => {
    const s = schedule(1, 1);
    expect(s.retention(1_700_000_000_001).until.getTime()).toBe(1_700_000_001_000);
    expect(s.retention(1_700_000_000_000).until.getTime()).toBe(1_700_000_000_000);
  });
});

/** Just enough of a versioned store to count retention extensions. */
class CountingVersionedStore implements ObjectStore {
  readonly location = "mem://counting";
  readonly extended: string[] = [];
  async put(): Promise<void> {}
  async get(): Promise<Buffer> {
    return Buffer.alloc(0);
  }
  async getRange(): Promise<Buffer> {
    return Buffer.alloc(0);
  }
  async stat(): Promise<ObjectInfo | null> {
    return null;
  }
  async *list(): AsyncIterable<ObjectInfo> {}
  async delete(): Promise<void> {}
  async close(): Promise<void> {}
  async *listVersions(): AsyncIterable<ObjectVersion> {}
  async getVersion(): Promise<VersionRead> {
    return { body: Buffer.alloc(0), versionId: null, retainUntil: null };
  }
  async extendRetention(key: string, _retention: Retention): Promise<void> {
    this.extended.push(key);
  }
  async deleteVersions(): Promise<{ retained: { key: string; versionId: string }[] }> {
    return { retained: [] };
  }
}

describe("ChunkRetentionKeeper", () => {
  it("extends exactly the referenced chunks whose lock time does not cover the run, each once", async () => {
    const s = schedule(30, 15);
    const store = new CountingVersionedStore();
    const basis = new Date(Date.UTC(2026, 5, 1));
    const view = new ObjectLockView(store, () => store, s, basis);
    const ids = Array.from({ length: 500 }, () => randomBytes(32));
    // lock times: some fresh (yesterday), some old (40 days ago), some unknown
    const times = new Map<string, number>();
    ids.forEach((id, i) => times.set(id.toString("hex"), i % 3 === 0 ? basis.getTime() - DAY * 1000 : i % 3 === 1 ? basis.getTime() - 40 * DAY * 1000 : 0));
    const lockTimes: ChunkLockTimes = { at: (id) => times.get(Buffer.from(id).toString("hex")) ?? 0 };
    const keeper = new ChunkRetentionKeeper(view, lockTimes, 4);
    for (const id of [...ids, ...ids]) await keeper.reference(id);
    await keeper.drain();
    const expected = ids
      .filter((id) => !s.chunkCovered(id, times.get(id.toString("hex"))!, basis.getTime()))
      .map((id) => `chunks/${id.toString("hex").slice(0, 2)}/${id.toString("hex")}`);
    expect(store.extended.sort()).toEqual(expected.sort());
    expect(keeper.extended).toBe(expected.length);
    // the old and unknown ones all, and of yesterday's only those a day away from their boundary
    expect(expected.length).toBeGreaterThanOrEqual(Math.floor((ids.length * 2) / 3));
    expect(expected.length).toBeLessThan(ids.length * (2 / 3 + 0.15));
  });
});
