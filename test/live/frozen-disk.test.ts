/**
 * withFrozenDisk with the real ploop (offline) while a simulated running container
 * (test/helpers/running-container.mjs) keeps writing into the top image: the frozen
 * chain never changes while it writes, afterwards no snapshot remains, and every write
 * of the simulator is in the live chain.
 */
import { execa, type ResultPromise } from "execa";
import { createHash } from "node:crypto";
import { readFile, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SnapshotJournal } from "../../src/host/journal.js";
import { FrozenChainChangedError, recoverInterrupted, SnapshotMergeError, withFrozenDisk, type FrozenDisk } from "../../src/host/snapshot-lifecycle.js";
import { PloopCli, PloopCommandError } from "../../src/host/ploop-cli.js";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopCheck } from "../helpers/ploop-tool.js";
import { deadPid, filesIn, makeDisk, PLOOP_OFFLINE, ploopKilledAt, readCluster, realPloop, scratch, SIMULATOR, tagCluster, TOP } from "./fixtures.js";

const CLUSTER = 65536;
const SIM_CLUSTERS = 24;

interface SimWrite {
  seq: number;
  cluster: number;
  image: string;
  fileCluster: number;
  chain: string[];
}

let dir: string;
let cleanup: () => Promise<void>;
let journal: SnapshotJournal;
let lines: string[];
const log = (l: string): void => void lines.push(l);

beforeEach(async () => {
  ({ dir, cleanup } = await scratch("frozen"));
  journal = new SnapshotJournal(join(dir, "state"));
  lines = [];
});
afterEach(async () => {
  await cleanup();
});

async function readLog(path: string): Promise<SimWrite[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter((l) => l.endsWith("}"))
    .map((l) => JSON.parse(l) as SimWrite);
}

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** "seq" a simulator cluster holds (-1 for zeros), checking the whole cluster is that one write. */
function seqOf(buf: Buffer, cluster: number): number {
  if (buf.every((b) => b === 0)) return -1;
  const unit = buf.toString("latin1", 0, 32);
  const m = /^PVSIM-seq=(\d{10}) cl=(\d{7})\n$/.exec(unit);
  if (m === null) throw new Error(`cluster ${cluster} holds foreign data: ${JSON.stringify(unit)}`);
  expect(Number(m[2])).toBe(cluster);
  expect(buf.equals(Buffer.alloc(buf.length, unit, "latin1"))).toBe(true); // no torn write
  return Number(m[1]);
}

async function readSeqs(dd: string, topGuid?: string): Promise<number[]> {
  const disk = await openLogicalDisk(dd, topGuid === undefined ? {} : { topGuid });
  try {
    const seqs: number[] = [];
    for (let c = 0; c < SIM_CLUSTERS; c++) seqs.push(seqOf(await readCluster(disk, c), c));
    return seqs;
  } finally {
    await disk.close();
  }
}

async function sha256Files(paths: readonly string[]): Promise<string[]> {
  return Promise.all(
    paths.map(async (p) =>
      createHash("sha256")
        .update(await readFile(p))
        .digest("hex"),
    ),
  );
}

describe("withFrozenDisk", () => {
  it("freezes the chain while a running container writes, then merges every write back", async () => {
    const dd = await makeDisk(join(dir, "disk"), { size: "64M", clusterSectors: CLUSTER / 512 });
    const simLog = join(dir, "sim.log");
    const sim: ResultPromise<{ reject: false }> = execa(
      process.execPath,
      [SIMULATOR, "--dd", dd, "--log", simLog, "--clusters", String(SIM_CLUSTERS), "--interval-ms", "2"],
      { reject: false },
    );
    try {
      await until("simulator warm-up", async () => (await readLog(simLog)).length >= 40);
      const ploop = realPloop();
      let frozenSeqs: number[] = [];
      let seenDuring = 0;

      const result = await withFrozenDisk({ ct: "101", descriptorPath: dd, ploop, journal, log }, async (frozen: FrozenDisk) => {
        const S = frozen.snapshotGuid;
        expect((await journal.list()).entries).toMatchObject([{ ct: "101", snapshotGuid: S, state: "snapshot-taken", descriptorPath: dd }]);
        expect(frozen.chain.map((c) => c.guid)).toEqual([S]);
        const files = frozen.chain.map((c) => c.file);
        const hashes = await sha256Files(files);
        frozenSeqs = await readSeqs(dd, S);

        // Let the container write plenty into the new top while we "read".
        const atStart = (await readLog(simLog)).filter((w) => w.chain.includes(S)).length;
        await until("writes during the frozen phase", async () => (await readLog(simLog)).filter((w) => w.chain.includes(S)).length >= atStart + 60);
        seenDuring = (await readLog(simLog)).filter((w) => w.chain.includes(S)).length;

        expect(await sha256Files(files)).toEqual(hashes);
        expect(await readSeqs(dd, S)).toEqual(frozenSeqs);
        await frozen.verifyUnchanged();
        return S;
      });
      const S = result;

      // Some writes after the merge too, then stop the container.
      const atMerge = (await readLog(simLog)).length;
      await until("writes after the merge", async () => (await readLog(simLog)).length >= atMerge + 20);
      process.kill(sim.pid!, "SIGTERM");
      const done = await sim;
      expect(done.exitCode).toBe(0);
      expect(done.stdout).toMatch(/stopped after \d+ writes/);

      const writes = await readLog(simLog);
      writes.forEach((w, k) => expect(w.seq).toBe(k));
      const firstFrozen = writes.findIndex((w) => w.chain.includes(S));
      const lastFrozen = writes.length - 1 - [...writes].reverse().findIndex((w) => w.chain.includes(S));
      expect(firstFrozen).toBeGreaterThan(0);
      expect(lastFrozen - firstFrozen + 1).toBeGreaterThanOrEqual(seenDuring);
      expect(seenDuring).toBeGreaterThanOrEqual(60);
      // Writes during the snapshot went to the new top (parent S), never into S's image.
      for (const w of writes.slice(firstFrozen, lastFrozen + 1)) {
        expect(w.chain).toEqual([TOP, S]);
        expect(w.image).not.toBe(join(dir, "disk", "root.hds"));
      }
      expect(writes.length - 1 - lastFrozen).toBeGreaterThanOrEqual(20);
      for (const w of writes.slice(lastFrozen + 1)) expect(w.chain).toEqual([TOP]);

      // The frozen view = exactly the writes before the snapshot.
      const expectFrozen = Array<number>(SIM_CLUSTERS).fill(-1);
      for (const w of writes.slice(0, firstFrozen)) expectFrozen[w.cluster] = w.seq;
      expect(frozenSeqs).toEqual(expectFrozen);

      // Afterwards: no snapshot left, journal empty, every write present in the live disk.
      expect((await ploop.snapshotList(dd, TOP)).map((c) => c.guid)).toEqual([TOP]);
      expect(await readFile(dd, "utf8")).not.toContain(S);
      expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
      expect(await filesIn(join(dir, "disk"))).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]);
      const expectLive = Array<number>(SIM_CLUSTERS).fill(-1);
      for (const w of writes) expectLive[w.cluster] = w.seq;
      expect(await readSeqs(dd)).toEqual(expectLive);
      const chk = await ploopCheck(join(dir, "disk", "root.hds"));
      expect(chk.exitCode).toBe(0);

      expect(lines).toEqual([`container 101: snapshot ${S} taken on ${dd}`, `container 101: snapshot ${S} merged back`]);
    } finally {
      if (sim.exitCode === null) sim.kill("SIGKILL");
      await sim;
    }
  });

  it("merges the snapshot back when the reader fails, and rethrows", async () => {
    const dd = await makeDisk(join(dir, "disk"));
    await writeClusterToTop(dd, 2, tagCluster("D", 2, CLUSTER));
    let S = "";
    await expect(
      withFrozenDisk({ ct: "101", descriptorPath: dd, ploop: realPloop(), journal, log }, async (frozen) => {
        S = frozen.snapshotGuid;
        throw new Error("upload failed");
      }),
    ).rejects.toThrow("upload failed");
    expect(await readFile(dd, "utf8")).not.toContain(S);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  });

  it("fails the backup when an image below the snapshot changes while reading", async () => {
    const dd = await makeDisk(join(dir, "disk"));
    await writeClusterToTop(dd, 2, tagCluster("D", 2, CLUSTER));
    const e = await withFrozenDisk({ ct: "101", descriptorPath: dd, ploop: realPloop(), journal, log }, async (frozen) => {
      const base = frozen.chain[frozen.chain.length - 1]!.file;
      await utimes(base, new Date(), new Date(Date.now() + 5000)); // someone touched it
      return frozen.snapshotGuid;
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(FrozenChainChangedError);
    expect((e as Error).message).toMatch(
      /^container 101: frozen chain of snapshot \{[0-9a-f-]{36}\} changed during the backup: .*root\.hds was modified \(mtime .*\) \(another tool rewrote the disk; the backup is not consistent\)$/,
    );
    expect((await realPloop().snapshotList(dd, TOP)).length).toBe(1);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  });

  it("keeps the journal entry and names the snapshot when the merge fails; recovery finishes it", async () => {
    const dd = await makeDisk(join(dir, "disk"));
    class FailingMerge extends PloopCli {
      override async snapshotDelete(): Promise<"deleted" | "absent"> {
        throw new PloopCommandError(`ploop snapshot-delete on ${dd}: disk is locked by another ploop operation (exit 23): locked`, {
          ploopExitCode: 23,
          args: [],
          stderrLine: "locked",
        });
      }
    }
    let S = "";
    const e = await withFrozenDisk({ ct: "101", descriptorPath: dd, ploop: new FailingMerge({ bin: PLOOP_OFFLINE }), journal, log }, async (frozen) => {
      S = frozen.snapshotGuid;
      return 1;
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SnapshotMergeError);
    expect((e as Error).message).toBe(
      `container 101: backup snapshot ${S} could not be merged back into ${dd} (ploop snapshot-delete on ${dd}: disk is locked by another ploop operation (exit 23): locked); it is left in place and the next ploopvault run retries the merge`,
    );
    expect((await journal.list()).entries).toMatchObject([{ snapshotGuid: S, state: "merging" }]);
    expect(await readFile(dd, "utf8")).toContain(S);
    // The entry belongs to this (live) process: recovery leaves it alone...
    expect((await recoverInterrupted(journal, realPloop(), log)).map((r) => r.action)).toEqual(["in-progress"]);
    // ...until that process is gone (simulated by rewriting the owner pid).
    const file = join(journal.dir, `${S.slice(1, -1)}.json`);
    const entry = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    await writeFile(file, JSON.stringify({ ...entry, pid: await deadPid() }));
    expect((await recoverInterrupted(journal, realPloop(), log)).map((r) => r.action)).toEqual(["merged"]);
    expect(await readFile(dd, "utf8")).not.toContain(S);
  });

  it("takes no snapshot when already aborted", async () => {
    const dd = await makeDisk(join(dir, "disk"));
    const xml = await readFile(dd, "utf8");
    const controller = new AbortController();
    controller.abort(new Error("stop"));
    await expect(withFrozenDisk({ ct: "101", descriptorPath: dd, ploop: realPloop(), journal, log, signal: controller.signal }, async () => 1)).rejects.toThrow(
      "stop",
    );
    expect(await readFile(dd, "utf8")).toBe(xml);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  });

  it("drops its journal entry when ploop refuses the snapshot", async () => {
    const dd = await makeDisk(join(dir, "disk"));
    const fake = join(dir, "no-such-ploop");
    const e = await withFrozenDisk({ ct: "101", descriptorPath: dd, ploop: new PloopCli({ bin: fake }), journal, log }, async () => 1).catch((x: unknown) => x);
    expect((e as Error).message).toBe(`container 101: cannot take backup snapshot: ploop binary "${fake}" not found; install ploop or pass --ploop-bin`);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  });

  it("leaves nothing behind when ploop snapshot is killed before its descriptor switch", async () => {
    const dd = await makeDisk(join(dir, "disk"));
    await writeClusterToTop(dd, 2, tagCluster("D", 2, CLUSTER));
    const xml = await readFile(dd, "utf8");
    const ploop = new PloopCli({ bin: await ploopKilledAt(dir, "rename", 2), lockRetries: 0 });
    const e = await withFrozenDisk({ ct: "101", descriptorPath: dd, ploop, journal, log }, async () => 1).catch((x: unknown) => x);
    expect((e as Error).message).toMatch(/^container 101: cannot take backup snapshot: ploop snapshot on .*: killed by SIGKILL/);
    // The empty delta ploop had created and its DiskDescriptor.xml.tmp are gone.
    expect(await filesIn(join(dir, "disk"))).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]);
    expect(lines.some((l) => /removed-orphan-delta: removed .*root\.hds\.\{[0-9a-f-]{36}\}: the empty delta of an unfinished ploop snapshot/.test(l))).toBe(
      true,
    );
    expect(await readFile(dd, "utf8")).toBe(xml);
    expect(await journal.list()).toEqual({ entries: [], corrupt: [] });
  });
});
