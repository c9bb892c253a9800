/** SnapshotJournal: durable, atomic entries; corrupt files reported, never fatal. */
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newSnapshotGuid, OWN_GUID_TAG, SnapshotJournal, snapshotGuidOwner, stateDirOwnerId } from "../../src/host/journal.js";
import { normaliseGuid } from "../../src/ploop/descriptor.js";
import { deadPid, scratch } from "./fixtures.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ dir, cleanup } = await scratch("journal"));
});
afterEach(async () => {
  await cleanup();
});

describe("SnapshotJournal", () => {
  it("records, updates, lists and removes entries", async () => {
    const journal = new SnapshotJournal(dir);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
    const S = newSnapshotGuid();
    const before = Date.now();
    const entry = await journal.record({ ct: "101", descriptorPath: "/vz/private/101/root.hdd/DiskDescriptor.xml", snapshotGuid: S });
    expect(entry).toEqual({
      version: 1,
      ct: "101",
      descriptorPath: "/vz/private/101/root.hdd/DiskDescriptor.xml",
      snapshotGuid: S,
      tool: "ploop",
      state: "snapshot-pending",
      pid: process.pid,
      host: hostname(),
      startedAt: expect.any(String) as unknown as string,
    });
    expect(Date.parse(entry.startedAt)).toBeGreaterThanOrEqual(before - 1000);
    const file = join(dir, "journal", `${S.slice(1, -1)}.json`);
    expect(JSON.parse(await readFile(file, "utf8"))).toEqual(entry);
    expect((await stat(file)).mode & 0o777).toBe(0o600);

    await journal.setState(S, "snapshot-taken");
    await journal.setState(S.toUpperCase(), "merging");
    const { entries } = await journal.list();
    expect(entries).toEqual([{ ...entry, state: "merging" }]);
    // Only the entry: no temp files left behind.
    expect(await readdir(join(dir, "journal"))).toEqual([`${S.slice(1, -1)}.json`]);

    await journal.remove(S);
    await journal.remove(S); // idempotent
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  });

  it("reports corrupt entry files instead of failing, and ignores half-written temp files", async () => {
    const journal = new SnapshotJournal(dir);
    const good = newSnapshotGuid();
    await journal.record({ ct: "101", descriptorPath: "/d/DiskDescriptor.xml", snapshotGuid: good });
    const bad1 = join(journal.dir, "0000aaaa-0000-4000-8000-000000000001.json");
    const bad2 = join(journal.dir, "0000aaaa-0000-4000-8000-000000000002.json");
    await writeFile(bad1, '{"version":1,"ct":"1'); // truncated
    await writeFile(
      bad2,
      JSON.stringify({
        version: 1,
        ct: "102",
        descriptorPath: "/d",
        snapshotGuid: "nope",
        tool: "ploop",
        state: "merging",
        pid: 1,
        host: "h",
        startedAt: "2024-01-01T00:00:00Z",
      }),
    );
    const dead = await deadPid();
    const temp = join(journal.dir, `${newSnapshotGuid().slice(1, -1)}.json.tmp-${dead}`);
    await writeFile(temp, "{");

    const listing = await journal.list();
    expect(listing.entries.map((e) => e.snapshotGuid)).toEqual([good]);
    expect(listing.corrupt).toEqual([
      { file: bad1, reason: expect.stringMatching(/^not valid JSON/) as unknown as string },
      { file: bad2, reason: 'invalid snapshotGuid "nope"' },
    ]);
    expect(await journal.removeStaleTemps()).toEqual([temp]);
    expect((await readdir(journal.dir)).some((n) => n.includes(".tmp-"))).toBe(false);
    // Corrupt files stay for the admin.
    expect((await journal.list()).corrupt).toHaveLength(2);
  });

  it("never shows a reader a half-written entry (temp + rename)", async () => {
    const journal = new SnapshotJournal(dir);
    const S = newSnapshotGuid();
    await journal.record({ ct: "101", descriptorPath: `/vz/private/101/root.hdd/${"x".repeat(4000)}/DiskDescriptor.xml`, snapshotGuid: S });
    const file = join(journal.dir, `${S.slice(1, -1)}.json`);
    let stop = false;
    let reads = 0;
    const reader = (async () => {
      while (!stop) {
        const text = await readFile(file, "utf8");
        const parsed = JSON.parse(text) as { state: string }; // throws on a torn read
        expect(["snapshot-pending", "snapshot-taken", "merging"]).toContain(parsed.state);
        reads++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const states = ["snapshot-taken", "merging", "snapshot-pending"] as const;
    for (let i = 0; i < 150; i++) await journal.setState(S, states[i % 3]!);
    stop = true;
    await reader;
    expect(reads).toBeGreaterThan(10);
    expect((await journal.list()).corrupt).toEqual([]);
  });

  it("rejects a non-GUID", async () => {
    const journal = new SnapshotJournal(dir);
    await expect(journal.record({ ct: "1", descriptorPath: "/d", snapshotGuid: "../../etc/passwd" })).rejects.toThrow(/is not a snapshot GUID/);
  });

  it("marks the snapshot GUIDs it hands out with ploopvault's tag and the state dir's owner id", () => {
    const journal = new SnapshotJournal(join(dir, "state"));
    expect(journal.ownerId).toMatch(/^[0-9a-f]{7}$/);
    // Derived from the absolute path only: a wiped or reinstalled state dir keeps it.
    expect(new SnapshotJournal(`${dir}/./state/`).ownerId).toBe(journal.ownerId);
    expect(stateDirOwnerId(join(dir, "other"))).not.toBe(journal.ownerId);
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const g = journal.newSnapshotGuid();
      expect(normaliseGuid(g)).toBe(g); // lower-case, braced, what ploop accepts
      expect(g.startsWith(`{${OWN_GUID_TAG}-${journal.ownerId.slice(0, 4)}-8${journal.ownerId.slice(4)}-`)).toBe(true);
      expect("89ab").toContain(g[20]);
      expect(journal.ownsSnapshot(g)).toBe(true);
      expect(snapshotGuidOwner(g.toUpperCase())).toBe(journal.ownerId);
      seen.add(g);
    }
    expect(seen.size).toBe(2000);
    // GUIDs others make (ploop, vzctl, admins: random version 4) are never ours, even
    // with our tag in front; another state dir's are ploopvault's but not this one's.
    for (let i = 0; i < 2000; i++) expect(snapshotGuidOwner(newSnapshotGuid())).toBeNull();
    expect(snapshotGuidOwner(`{${OWN_GUID_TAG}-1234-4567-89ab-0123456789ab}`)).toBeNull();
    expect(snapshotGuidOwner("{5fbaabe3-6958-40ff-92a7-860e329aab41}")).toBeNull();
    const other = newSnapshotGuid(stateDirOwnerId(join(dir, "other")));
    expect(snapshotGuidOwner(other)).toBe(stateDirOwnerId(join(dir, "other")));
    expect(journal.ownsSnapshot(other)).toBe(false);
  });

  it("records what a merge will delete, and rejects a malformed record of it", async () => {
    const journal = new SnapshotJournal(dir);
    const S = journal.newSnapshotGuid();
    await journal.record({ ct: "101", descriptorPath: "/d/DiskDescriptor.xml", snapshotGuid: S });
    const mergeChild = { path: "/d/root.hds.{x}", dev: "2049", ino: "18446744073709551615" };
    await journal.setState(S, "merging", mergeChild);
    expect((await journal.list()).entries).toMatchObject([{ snapshotGuid: S, state: "merging", mergeChild }]);
    const file = join(journal.dir, `${S.slice(1, -1)}.json`);
    await writeFile(file, JSON.stringify({ ...JSON.parse(await readFile(file, "utf8")), mergeChild: { path: "relative", dev: "1", ino: "2" } }));
    expect((await journal.list()).corrupt).toEqual([{ file, reason: "invalid mergeChild" }]);
  });
});
