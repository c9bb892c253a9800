/**
 * Online backup of "running" containers through the CLI with the real ploop (offline, no
 * kernel): a simulator process (test/helpers/running-container.mjs) writes recognisable
 * clusters into the current top delta, serialised with ploop's own lock as the kernel
 * serialises I/O with a snapshot. Checks: the backup holds exactly the writes made before
 * its snapshot, no snapshot is left, no write is lost, kill -9 at random moments is
 * recovered by the next run, concurrent runs do not collide, user snapshots are untouched.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { ploopFlatten, ploopSnapshot, ploopSnapshotList } from "../helpers/ploop-tool.js";
import { fillTop, flockHelperOf, makeDisk, SIMULATOR, tagCluster } from "../live/fixtures.js";
import { sha256File } from "../ploop/fixtures.js";

const CLUSTER = 64 << 10; // makeDisk: 128-sector clusters
const WRITE_FIRST = 100;
const WRITE_CLUSTERS = 24;

interface SimWrite {
  seq: number;
  cluster: number;
  chain: string[];
}

interface Simulator {
  child: ChildProcess;
  log: string;
  stop(): Promise<SimWrite[]>;
}

async function startSimulator(dd: string, log: string): Promise<Simulator> {
  const child = spawn(
    process.execPath,
    [SIMULATOR, "--dd", dd, "--log", log, "--first", String(WRITE_FIRST), "--clusters", String(WRITE_CLUSTERS), "--interval-ms", "3"],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("ready")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`simulator exited early (${code})`)));
  });
  return {
    child,
    log,
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      return (await readFile(log, "utf8"))
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as SimWrite);
    },
  };
}

/** The simulator's cluster content for a write (see running-container.mjs). */
function simCluster(seq: number, cluster: number): Buffer {
  return Buffer.alloc(CLUSTER, `PVSIM-seq=${String(seq).padStart(10, "0")} cl=${String(cluster).padStart(7, "0")}\n`, "latin1");
}

/** Expected content of the write clusters: the last write before `until` (exclusive) per cluster. */
function lastWrites(writes: SimWrite[], until: number): Map<number, number> {
  const last = new Map<number, number>();
  for (const w of writes.slice(0, until)) last.set(w.cluster, w.seq);
  return last;
}

/** Index of the first write made after snapshot S was taken. */
function firstAfterSnapshot(writes: SimWrite[], snapshotGuid: string): number {
  const i = writes.findIndex((w) => w.chain.map((g) => g.toLowerCase()).includes(snapshotGuid.toLowerCase()));
  return i < 0 ? writes.length : i;
}

async function readCluster(source: { read(offset: number, target: Uint8Array): Promise<void> }, cluster: number): Promise<Buffer> {
  const buf = Buffer.alloc(CLUSTER);
  await source.read(cluster * CLUSTER, buf);
  return buf;
}

/** A raw file as a read() source. */
async function rawSource(path: string): Promise<{ read(offset: number, target: Uint8Array): Promise<void>; close(): Promise<void> }> {
  const fh = await open(path, "r");
  return {
    async read(offset, target) {
      await fh.read(target, 0, target.length, offset);
    },
    close: () => fh.close(),
  };
}

/** Every write cluster holds exactly the expected write (or the base fill if never written). */
async function expectWriteClusters(
  source: { read(offset: number, target: Uint8Array): Promise<void> },
  expected: Map<number, number>,
  what: string,
): Promise<void> {
  for (let c = WRITE_FIRST; c < WRITE_FIRST + WRITE_CLUSTERS; c++) {
    const seq = expected.get(c);
    const want = seq === undefined ? tagCluster("base", c, CLUSTER) : simCluster(seq, c);
    const got = await readCluster(source, c);
    if (!got.equals(want))
      throw new Error(`${what}: cluster ${c} holds "${got.toString("latin1", 0, 31)}", expected ${seq === undefined ? "the base fill" : `write seq ${seq}`}`);
  }
}

async function newContainer(root: string, ct: string): Promise<string> {
  const dir = join(root, ct, "root.hdd");
  await mkdir(dir, { recursive: true });
  const dd = await makeDisk(dir, { size: "16M" });
  await fillTop(dd, 0, 40, "base");
  await fillTop(dd, WRITE_FIRST, WRITE_CLUSTERS, "base");
  await writeFile(join(root, ct, "ve.conf"), `VE_ROOT="/vz/root/${ct}"\nHOSTNAME="ct${ct}"\n`);
  return dd;
}

describe("online backup of running containers", () => {
  let repo: RepoTarget;
  let work: string;
  let privateRoot: string;
  // Classic mode: every snapshot is merged back at once (incremental.test.ts covers the kept delta).
  const args = (): string[] => [
    ...repo.args,
    "--private-root",
    privateRoot,
    "--vzlist-bin",
    "/nonexistent/vzlist",
    "--ploop-bin",
    PLOOP_WRAPPER,
    "--no-incremental",
  ];

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-live-"));
    privateRoot = join(work, "private");
    expect((await runCli(["init", ...repo.args, "--chunk-avg", "64K"])).code).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("backs up exactly the writes made before the snapshot; nothing is left, nothing lost", async () => {
    const dd = await newContainer(privateRoot, "201");
    const sim = await startSimulator(dd, join(work, "sim-201.log"));
    let result: { snapshotGuid: string; backup: string; status: string } | undefined;
    let writes: SimWrite[] = [];
    try {
      await new Promise((r) => setTimeout(r, 300));
      const b = await runCli(["backup", ...args(), "201", "--json"]);
      expect(b.code, b.stderr).toBe(0);
      [result] = jsonLines<{ snapshotGuid: string; backup: string; status: string }>(b.stdout);
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      writes = await sim.stop();
    }
    const cut = firstAfterSnapshot(writes, result!.snapshotGuid);
    expect(cut).toBeGreaterThan(0); // writes before the snapshot
    expect(cut).toBeLessThan(writes.length); // and after it: the container kept running

    const raw = join(work, "201.raw");
    const r = await runCli(["restore", ...repo.args, "201", "--format", "raw", "--target", raw]);
    expect(r.code, r.stderr).toBe(0);
    const restored = await rawSource(raw);
    await expectWriteClusters(restored, lastWrites(writes, cut), "restored backup");
    await restored.close();

    const chain = await ploopSnapshotList(dd);
    expect(chain).toHaveLength(1); // our snapshot was merged back
    const live = await openLogicalDisk(dd);
    await expectWriteClusters(live, lastWrites(writes, writes.length), "live disk");
    await live.close();

    const p = await runCli(["restore", ...repo.args, "201", "--target", join(work, "restored-201", "root.hdd")]);
    expect(p.code, p.stderr).toBe(0);
    expect(await readFile(join(work, "restored-201", "root.hdd", "ve.conf"), "utf8")).toContain('HOSTNAME="ct201"');
  });

  it("survives kill -9 at random moments: the next run recovers, no write is lost, every listed backup restores exactly", async () => {
    const dd = await newContainer(privateRoot, "202");
    const sim = await startSimulator(dd, join(work, "sim-202.log"));
    const trials = Number(process.env.PLOOPVAULT_KILL_TRIALS ?? 10);
    const recoveries: string[] = [];
    let writes: SimWrite[] = [];
    try {
      for (let i = 0; i < trials; i++) {
        const child = execa(process.execPath, [CLI, "backup", ...args(), "202", "--json"], { reject: false, env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER } });
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 1400));
        child.kill("SIGKILL");
        await child;
        const next = await runCli(["backup", ...args(), "202", "--json"]);
        expect(next.code, next.stderr).toBe(0);
        recoveries.push(...next.stderr.split("\n").filter((l) => l.startsWith("recovery:")));
        expect(await ploopSnapshotList(dd)).toHaveLength(1);
      }
    } finally {
      writes = await sim.stop();
    }
    expect(await ploopSnapshotList(dd)).toHaveLength(1);
    const live = await openLogicalDisk(dd);
    await expectWriteClusters(live, lastWrites(writes, writes.length), "live disk after kills");
    await live.close();

    const list = await runCli(["snapshots", ...repo.args, "--ct", "202", "--json"]);
    const rows = JSON.parse(list.stdout) as { id: string; snapshotGuid: string }[];
    expect(rows.length).toBeGreaterThanOrEqual(trials);
    for (const row of rows) {
      const raw = join(work, `202-${row.id}.raw`);
      const r = await runCli(["restore", ...repo.args, `202/${row.id}`, "--format", "raw", "--target", raw]);
      expect(r.code, r.stderr).toBe(0);
      const src = await rawSource(raw);
      await expectWriteClusters(src, lastWrites(writes, firstAfterSnapshot(writes, row.snapshotGuid)), `backup ${row.id}`);
      await src.close();
      await rm(raw);
    }
    console.log(`kill -9 trials: ${trials}, recovery actions reported: ${recoveries.length}`);
  });

  it("two concurrent runs: the second waits for the first, or exits cleanly with --lock-wait 0", async () => {
    await newContainer(privateRoot, "203");
    const [a, b] = await Promise.all([runCli(["backup", ...args(), "203", "--json", "-q"]), runCli(["backup", ...args(), "203", "--json", "-q"])]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const first = execa(process.execPath, [CLI, "backup", ...args(), "--all", "-q"], { reject: false, env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER } });
    await new Promise((r) => setTimeout(r, 300));
    const second = await runCli(["backup", ...args(), "--all", "--lock-wait", "0"]);
    const firstResult = await first;
    expect(firstResult.exitCode, String(firstResult.stderr)).toBe(0);
    if (second.code !== 0) {
      expect(second.code).toBe(4);
      expect(second.stderr.trim().split("\n")).toHaveLength(1);
      expect(second.stderr).toMatch(/host lock/);
    }
    for (const ct of ["201", "202", "203"]) expect(await ploopSnapshotList(join(privateRoot, ct, "root.hdd", "DiskDescriptor.xml"))).toHaveLength(1);
  });

  it("backs up a disk with user snapshots at its top state and leaves them untouched", async () => {
    const dd = await newContainer(privateRoot, "204");
    const u1 = `{${randomUUID()}}`;
    const u2 = `{${randomUUID()}}`;
    await ploopSnapshot(dd, u1);
    await fillTop(dd, 50, 5, "after-u1");
    await ploopSnapshot(dd, u2);
    await fillTop(dd, 52, 5, "after-u2");
    const before = await ploopSnapshotList(dd);
    const lowerShas = await Promise.all(
      before.filter((e) => e.guid !== "{5fbaabe3-6958-40ff-92a7-860e329aab41}").map(async (e) => [e.guid, await sha256File(e.file)] as const),
    );
    const expected = join(work, "204.expected");
    await ploopFlatten(dd, expected);

    const b = await runCli(["backup", ...args(), "204", "--json"]);
    expect(b.code, b.stderr).toBe(0);
    const raw = join(work, "204.raw");
    expect((await runCli(["restore", ...repo.args, "204", "--format", "raw", "--target", raw])).code).toBe(0);
    expect(await sha256File(raw)).toBe(await sha256File(expected));

    const after = await ploopSnapshotList(dd);
    expect(after.map((e) => e.guid).sort()).toEqual(before.map((e) => e.guid).sort());
    for (const [guid, sha] of lowerShas) {
      const entry = after.find((e) => e.guid === guid)!;
      expect(await sha256File(entry.file), `user snapshot ${guid}`).toBe(sha);
    }
  });

  it("stops with a one-line error, merging its snapshot back and writing no backup, when the host lock's flock helper dies", async () => {
    const dd = await newContainer(privateRoot, "205");
    await fillTop(dd, 200, 40, "more"); // 4.5 MiB to read at 1 MiB/s: time to kill the helper
    const child = execa(process.execPath, [CLI, "backup", ...args(), "205", "--limit-read", "1M"], { reject: false, env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER } });
    const lockPath = join(repo.stateDir, "run.lock");
    let helper = 0;
    const t0 = Date.now();
    // Wait until the backup holds the lock and reads its snapshot.
    while (helper === 0 || (await ploopSnapshotList(dd)).length < 2) {
      if (Date.now() - t0 > 30_000) throw new Error("the backup never got to reading its snapshot");
      helper = await flockHelperOf(child.pid!, lockPath).catch(() => 0);
      await new Promise((r) => setTimeout(r, 20));
    }
    process.kill(helper, "SIGKILL");
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(1);
    expect(String(r.stderr).trim().split("\n").pop()).toBe(
      `ploopvault: host lock ${lockPath} lost: its flock helper (pid ${helper}) was killed by SIGKILL; another run may start now, so this one stops`,
    );
    expect(await ploopSnapshotList(dd)).toHaveLength(1);
    expect(await readdir(join(repo.stateDir, "journal"))).toEqual([]);
    const list = await runCli(["snapshots", ...repo.args, "--ct", "205", "--json"]);
    expect(JSON.parse(list.stdout)).toEqual([]);
  });
});
