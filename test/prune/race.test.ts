/**
 * Prune racing with backups from other nodes, against the suite's Ceph RGW, through the
 * built CLI: two backup loops (two "nodes": their own --host and --state-dir) back up the
 * same container name from changing disks, so each dedups against chunks the other's
 * backups brought in and that prune keeps forgetting (--keep-last 1) and deleting
 * (--grace 0) in a loop of its own. Afterwards every listed backup must restore
 * bit-identical and `check --read-data` must pass. Then processes are SIGKILLed mid-run:
 * their lock objects block the others for at most the TTL, and the next prune cleans up.
 *
 * PLOOPVAULT_RACE_SECONDS (default 40) makes the race longer when run by hand, e.g.
 *   PLOOPVAULT_RACE_SECONDS=900 npx vitest run test/prune/race.test.ts
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { CLI, jsonLines, PLOOP_WRAPPER, runCli, s3Repo, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { putObject } from "../helpers/s3-server.js";
import { sha256File } from "../ploop/fixtures.js";

const PAUSED_PRUNE = fileURLToPath(new URL("../helpers/paused-prune.mjs", import.meta.url));
const RACE_SECONDS = Number(process.env.PLOOPVAULT_RACE_SECONDS ?? 40);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface BackupRun {
  host: string;
  disk: string;
  id: string | null;
  code: number;
  error: string;
}

describe("prune racing with backups of two nodes (RGW)", () => {
  let repo: RepoTarget;
  let work: string;
  const disksById = new Map<string, string>();

  beforeAll(async () => {
    repo = await s3Repo("race");
    work = await mkdtemp(join(tmpdir(), "pv-race-"));
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "256K"], { env: repo.env });
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  /** CLI on this repository with a node's own state dir and the given lock timing. */
  function run(args: string[], stateDir: string, lock: { ttl: number; refresh: number }, extraEnv: Record<string, string> = {}): ResultPromise {
    return execa(process.execPath, [CLI, ...args, "--repo", repo.url, "--state-dir", stateDir], {
      reject: false,
      env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...repo.env, PLOOPVAULT_LOCK_TTL: String(lock.ttl), PLOOPVAULT_LOCK_REFRESH: String(lock.refresh), ...extraEnv },
      timeout: 300_000,
    });
  }
  const result = async (p: ResultPromise): Promise<CliResult> => {
    const r = await p;
    return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
  };

  async function restoresAll(): Promise<number> {
    const list = await runCli(["snapshots", ...repo.args, "--json"], { env: repo.env });
    expect(list.code, list.stderr).toBe(0);
    const rows = JSON.parse(list.stdout) as { id: string; ct: string }[];
    for (const row of rows) {
      const disk = disksById.get(row.id);
      expect(disk, `backup ${row.id} was made by this test`).toBeDefined();
      const target = join(work, `${row.id}.raw`);
      const r = await runCli(["restore", ...repo.args, `${row.ct}/${row.id}`, "--format", "raw", "--target", target], { env: repo.env });
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(target), `${row.ct}/${row.id} from disk ${disk}`).toBe(corpus().flatSha256[disk!]);
      await rm(target);
    }
    return rows.length;
  }

  async function checkReadData(): Promise<{ chunksUnreferenced: number; expiredLocks: number }> {
    const check = await runCli(["check", ...repo.args, "--read-data", "--json"], { env: repo.env });
    expect(check.code, check.stderr).toBe(0);
    return JSON.parse(check.stdout) as { chunksUnreferenced: number; expiredLocks: number };
  }

  it(
    `two nodes back up while prune forgets and deletes, for ${RACE_SECONDS} s: nothing referenced is ever lost`,
    async () => {
      const lock = { ttl: 20, refresh: 2 };
      const disks = corpus().cts; // 101..104: overlapping content (101/102/104 share most chunks, 103 has its own)
      // run for RACE_SECONDS, and on a slow machine on until a prune has deleted chunks
      // while the nodes were busy (at most 4x as long): otherwise the race did not happen
      const deadline = Date.now() + RACE_SECONDS * 1000;
      const hardDeadline = Date.now() + RACE_SECONDS * 4000;
      const racing = (): boolean =>
        Date.now() < deadline || (Date.now() < hardDeadline && !prunes.some((p) => p.sweep === "done" && (p.chunksDeleted ?? 0) > 0));
      const backups: BackupRun[] = [];
      const prunes: { code: number; sweep?: string; chunksDeleted?: number; stderr: string }[] = [];

      const node = async (host: string, offset: number): Promise<void> => {
        const stateDir = join(work, `state-${host}`);
        for (let i = 0; racing(); i++) {
          const disk = disks[(i + offset) % disks.length]!;
          const r = await result(run(["backup", "--disk", descriptorOf(disk), "--name", "shared", "--host", host, "--json", "--threads", "1"], stateDir, lock));
          const id = r.code === 0 ? jsonLines<{ backup: string }>(r.stdout)[0]!.backup : null;
          if (id !== null) disksById.set(id, disk);
          backups.push({ host, disk, id, code: r.code, error: r.code === 0 ? "" : r.stderr.trim().split("\n").pop()! });
          await sleep(300 + Math.random() * 2500);
        }
      };
      const pruner = async (): Promise<void> => {
        const stateDir = join(work, "state-pruner");
        while (racing()) {
          const r = await result(run(["prune", "--keep-last", "1", "--grace", "0", "--wait", "6s", "--lock-host", "pruner", "--json"], stateDir, lock));
          const report = r.stdout.trim() === "" ? {} : (JSON.parse(r.stdout) as { sweep?: string; chunksDeleted?: number });
          prunes.push({ code: r.code, ...report, stderr: r.stderr });
          await sleep(200 + Math.random() * 800);
        }
      };
      await Promise.all([node("node-a", 0), node("node-b", 2), pruner()]);

      const summary = JSON.stringify({
        backups: backups.map((b) => `${b.host}:${b.disk}:${b.code}${b.error ? `:${b.error}` : ""}`),
        prunes: prunes.map((p) => `${p.code}:${p.sweep}:${p.chunksDeleted}${p.code === 0 || p.code === 3 ? "" : `:${p.stderr.trim().split("\n").pop()}`}`),
      });
      if (process.env.PLOOPVAULT_TEST_VERBOSE === "1") {
        console.log(summary);
        for (const p of prunes) console.log(`prune exit ${p.code}:\n${p.stderr}`);
      }
      // every prune either finished or deferred its deletion to running backups
      expect(
        prunes.every((p) => p.code === 0 || p.code === 3),
        summary,
      ).toBe(true);
      // the race really happened: chunks were deleted while the nodes kept backing up
      expect(prunes.filter((p) => p.sweep === "done" && (p.chunksDeleted ?? 0) > 0).length, summary).toBeGreaterThanOrEqual(1);
      for (const host of ["node-a", "node-b"]) expect(backups.filter((b) => b.host === host && b.code === 0).length, summary).toBeGreaterThanOrEqual(2);
      // a backup may only fail by protecting itself (never by finding chunks gone)
      for (const b of backups.filter((x) => x.code !== 0)) expect(b.error, summary).toMatch(/lapsed|being pruned/);

      expect(await restoresAll()).toBeGreaterThanOrEqual(2);
      await checkReadData();
    },
    (RACE_SECONDS * 4 + 180) * 1000,
  );

  it("a prune SIGKILLed mid-sweep blocks backups for at most its TTL; the next prune takes over and cleans up", async () => {
    const lock = { ttl: 8, refresh: 1 };
    // garbage for the sweep to delete (an unreferenced chunk), so it gets to the deleting phase
    const orphan = "ff".repeat(32);
    await putObject(repo.url.slice("s3://".length).split("/")[0]!, `repo/chunks/ff/${orphan}`, Buffer.from([1, 2, 3]));

    // a prune stopped between its handshake and its first deletion (runPrune's beforeDelete hook)
    const victim = execa(process.execPath, [PAUSED_PRUNE, repo.url, join(work, "state-victim"), "victim"], {
      reject: false,
      env: { ...repo.env, PLOOPVAULT_LOCK_TTL: String(lock.ttl), PLOOPVAULT_LOCK_REFRESH: String(lock.refresh) },
      timeout: 300_000,
    });
    let marker: string | undefined;
    for (let i = 0; i < 300 && marker === undefined; i++) {
      marker = (await repo.listKeys("locks/")).find((k) => k.startsWith("locks/sweep-victim-"));
      if (marker === undefined) await sleep(100);
    }
    expect(marker, "the victim prune reached its sweep").toBeDefined();
    victim.kill("SIGKILL");
    expect((await victim).signal).toBe("SIGKILL");
    const killedAt = Date.now();
    expect((await repo.listKeys("locks/")).sort()).toEqual(["locks/prune", marker!].sort());

    // a backup now waits for the dead sweep's marker to expire, then goes ahead
    const b = await result(
      run(["backup", "--disk", descriptorOf("101"), "--name", "late", "--host", "node-c", "--json", "--threads", "1"], join(work, "state-c"), lock),
    );
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toMatch(/waiting for prune to finish deleting chunks.*victim/);
    const waited = (Date.now() - killedAt) / 1000;
    expect(waited).toBeLessThan(lock.ttl + 40); // TTL + slack + the backup itself, on a loaded machine
    disksById.set(jsonLines<{ backup: string }>(b.stdout)[0]!.backup, "101");

    // the next prune takes the dead prune's lock over (it is older than the TTL by now)
    const p = await result(
      run(["prune", "--keep-last", "1", "--grace", "0", "--wait", "30s", "--lock-host", "next", "--json"], join(work, "state-next"), lock),
    );
    expect(p.code, p.stderr).toBe(0);
    expect(p.stderr).toMatch(/took over the prune lock of victim/);
    const report = JSON.parse(p.stdout) as { sweep: string; expiredLocksRemoved: string[] };
    expect(report.sweep).toBe("done");
    expect(report.expiredLocksRemoved).toContain(marker);
    expect(await repo.listKeys("locks/")).toEqual([]);
    expect(await repo.listKeys("chunks/ff/")).not.toContain(`chunks/ff/${orphan}`);
  });

  it("a backup SIGKILLed mid-run holds prune off for at most its TTL; its registration and chunks are removed", async () => {
    const lock = { ttl: 8, refresh: 1 };
    // reading throttled, so that it is still running when it is killed
    const killed = run(
      ["backup", "--disk", descriptorOf("103"), "--name", "killed", "--host", "node-d", "--threads", "1", "--limit-read", "4M"],
      join(work, "state-d"),
      lock,
    );
    let registration: string | undefined;
    for (let i = 0; i < 300 && registration === undefined; i++) {
      registration = (await repo.listKeys("locks/")).find((k) => k.startsWith("locks/backup-node-d-"));
      if (registration === undefined) await sleep(100);
    }
    expect(registration, "the backup registered").toBeDefined();
    await sleep(1500); // let it upload something
    killed.kill("SIGKILL");
    expect((await killed).signal).toBe("SIGKILL");
    const killedAt = Date.now();
    // something for the sweep to delete even if the killed backup uploaded nothing new
    // (with nothing to delete, prune does not wait for running backups at all)
    await putObject(repo.url.slice("s3://".length).split("/")[0]!, `repo/chunks/ee/${"ee".repeat(32)}`, Buffer.from([4, 5, 6]));

    const p = await result(
      run(["prune", "--keep-last", "1", "--grace", "0", "--wait", "40s", "--lock-host", "after", "--json"], join(work, "state-after"), lock),
    );
    expect(p.code, p.stderr).toBe(0);
    const seconds = (Date.now() - killedAt) / 1000;
    expect(seconds).toBeGreaterThan(lock.ttl - 3); // it did wait for the registration to expire
    expect(seconds).toBeLessThan(lock.ttl + 30);
    const report = JSON.parse(p.stdout) as { sweep: string; expiredLocksRemoved: string[] };
    expect(report.sweep).toBe("done");
    expect(report.expiredLocksRemoved).toContain(registration);
    expect(await repo.listKeys("locks/")).toEqual([]);
    // every manifest decodes and every chunk it references reads back and verifies
    const check = await checkReadData();
    expect(check).toMatchObject({ chunksUnreferenced: 0, expiredLocks: 0 });
  });
});
