/**
 * Incremental backups from the kept ploop delta, through the CLI with the real ploop:
 * random writes between backups (and during one, by the running-container simulator), a
 * grow of the disk, an admin merging our snapshot, a kill -9: every backup restores
 * bit-identical to the real ploop's flattening of the same snapshot, the mode is
 * incremental exactly when it may be, and the chain never holds more than the disk's own
 * image + one kept delta after a run.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopFlatten, ploopOk, ploopSnapshotList } from "../helpers/ploop-tool.js";
import { fillTop, makeDisk, SIMULATOR } from "../live/fixtures.js";
import { sha256File } from "../ploop/fixtures.js";

interface Result {
  ct: string;
  status: string;
  backup: string;
  snapshotGuid: string;
  mode: "incremental" | "full";
  fullReason?: string;
  readBytes: number;
  dataBytes: number;
  reusedChunks: number;
}

const CLUSTER = 64 << 10;

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

  async function backupAndVerify(ct: string, dd: string, step: string): Promise<Result> {
    const b = await runCli(["backup", ...args(), ct, "--json"]);
    expect(b.code, `${step}: ${b.stderr}`).toBe(0);
    const [r] = jsonLines<Result>(b.stdout);
    expect(r!.status).toBe("ok");
    // Chain invariant: the disk's own image + our kept delta, nothing else.
    const chain = await ploopSnapshotList(dd);
    expect(chain.map((e) => e.guid), step).toHaveLength(2);
    expect(chain.map((e) => e.guid.toLowerCase()), step).toContain(r!.snapshotGuid.toLowerCase());
    const expected = join(work, `${ct}.expected`);
    await ploopFlatten(dd, expected, { topGuid: r!.snapshotGuid });
    const raw = join(work, `${ct}.raw`);
    const restore = await runCli(["restore", ...repo.args, `${ct}/${r!.backup}`, "--format", "raw", "--target", raw]);
    expect(restore.code, `${step}: ${restore.stderr}`).toBe(0);
    expect(await sha256File(raw), `${step}: restored backup equals the real ploop's flattening of its snapshot`).toBe(await sha256File(expected));
    await rm(raw);
    await rm(expected);
    return r!;
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
        sim = spawn(process.execPath, [SIMULATOR, "--dd", dd, "--log", join(work, `sim-${round}.log`), "--first", "300", "--clusters", "20", "--interval-ms", "2"], { stdio: ["ignore", "pipe", "inherit"] });
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

  it("kill -9 during incremental backups: the next run recovers and the chain invariant holds", async () => {
    const ct = "302";
    const dir = join(privateRoot, ct, "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await makeDisk(dir, { size: "32M" });
    await fillTop(dd, 0, 300, "base");
    await backupAndVerify(ct, dd, "first");
    for (let trial = 0; trial < 5; trial++) {
      await randomWrites(dd, 512, 8);
      const child = execa(process.execPath, [CLI, "backup", ...args(), ct], { reject: false, env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER } });
      await new Promise((r) => setTimeout(r, 200 + Math.random() * 1200));
      child.kill("SIGKILL");
      await child;
      const r = await backupAndVerify(ct, dd, `after kill ${trial}`);
      expect(r.status).toBe("ok");
    }
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
});
