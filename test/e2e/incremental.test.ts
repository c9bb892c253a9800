/**
 * Incremental backups from the kept ploop delta, through the CLI with the real ploop:
 * random writes between backups (and during one, by the running-container simulator), a
 * grow of the disk, an admin merging our snapshot, a kill -9: every backup restores
 * bit-identical to the real ploop's flattening of the same snapshot, the mode is
 * incremental exactly when it may be, and the chain never holds more than the disk's own
 * image + one kept delta after a run. Kills (of the main process or of its whole process
 * group, ploop included) land at random moments and in the middle of the merge of the
 * previous kept delta into a sparse image; a lost state dir loses no snapshot.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { setImageInUse, topImagePath, writeClusterToTop } from "../helpers/delta-writer.js";
import { keptDeltaEmptyAndIdle } from "../../src/host/incremental.js";
import { KeptSnapshots } from "../../src/host/kept-snapshot.js";
import { ploopFlatten, ploopOk, ploopSnapshotList } from "../helpers/ploop-tool.js";
import { imageMarkedInUse } from "../../src/host/snapshot-lifecycle.js";
import { digHoles, fillTop, makeDisk, ploopCallsSparse, script, SIMULATOR, TOP, unlistedImageFiles } from "../live/fixtures.js";
import { sha256File } from "../ploop/fixtures.js";

interface Result {
  ct: string;
  status: string;
  backup: string;
  snapshotGuid: string;
  mode: "incremental" | "full";
  fullReason?: string;
  baseBackup?: string;
  readBytes: number;
  dataBytes: number;
  reusedChunks: number;
}

const CLUSTER = 64 << 10;
/** Kill trials per kind (CI: a few; PLOOPVAULT_KILL_TRIALS=N for more by hand). */
const KILL_TRIALS = Number(process.env.PLOOPVAULT_KILL_TRIALS ?? 2);
/** A kill trial is two backups, a restore and a flattening by ploop: give each its time. */
const killTestTimeout = (kills: number): number => 60_000 + kills * 45_000;

describe("incremental backups", () => {
  let repo: RepoTarget;
  let work: string;
  let privateRoot: string;
  const args = (): string[] => [...repo.args, "--private-root", privateRoot, "--vzlist-bin", "/nonexistent/vzlist", "--ploop-bin", PLOOP_WRAPPER];

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-incr-"));
    privateRoot = join(work, "private");
    expect((await runCli(["init", ...repo.args, "--chunk-avg", "16K"])).code).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  async function backupAndVerify(ct: string, dd: string, step: string, extra: string[] = []): Promise<Result & { stderr: string }> {
    const b = await runCli(["backup", ...args(), ct, "--json", ...extra]);
    expect(b.code, `${step}: ${b.stderr}`).toBe(0);
    // Whatever recovery found, it finished it: nothing failed, nothing was left in place.
    expect(
      b.stderr.split("\n").filter((l) => l.startsWith("warning: recovery:")),
      step,
    ).toEqual([]);
    // No image file beside the descriptor that it does not list (a killed ploop's leftovers).
    expect(await unlistedImageFiles(dd), step).toEqual([]);
    const [r] = jsonLines<Result>(b.stdout);
    expect(r!.status).toBe("ok");
    // Chain invariant: the disk's own image + our kept delta, nothing else.
    const chain = await ploopSnapshotList(dd);
    expect(
      chain.map((e) => e.guid),
      step,
    ).toHaveLength(2);
    expect(
      chain.map((e) => e.guid.toLowerCase()),
      step,
    ).toContain(r!.snapshotGuid.toLowerCase());
    const expected = join(work, `${ct}.expected`);
    await ploopFlatten(dd, expected, { topGuid: r!.snapshotGuid });
    const raw = join(work, `${ct}.raw`);
    const restore = await runCli(["restore", ...repo.args, `${ct}/${r!.backup}`, "--format", "raw", "--target", raw]);
    expect(restore.code, `${step}: ${restore.stderr}`).toBe(0);
    expect(await sha256File(raw), `${step}: restored backup equals the real ploop's flattening of its snapshot`).toBe(await sha256File(expected));
    await rm(raw);
    await rm(expected);
    return { ...r!, stderr: b.stderr };
  }

  async function randomWrites(dd: string, clusters: number, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const c = Math.floor(Math.random() * clusters);
      const partial = Math.random() < 0.3;
      await writeClusterToTop(dd, c, randomBytes(partial ? 4096 : CLUSTER));
    }
  }

  it("random writes, writes during a backup, a grow and an admin merge: every backup restores exactly", async () => {
    const ct = "301";
    const dir = join(privateRoot, ct, "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await makeDisk(dir, { size: "32M" });
    await fillTop(dd, 0, 200, "base");
    let clusters = 512;

    const first = await backupAndVerify(ct, dd, "first backup");
    expect(first.mode).toBe("full");

    for (let round = 1; round <= 7; round++) {
      const step = `round ${round}`;
      let expectFull: RegExp | null = null;
      await randomWrites(dd, clusters, 3 + Math.floor(Math.random() * 10));
      if (round === 3) {
        await ploopOk(["grow", "-s", "48M", dd]);
        clusters = 768;
        await randomWrites(dd, clusters, 4);
        expectFull = /resized/;
      }
      if (round === 5) {
        // An admin merges our kept snapshot away: the next backup must read everything.
        const kept = (await ploopSnapshotList(dd)).find((e) => e.guid !== "{5fbaabe3-6958-40ff-92a7-860e329aab41}")!;
        await ploopOk(["snapshot-delete", "-u", kept.guid, dd]);
        expectFull = /no longer in the disk's chain/;
      }
      let sim: ReturnType<typeof spawn> | null = null;
      if (round === 2 || round === 6) {
        // The container keeps writing during this backup.
        sim = spawn(
          process.execPath,
          [SIMULATOR, "--dd", dd, "--log", join(work, `sim-${round}.log`), "--first", "300", "--clusters", "20", "--interval-ms", "2"],
          { stdio: ["ignore", "pipe", "inherit"] },
        );
        await new Promise<void>((resolve) => sim!.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve()));
      }
      let r: Result;
      try {
        r = await backupAndVerify(ct, dd, step);
      } finally {
        if (sim) {
          const exited = new Promise((resolve) => sim!.once("exit", resolve));
          sim.kill("SIGTERM");
          await exited;
        }
      }
      if (expectFull) {
        expect(r.mode, step).toBe("full");
        expect(r.fullReason, step).toMatch(expectFull);
      } else {
        expect(r.mode, `${step}: ${r.fullReason ?? ""}`).toBe("incremental");
        expect(r.reusedChunks, step).toBeGreaterThan(0);
        expect(r.readBytes, step).toBeLessThan(r.dataBytes / 2);
      }
    }
  });

  /** Start a backup in its own process group; kill() takes the main process or the whole group (ploop included). */
  function startBackup(ct: string): { done: Promise<unknown>; exited: () => boolean; kill: (target: "main" | "group") => void } {
    const child = execa(process.execPath, [CLI, "backup", ...args(), ct], { reject: false, detached: true, env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER } });
    let exited = false;
    const done = child.then(() => (exited = true));
    return {
      done,
      exited: () => exited,
      kill: (target) => {
        try {
          if (target === "group") process.kill(-child.pid!, "SIGKILL");
          else child.kill("SIGKILL");
        } catch (error) {
          // The run finished before the kill: nothing to kill.
          if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
        }
      },
    };
  }

  it(
    "kill -9 of the main process or of its process group at random moments: the next run recovers and the chain invariant holds",
    async () => {
      const ct = "302";
      const dir = join(privateRoot, ct, "root.hdd");
      await mkdir(dir, { recursive: true });
      const dd = await makeDisk(dir, { size: "32M" });
      await fillTop(dd, 0, 300, "base");
      await backupAndVerify(ct, dd, "first");
      const trials = 2 * KILL_TRIALS;
      for (let trial = 0; trial < trials; trial++) {
        const target = trial % 2 === 0 ? "group" : "main";
        await randomWrites(dd, 512, 8);
        const run = startBackup(ct);
        await new Promise((r) => setTimeout(r, 200 + Math.random() * 1200));
        run.kill(target);
        await run.done;
        const r = await backupAndVerify(ct, dd, `after kill ${trial} (${target})`);
        expect(r.status).toBe("ok");
      }
    },
    killTestTimeout(2 * KILL_TRIALS),
  );

  it(
    "kill -9 while ploop merges the previous kept delta into a sparse image, of the process group and of the main process: the next run finishes the merge",
    async () => {
      // Images are sparse on real hosts (discard/compaction, sparse copies). ploop 1.15 then
      // refuses to clear the in-use flag an interrupted merge left unless it may fill the
      // holes; recovery must still merge at once (not leave a third image for a later run).
      const ct = "303";
      const dir = join(privateRoot, ct, "root.hdd");
      await mkdir(dir, { recursive: true });
      const MiB = 1 << 20;
      const dd = await makeDisk(dir, { size: "64M", clusterSectors: 2048 });
      await fillTop(dd, 0, 20, "base", { zeroTailBytes: MiB / 4 });
      await backupAndVerify(ct, dd, "first");
      const trials = KILL_TRIALS;
      let midMerge = 0;
      for (let trial = 0; trial < trials; trial++) {
        for (const target of ["group", "main"] as const) {
          const step = `trial ${trial} (${target})`;
          // A day of writes: 40 MiB (the merge then takes ~0.1 s), partly zeros.
          await fillTop(dd, 10 + (trial % 3) * 5, 40, `${step}`, { zeroTailBytes: MiB / 4 });
          const chain = await ploopSnapshotList(dd);
          const keptImage = chain.find((e) => e.guid !== TOP)!.file;
          for (const image of chain) await digHoles(image.file);
          expect(await ploopCallsSparse(keptImage), step).toBe(true);

          const run = startBackup(ct);
          const t0 = Date.now();
          while (!(await imageMarkedInUse(keptImage))) {
            if (run.exited() || Date.now() - t0 > 60_000) throw new Error(`${step}: the backup never merged the previous kept delta`);
            await new Promise((r) => setTimeout(r, 2));
          }
          await new Promise((r) => setTimeout(r, Math.random() * 20));
          run.kill(target);
          await run.done;
          // Killed with its ploop halfway: the kept image is left "in use" (and sparse).
          if (target === "group" && (await imageMarkedInUse(keptImage))) midMerge++;
          const r = await backupAndVerify(ct, dd, step);
          expect(r.stderr, step).toMatch(/recovery: container 303: snapshot \{[0-9a-f-]{36}\}: (merged-after-clearing-in-use|already-merged|merged): /);
        }
      }
      console.log(
        `kill during the merge of the kept delta (sparse images): ${2 * trials} trials, ${midMerge} of ${trials} process-group kills left the merge halfway`,
      );
      expect(midMerge).toBeGreaterThan(0);
    },
    killTestTimeout(2 * KILL_TRIALS),
  );

  it("a stopped container with nothing written since its kept snapshot is backed up from that snapshot again, without any ploop call; a write, a running status or an in-use top takes the snapshot path", async () => {
    const ct = "305";
    const dir = join(privateRoot, ct, "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await makeDisk(dir, { size: "32M" });
    await fillTop(dd, 0, 40, "fixed");
    const first = await backupAndVerify(ct, dd, "first backup");
    expect(first.mode).toBe("full");
    // every ploop invocation, counted outside ploopvault
    const calls = join(work, "ploop-calls.log");
    const counting = await script(work, "ploop-counting", `echo "$1" >> '${calls}'\nexec '${PLOOP_WRAPPER}' "$@"`);
    const ploopCalls = async (): Promise<string[]> => (await readFile(calls, "utf8").catch(() => "")).split("\n").filter((l) => l !== "");
    const costsOf = (stderr: string): string => stderr.split("\n").find((l) => l.startsWith(`container ${ct}: `) && l.includes(" s; ")) ?? stderr;
    let base = first;
    for (const step of ["second backup", "third backup"]) {
      await rm(calls, { force: true });
      const r = await backupAndVerify(ct, dd, step, ["--ploop-bin", counting, "-v"]);
      expect(r.mode, step).toBe("incremental");
      expect(r.baseBackup, step).toBe(base.backup);
      expect(r.readBytes, step).toBe(0);
      expect(r.snapshotGuid, step).toBe(first.snapshotGuid);
      expect(await ploopCalls(), step).toEqual([]);
      expect(r.stderr).toContain(
        `container ${ct}: not running and nothing written since backup ${base.backup}: backing up its kept snapshot ${first.snapshotGuid} again (no new snapshot)`,
      );
      const costs = costsOf(r.stderr);
      expect(costs).not.toContain("ploop");
      expect(costs).not.toContain("fsync journal");
      expect(costs).not.toContain("fsync kept");
      expect(costs).toMatch(/store get 1 \(/); // backup N's manifest, which would notice a pruned base
      base = r;
    }

    // one cluster written: the snapshot path (snapshot, then the merge of the old kept snapshot)
    await writeClusterToTop(dd, 3, randomBytes(CLUSTER));
    await rm(calls, { force: true });
    const written = await backupAndVerify(ct, dd, "after a write", ["--ploop-bin", counting, "-v"]);
    expect(written.mode).toBe("incremental");
    expect(written.baseBackup).toBe(base.backup);
    expect(written.snapshotGuid).not.toBe(first.snapshotGuid);
    expect(await ploopCalls()).toEqual(["snapshot", "snapshot-delete"]);
    const costs = costsOf(written.stderr);
    expect(costs).toMatch(/ploop snapshot 1 \(\d+\.\d{3} s\).*ploop snapshot-delete 1 \(\d+\.\d{3} s\)/);
    expect(costs).toMatch(/fsync journal 6 \(/);
    expect(costs).toMatch(/fsync kept 2 \(/);
    expect(costs).not.toContain("snapshot-list");

    // unchanged, but vzlist says it runs: a snapshot is taken (a running container's page cache may hold writes only a snapshot flushes)
    const vzlist = await script(work, "vzlist-running", `echo "${ct} ${join(privateRoot, ct)} running"`);
    await rm(calls, { force: true });
    const running = await runCli(["backup", ...repo.args, "--private-root", privateRoot, "--vzlist-bin", vzlist, "--ploop-bin", counting, ct, "--json"]);
    expect(running.code, running.stderr).toBe(0);
    expect(jsonLines<Result>(running.stdout)[0]!.mode).toBe("incremental");
    expect(await ploopCalls()).toEqual(["snapshot", "snapshot-delete"]);

    // the check itself: an in-use top (opened read-write by the kernel) or a written cluster is never "idle"
    const kept = await new KeptSnapshots(repo.stateDir).get(ct);
    expect(kept).not.toBeNull();
    expect(await keptDeltaEmptyAndIdle(kept!, dd)).toBe(true);
    const top = await topImagePath(dd);
    await setImageInUse(top, true);
    expect(await keptDeltaEmptyAndIdle(kept!, dd)).toBe(false);
    await setImageInUse(top, false);
    expect(await keptDeltaEmptyAndIdle(kept!, dd)).toBe(true);
    await writeClusterToTop(dd, 7, randomBytes(4096));
    expect(await keptDeltaEmptyAndIdle(kept!, dd)).toBe(false);
    await backupAndVerify(ct, dd, "after the checks");
  });

  it("a forgotten base: the unchanged stopped container is read in full from a new snapshot", async () => {
    const ct = "305";
    const dd = join(privateRoot, ct, "root.hdd", "DiskDescriptor.xml");
    const again = await backupAndVerify(ct, dd, "unchanged");
    expect(again.stderr).toContain("again (no new snapshot)");
    const forget = await runCli(["forget", ...repo.args, `${ct}/${again.backup}`]);
    expect(forget.code, forget.stderr).toBe(0);
    const r = await backupAndVerify(ct, dd, "after the base was forgotten");
    expect(r.mode).toBe("full");
    expect(r.fullReason).toContain(again.backup);
    expect(r.snapshotGuid).not.toBe(again.snapshotGuid);
  });

  it("release gives the container back a single-image disk; the next backup reads everything", async () => {
    const ct = "301";
    const dd = join(privateRoot, ct, "root.hdd", "DiskDescriptor.xml");
    const rel = await runCli(["release", ...repo.args, "--ploop-bin", PLOOP_WRAPPER, ct]);
    expect(rel.code, rel.stderr).toBe(0);
    expect(await ploopSnapshotList(dd)).toHaveLength(1);
    const r = await backupAndVerify(ct, dd, "after release");
    expect(r.mode).toBe("full");
  });

  it("a lost state dir: the next run finds the snapshot it had kept and merges it; release does too", async () => {
    const ct = "304";
    const dir = join(privateRoot, ct, "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await makeDisk(dir, { size: "32M" });
    await fillTop(dd, 0, 100, "base");
    const first = await backupAndVerify(ct, dd, "first");
    await randomWrites(dd, 512, 6);
    // tmpfs reboot, reinstall: journal and kept records are gone, the snapshot is not.
    await rm(repo.stateDir, { recursive: true, force: true });
    const second = await backupAndVerify(ct, dd, "after losing the state dir");
    expect(second.mode).toBe("full");
    expect(second.stderr).toContain(
      `recovery: container ${ct}: snapshot ${first.snapshotGuid}: merged: made by this state dir's ploopvault but in no journal entry or kept record (state dir lost or reset?)`,
    );
    expect((await ploopSnapshotList(dd)).map((e) => e.guid).sort()).toEqual([second.snapshotGuid, TOP].sort());

    await rm(repo.stateDir, { recursive: true, force: true });
    const rel = await runCli([
      "release",
      ...repo.args,
      "--ploop-bin",
      PLOOP_WRAPPER,
      "--private-root",
      privateRoot,
      "--vzlist-bin",
      "/nonexistent/vzlist",
      ct,
      "--json",
    ]);
    expect(rel.code, rel.stderr).toBe(0);
    expect(jsonLines(rel.stdout)).toEqual([[{ ct, released: null, merged: [second.snapshotGuid] }]]);
    expect((await ploopSnapshotList(dd)).map((e) => e.guid)).toEqual([TOP]);
    expect(await unlistedImageFiles(dd)).toEqual([]);
  });
});
