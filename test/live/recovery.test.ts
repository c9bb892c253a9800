/**
 * recoverInterrupted() against states produced by the real ploop 1.15 (offline):
 * a snapshot left behind, an offline merge SIGKILLed halfway (image left "in use", also on
 * a sparse image), ploop killed between its descriptor switch and its unlink (strace
 * fault injection), a stale DiskDescriptor.xml.tmp, a LOCK, a ploop still running, a live
 * owner; and recoverUnjournaled(): our marked snapshots found without a journal.
 */
import { execa } from "execa";
import { randomUUID } from "node:crypto";
import { copyFile, mkdir, readFile, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newSnapshotGuid, SnapshotJournal, stateDirOwnerId } from "../../src/host/journal.js";
import { imageMarkedInUse, recoverInterrupted, recoverUnjournaled, type RecoveryReport } from "../../src/host/snapshot-lifecycle.js";
import { PloopCli } from "../../src/host/ploop-cli.js";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopCheck, ploopFlatten, ploopSnapshotList } from "../helpers/ploop-tool.js";
import { sha256File } from "../ploop/fixtures.js";
import {
  discardClusters,
  fillTop,
  filesIn,
  holdFlock,
  makeDisk,
  PLOOP_OFFLINE,
  ploopCallsSparse,
  ploopKilledAt,
  readCluster,
  realPloop,
  scratch,
  script,
  tagCluster,
  TOP,
  unlistedImageFiles,
  writeCrashedEntry,
} from "./fixtures.js";

let dir: string;
let cleanup: () => Promise<void>;
let journal: SnapshotJournal;
/** Where the disk lives (the journal's state dir is a sibling). */
let diskDir: string;
let lines: string[];
const log = (l: string): void => void lines.push(l);

beforeEach(async () => {
  ({ dir, cleanup } = await scratch("recovery"));
  journal = new SnapshotJournal(join(dir, "state"));
  diskDir = join(dir, "disk");
  await mkdir(diskDir);
  lines = [];
});
afterEach(async () => {
  await cleanup();
});

function actions(reports: RecoveryReport[]): string[] {
  return reports.map((r) => r.action);
}

/**
 * Our run dies mid-merge and takes ploop with it (process group kill): start the real
 * `snapshot-delete -u S`, wait until it marks S's image in use, let it copy for a while,
 * SIGKILL it.
 */
async function killMergeHalfway(dd: string, S: string, frozenImage: string): Promise<void> {
  const merge = execa(PLOOP_OFFLINE, ["snapshot-delete", "-u", S, dd], { reject: false });
  const t0 = Date.now();
  while (!(await imageMarkedInUse(frozenImage))) {
    if (Date.now() - t0 > 10_000) throw new Error("merge never marked the image in use");
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 50)); // let it copy some clusters
  merge.kill("SIGKILL");
  const killed = await merge;
  expect(killed.signal).toBe("SIGKILL");
}

/** The live disk of `dd` reads exactly `want` at each of these clusters. */
async function expectClusters(dd: string, expected: readonly (readonly [number, Buffer])[]): Promise<void> {
  const disk = await openLogicalDisk(dd);
  try {
    for (const [cluster, want] of expected) expect((await readCluster(disk, cluster)).equals(want), `cluster ${cluster}`).toBe(true);
  } finally {
    await disk.close();
  }
}

/** Snapshot S of container 101 as a run that then died left it (journaled by a dead process); returns S's image. */
async function snapshotOfCrashedRun(dd: string, S: string): Promise<string> {
  await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "snapshot-pending" });
  await realPloop().snapshot(dd, S);
  return (await realPloop().snapshotList(dd, S))[0]!.file;
}

/** Recovery finishes the interrupted merge of a crashed run's snapshot: one image left, nothing else. */
async function expectRecoveredInterruptedMerge(dd: string, frozenImage: string): Promise<void> {
  const reports = await recoverInterrupted(journal, realPloop(), log);
  expect(reports.map((r) => [r.action, r.detail])).toEqual([
    ["merged-after-clearing-in-use", `cleared the in-use flag of ${frozenImage} (interrupted offline merge) and merged it back`],
  ]);
  expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  expect((await realPloop().snapshotList(dd, TOP)).map((c) => c.guid)).toEqual([TOP]);
  expect(await filesIn(diskDir)).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]);
}

describe("recoverInterrupted", () => {
  it("merges a snapshot left behind, keeps data written since, and leaves foreign snapshots alone", async () => {
    const ctDisk = join(dir, "101", "root.hdd");
    await mkdir(ctDisk, { recursive: true });
    const dd = await makeDisk(ctDisk);
    const ploop = realPloop();
    await writeClusterToTop(dd, 3, tagCluster("BASE", 3, 65536));
    // An admin's own snapshot below ours: not in our journal, must survive.
    const admin = newSnapshotGuid();
    await ploop.snapshot(dd, admin);
    await writeClusterToTop(dd, 4, tagCluster("ADMIN", 4, 65536));
    const S = newSnapshotGuid();
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "snapshot-pending" });
    await ploop.snapshot(dd, S);
    await journal.setState(S, "snapshot-taken"); // keeps the crashed pid
    await writeClusterToTop(dd, 5, tagCluster("AFTER", 5, 65536));
    await writeClusterToTop(dd, 3, tagCluster("AFTER", 3, 65536));

    const reports = await recoverInterrupted(journal, ploop, log);
    expect(reports).toEqual([{ ct: "101", snapshotGuid: S, action: "merged", detail: `ploop snapshot-delete merged it back into ${dd}` }]);
    expect(lines).toEqual([`recovery: container 101: snapshot ${S}: merged: ploop snapshot-delete merged it back into ${dd}`]);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
    const chain = await ploop.snapshotList(dd, TOP);
    expect(chain.map((c) => c.guid)).toEqual([TOP, admin]);

    await expectClusters(dd, [
      [3, tagCluster("AFTER", 3, 65536)],
      [4, tagCluster("ADMIN", 4, 65536)],
      [5, tagCluster("AFTER", 5, 65536)],
    ]);
  });

  it("drops entries whose snapshot is not in the descriptor, or whose descriptor is gone", async () => {
    const dd = await makeDisk(diskDir);
    const xml = await readFile(dd, "utf8");
    const never = newSnapshotGuid();
    const merged = newSnapshotGuid();
    const gone = newSnapshotGuid();
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: never, state: "snapshot-pending" });
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: merged, state: "merging" });
    await writeCrashedEntry(journal, { ct: "999", descriptorPath: join(dir, "gone", "DiskDescriptor.xml"), snapshotGuid: gone, state: "snapshot-taken" });
    const reports = await recoverInterrupted(journal, realPloop(), log);
    const byGuid = new Map(reports.map((r) => [r.snapshotGuid, r]));
    expect(byGuid.get(never)).toEqual({
      ct: "101",
      snapshotGuid: never,
      action: "already-merged",
      detail: `not in ${dd} (never created, or already merged); entry dropped`,
    });
    expect(byGuid.get(merged)).toEqual({
      ct: "101",
      snapshotGuid: merged,
      action: "already-merged",
      detail: `not in ${dd} any more (already merged); entry dropped`,
    });
    expect(byGuid.get(gone)).toEqual({
      ct: "999",
      snapshotGuid: gone,
      action: "descriptor-gone",
      detail: `${join(dir, "gone", "DiskDescriptor.xml")} no longer exists; entry dropped`,
    });
    expect(lines.filter((l) => l.startsWith("warning: "))).toHaveLength(1);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
    expect(await readFile(dd, "utf8")).toBe(xml);
  });

  it("finishes an offline merge that was SIGKILLed halfway (image left in use)", async () => {
    // 1 MiB clusters and a 320 MiB delta: the merge takes ~1 s, long enough to kill it.
    const dd = await makeDisk(diskDir, { size: "512M", clusterSectors: 2048 });
    const ploop = realPloop();
    const MiB = 1 << 20;
    await writeClusterToTop(dd, 0, tagCluster("BASE", 0, MiB));
    await writeClusterToTop(dd, 400, tagCluster("BASE", 400, MiB));
    const S = newSnapshotGuid();
    const frozenImage = await snapshotOfCrashedRun(dd, S);
    await fillTop(dd, 0, 320, "DELTA");
    await journal.setState(S, "merging");
    await killMergeHalfway(dd, S, frozenImage);
    // What 1.15 leaves: descriptor unchanged (S still there), S's image "in use", the .tmp.
    expect(await readFile(dd, "utf8")).toContain(S);
    expect(await imageMarkedInUse(frozenImage)).toBe(true);
    expect(await filesIn(diskDir)).toContain("DiskDescriptor.xml.tmp");
    // A plain re-run of the merge fails with "image in use" (exit 4).
    await expect(ploop.snapshotDelete(dd, S)).rejects.toThrow(/image in use or cannot be opened \(exit 4\)/);

    await expectRecoveredInterruptedMerge(dd, frozenImage);
    // On this 512 MiB / 1 MiB-cluster disk ploop 1.15's offline snapshot-delete leaves
    // CIF_Empty set on the (non-empty) merged image, interrupted or not (measured; not on
    // 64 MiB / 64 KiB-cluster disks): `check -f -c -r` may report that and nothing else.
    const chk = await ploopCheck(join(diskDir, "root.hds"));
    const complaints = chk.output.split("\n").filter((l) => l.trim() !== "" && !/CIF_Empty flag is incorrect|unable to fix the header on ro image/.test(l));
    expect(complaints).toEqual([]);
    const disk = await openLogicalDisk(dd);
    try {
      expect(disk.allocatedClusters).toBe(321);
      for (const c of [0, 1, 100, 319]) expect((await readCluster(disk, c)).equals(tagCluster("DELTA", c, MiB))).toBe(true);
      expect((await readCluster(disk, 400)).equals(tagCluster("BASE", 400, MiB))).toBe(true);
      expect((await readCluster(disk, 320)).equals(Buffer.alloc(MiB))).toBe(true);
    } finally {
      await disk.close();
    }
  });

  it("finishes an offline merge SIGKILLed halfway on a SPARSE image, filling its holes as ploop does", async () => {
    // Real hosts: v2 discard/compaction leaves unused clusters punched out of the image
    // (docs/ploop.md 1.9). ploop 1.15's `check -d` then clears the flag but refuses the image
    // (exit 11 "image is sparse") unless told to fill the holes (-S), as its own mount does.
    const dd = await makeDisk(diskDir, { size: "512M", clusterSectors: 2048 });
    const MiB = 1 << 20;
    await fillTop(dd, 400, 16, "BASE");
    await discardClusters(join(diskDir, "root.hds"), [401, 402, 405, 410]);
    expect(await ploopCallsSparse(join(diskDir, "root.hds"))).toBe(true);
    const S = journal.newSnapshotGuid();
    const frozenImage = await snapshotOfCrashedRun(dd, S);
    await fillTop(dd, 0, 320, "DELTA");
    await journal.setState(S, "merging");
    await killMergeHalfway(dd, S, frozenImage);
    expect(await readFile(dd, "utf8")).toContain(S);

    await expectRecoveredInterruptedMerge(dd, frozenImage);
    expect(await ploopCallsSparse(join(diskDir, "root.hds"))).toBe(false);
    await expectClusters(dd, [
      ...[0, 100, 319].map((c) => [c, tagCluster("DELTA", c, MiB)] as const),
      ...[400, 403, 415].map((c) => [c, tagCluster("BASE", c, MiB)] as const),
      ...[401, 405, 410].map((c) => [c, Buffer.alloc(MiB)] as const),
    ]);
  });

  it("removes the delta a merge killed between its descriptor switch and its unlink left behind, and no file it cannot prove it made", async () => {
    // ploop's merge: copy the child into S's image, switch the descriptor, unlink the
    // child. A kill between the last two leaves the whole child delta unlisted (on a
    // real host, GBs). strace kills ploop exactly there.
    const setUp = async (name: string): Promise<{ dd: string; dir: string; S: string }> => {
      const ctDir = join(dir, name);
      await mkdir(ctDir);
      const dd = await makeDisk(ctDir);
      await fillTop(dd, 0, 20, "BASE");
      const S = journal.newSnapshotGuid();
      await writeCrashedEntry(journal, { ct: name, descriptorPath: dd, snapshotGuid: S, state: "snapshot-pending" });
      await realPloop().snapshot(dd, S);
      await journal.setState(S, "snapshot-taken");
      await fillTop(dd, 10, 30, "AFTER");
      return { dd, dir: ctDir, S };
    };
    const a = await setUp("a");
    const b = await setUp("b");
    // Someone else's unlisted file of the same kind: never ours to remove.
    const foreign = join(a.dir, `root.hds.{${randomUUID()}}`);
    await writeFile(foreign, "not ploopvault's");
    const children = new Map<string, string>();
    for (const x of [a, b]) children.set(x.S, (await ploopSnapshotList(x.dd)).find((e) => e.parentGuid === x.S)!.file);

    const killing = new PloopCli({ bin: await ploopKilledAt(dir, "unlink", 1), lockRetries: 0 });
    const first = await recoverInterrupted(journal, killing, log);
    expect(first.map((r) => r.action)).toEqual(["failed", "failed"]);
    for (const x of [a, b]) {
      expect(await readFile(x.dd, "utf8")).not.toContain(x.S); // the switch happened
      expect(await unlistedImageFiles(x.dd)).toContain(children.get(x.S)!.split("/").pop());
    }
    // b's leftover is replaced by a copy (another inode): not provably the file ploop made.
    const bChild = children.get(b.S)!;
    await copyFile(bChild, `${bChild}.copy`);
    await rename(`${bChild}.copy`, bChild);

    const second = await recoverInterrupted(journal, realPloop(), log);
    const byCt = (ct: string): [string, string][] => second.filter((r) => r.ct === ct).map((r) => [r.action, r.detail]);
    expect(byCt("a")).toEqual([
      ["already-merged", `not in ${a.dd} any more (already merged); entry dropped`],
      [
        "removed-orphan-delta",
        `removed ${children.get(a.S)}: the delta merged into ${a.S}'s image (ploop was killed after switching ${a.dd} and before deleting it)`,
      ],
    ]);
    expect(byCt("b")).toEqual([["already-merged", `not in ${b.dd} any more (already merged); entry dropped`]]);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
    expect(await unlistedImageFiles(a.dd)).toEqual([foreign.split("/").pop()]);
    expect(await unlistedImageFiles(b.dd)).toEqual([bChild.split("/").pop()]);
    await expectClusters(a.dd, [
      [5, tagCluster("BASE", 5, 65536)],
      [39, tagCluster("AFTER", 39, 65536)],
    ]);
  });

  it("removes the empty delta and the .tmp of a ploop snapshot killed before its descriptor switch", async () => {
    const dd = await makeDisk(diskDir);
    await fillTop(dd, 0, 8, "BASE");
    const S = journal.newSnapshotGuid();
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "snapshot-pending" });
    // ploop snapshot: write DiskDescriptor.xml.tmp(.tmp), create the new delta, rename the
    // .tmp over the descriptor (the 2nd rename): killed there.
    const r = await execa(await ploopKilledAt(dir, "rename", 2), ["snapshot", "-u", S, dd], { reject: false });
    expect(r.exitCode).not.toBe(0);
    const orphan = await unlistedImageFiles(dd);
    expect(orphan).toHaveLength(1);
    expect(await filesIn(diskDir)).toContain("DiskDescriptor.xml.tmp");

    const reports = await recoverInterrupted(journal, realPloop(), log);
    expect(reports.map((x) => [x.action, x.detail])).toEqual([
      ["already-merged", `not in ${dd} (never created, or already merged); entry dropped`],
      ["removed-orphan-delta", `removed ${join(diskDir, orphan[0]!)}: the empty delta of an unfinished ploop snapshot of ${S}`],
      ["removed-stale-tmp", `removed leftover ${dd}.tmp`],
    ]);
    expect(await filesIn(diskDir)).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  });

  it("also removes that delta when ploop was killed before writing it (empty file, header cut short)", async () => {
    for (const length of [0, 100]) {
      const dd = await makeDisk(diskDir);
      const S = journal.newSnapshotGuid();
      await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "snapshot-pending" });
      const r = await execa(await ploopKilledAt(dir, "rename", 2), ["snapshot", "-u", S, dd], { reject: false });
      expect(r.exitCode).not.toBe(0);
      const [orphan] = await unlistedImageFiles(dd);
      // the file as a kill between its O_EXCL create and its first write leaves it
      await truncate(join(diskDir, orphan!), length);
      const reports = await recoverInterrupted(journal, realPloop(), log);
      expect(
        reports.map((x) => x.action),
        `${length} bytes`,
      ).toEqual(["already-merged", "removed-orphan-delta", "removed-stale-tmp"]);
      expect(await filesIn(diskDir)).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]);
      await rm(diskDir, { recursive: true, force: true });
      await mkdir(diskDir, { recursive: true });
    }
  });

  it("waits for an orphaned real merge that outlived our run, then finds the snapshot gone", async () => {
    const dd = await makeDisk(diskDir, { size: "512M", clusterSectors: 2048 });
    const ploop = realPloop();
    const S = newSnapshotGuid();
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "merging" });
    await ploop.snapshot(dd, S);
    await fillTop(dd, 0, 320, "DELTA");
    // Our run was SIGKILLed alone: its `ploop snapshot-delete` child keeps running.
    const orphan = execa(PLOOP_OFFLINE, ["snapshot-delete", "-u", S, dd], { reject: false });
    const frozenImage = join(diskDir, "root.hds");
    while (!(await imageMarkedInUse(frozenImage))) await new Promise((r) => setTimeout(r, 2));
    const reports = await recoverInterrupted(journal, ploop, log, { waitForPloopMs: 30_000 });
    expect((await orphan).exitCode).toBe(0);
    expect(reports).toEqual([{ ct: "101", snapshotGuid: S, action: "already-merged", detail: `not in ${dd} any more (already merged); entry dropped` }]);
    expect((await ploop.snapshotList(dd, TOP)).map((c) => c.guid)).toEqual([TOP]);
    await expectClusters(dd, [[319, tagCluster("DELTA", 319, 1 << 20)]]);
  });

  it("removes a stale DiskDescriptor.xml.tmp, but not while a ploop operation holds the lock", async () => {
    const dd = await makeDisk(diskDir);
    const ploop = realPloop();
    // A successful ploop operation leaves DiskDescriptor.xml.lck behind (as on real hosts).
    await ploop.snapshotList(dd, TOP);
    await copyFile(dd, `${dd}.tmp`);
    const S1 = newSnapshotGuid();
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S1, state: "merging" });
    const release = await holdFlock(`${dd}.lck`);
    try {
      expect(actions(await recoverInterrupted(journal, ploop, log))).toEqual(["already-merged"]);
    } finally {
      await release();
    }
    expect(await filesIn(diskDir)).toContain("DiskDescriptor.xml.tmp");

    const S2 = newSnapshotGuid();
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S2, state: "merging" });
    const reports = await recoverInterrupted(journal, ploop, log);
    expect(reports).toEqual([
      { ct: "101", snapshotGuid: S2, action: "already-merged", detail: `not in ${dd} any more (already merged); entry dropped` },
      { ct: "101", snapshotGuid: S2, action: "removed-stale-tmp", detail: `removed leftover ${dd}.tmp` },
    ]);
    expect(await filesIn(diskDir)).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]);
  });

  it("keeps the entry when the disk stays locked (fake ploop exiting 23)", async () => {
    const dd = await makeDisk(diskDir);
    const S = newSnapshotGuid();
    await realPloop().snapshot(dd, S);
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "snapshot-taken" });
    const fake = await script(
      dir,
      "fake-ploop",
      `echo "Error in do_lock (lock.c:132): The ${dd}.lck is locked: Resource temporarily unavailable" >&2\nexit 23`,
    );
    const reports = await recoverInterrupted(journal, new PloopCli({ bin: fake, lockRetries: 1, lockRetryDelayMs: 10 }), log);
    expect(reports).toEqual([
      {
        ct: "101",
        snapshotGuid: S,
        action: "locked",
        detail: `ploop snapshot-delete on ${dd}: disk is locked by another ploop operation (exit 23): Error in do_lock (lock.c:132): The ${dd}.lck is locked: Resource temporarily unavailable; entry kept, the next run retries`,
      },
    ]);
    expect((await journal.list()).entries.map((e) => e.snapshotGuid)).toEqual([S]);
    // The next run, with the lock gone, finishes it.
    expect(actions(await recoverInterrupted(journal, realPloop(), log))).toEqual(["merged"]);
  });

  it("waits for a ploop process still working on the snapshot, and skips entries of a live run", async () => {
    const dd = await makeDisk(diskDir);
    const S = newSnapshotGuid();
    await realPloop().snapshot(dd, S);
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "merging" });
    // Stand-in for an orphaned `ploop snapshot-delete -u S` that outlived our killed run.
    const orphan = execa("sh", ["-c", "sleep 1.5", "ploop", "snapshot-delete", "-u", S, dd], { reject: false });
    await new Promise((r) => setTimeout(r, 100));
    const short = await recoverInterrupted(journal, realPloop(), log, { waitForPloopMs: 300 });
    expect(short).toEqual([{ ct: "101", snapshotGuid: S, action: "in-progress", detail: `ploop process ${orphan.pid} is still working on it` }]);
    const t0 = Date.now();
    expect(actions(await recoverInterrupted(journal, realPloop(), log, { waitForPloopMs: 10_000 }))).toEqual(["merged"]);
    expect(Date.now() - t0).toBeGreaterThan(800);
    await orphan;

    // An entry of a run that is still alive (here: this process) is not touched.
    const S2 = newSnapshotGuid();
    await realPloop().snapshot(dd, S2);
    await journal.record({ ct: "101", descriptorPath: dd, snapshotGuid: S2, state: "snapshot-taken" });
    expect(await recoverInterrupted(journal, realPloop(), log)).toEqual([
      {
        ct: "101",
        snapshotGuid: S2,
        action: "in-progress",
        detail: expect.stringMatching(new RegExp(`^process ${process.pid} that took it \\(at .*\\) is still running$`)) as unknown as string,
      },
    ]);
    expect(await readFile(dd, "utf8")).toContain(S2);
  });

  it("reports corrupt journal files and carries on", async () => {
    const dd = await makeDisk(diskDir);
    const S = newSnapshotGuid();
    await realPloop().snapshot(dd, S);
    await writeCrashedEntry(journal, { ct: "101", descriptorPath: dd, snapshotGuid: S, state: "snapshot-taken" });
    const bad = join(journal.dir, "0000aaaa-0000-4000-8000-00000000000f.json");
    await writeFile(bad, "{not json");
    const reports = await recoverInterrupted(journal, realPloop(), log);
    expect(actions(reports)).toEqual(["corrupt-entry", "merged"]);
    expect(reports[0]!.detail).toMatch(new RegExp(`^journal file ${bad} is unreadable \\(not valid JSON.*\\); left in place, check it by hand$`));
    expect((await stat(bad)).isFile()).toBe(true);
    await rm(bad);
  });
});

describe("recoverUnjournaled", () => {
  it("merges this state dir's snapshots that no journal entry or kept record explains; leaves users' and other installations' alone", async () => {
    const dd = await makeDisk(diskDir);
    const ploop = realPloop();
    const user = `{${randomUUID()}}`; // a user's snapshot (ploop/vzctl make random v4 GUIDs)
    const lost = journal.newSnapshotGuid(); // ours, its journal entry lost with the state dir
    const other = newSnapshotGuid(stateDirOwnerId(join(dir, "another-state-dir")));
    const kept = journal.newSnapshotGuid(); // ours, kept on purpose (kept record)
    const lookalike = "{70766c74-0000-4000-8000-000000000001}"; // our tag, but version 4: not ours
    let cluster = 0;
    for (const g of [user, lost, other, lookalike, kept]) {
      await fillTop(dd, cluster, 4, `W${cluster}`);
      cluster += 2; // overlapping writes: every merge has something to combine
      await ploop.snapshot(dd, g);
    }
    await fillTop(dd, cluster, 4, "TOP");
    const before = join(dir, "before.raw");
    await ploopFlatten(dd, before);

    const reports = await recoverUnjournaled([{ ct: "101", descriptorPath: dd }], journal, ploop, log, { keptGuids: new Set([kept]) });
    expect(reports.map((r) => [r.snapshotGuid, r.action])).toEqual([
      [lost, "merged"],
      [other, "foreign-snapshot"],
    ]);
    expect(reports[0]!.detail).toBe(
      `made by this state dir's ploopvault but in no journal entry or kept record (state dir lost or reset?): ploop snapshot-delete merged it back into ${dd}`,
    );
    expect(reports[1]!.detail).toBe(
      `made by ploopvault with another state dir (owner ${stateDirOwnerId(join(dir, "another-state-dir"))}, this one is ${journal.ownerId}); left alone. If no other ploopvault installation backs up this host, merge it with: ploop snapshot-delete -u ${other} ${dd}`,
    );
    expect(lines.filter((l) => l.startsWith("warning: "))).toHaveLength(1);
    expect((await ploopSnapshotList(dd)).map((e) => e.guid).sort()).toEqual([user, other, lookalike, kept, TOP].sort());
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
    expect(await unlistedImageFiles(dd)).toEqual([]);
    const after = join(dir, "after.raw");
    await ploopFlatten(dd, after);
    expect(await sha256File(after)).toBe(await sha256File(before));

    // Nothing left to do the next time (the foreign one is reported again).
    expect((await recoverUnjournaled([{ ct: "101", descriptorPath: dd }], journal, ploop, log, { keptGuids: new Set([kept]) })).map((r) => r.action)).toEqual([
      "foreign-snapshot",
    ]);
  });

  it("finishes an interrupted merge of a lost snapshot (image left in use) like a journaled one", async () => {
    const dd = await makeDisk(diskDir, { size: "512M", clusterSectors: 2048 });
    const ploop = realPloop();
    await fillTop(dd, 400, 8, "BASE");
    const S = journal.newSnapshotGuid();
    await ploop.snapshot(dd, S);
    const frozenImage = (await ploop.snapshotList(dd, S))[0]!.file;
    await fillTop(dd, 0, 320, "DELTA");
    await killMergeHalfway(dd, S, frozenImage);
    // No journal at all (state dir lost).
    const reports = await recoverUnjournaled([{ ct: "101", descriptorPath: dd }], journal, ploop, log, { keptGuids: new Set() });
    expect(reports.map((r) => r.action)).toEqual(["merged-after-clearing-in-use"]);
    expect((await ploop.snapshotList(dd, TOP)).map((c) => c.guid)).toEqual([TOP]);
    expect(await filesIn(diskDir)).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]);
    await expectClusters(dd, [
      [7, tagCluster("DELTA", 7, 1 << 20)],
      [405, tagCluster("BASE", 405, 1 << 20)],
    ]);
  });
});
