/**
 * "Exit 0 means the backup restores", with a prune racing a backup whose registration is
 * under stress, through the built CLI. The reviewer's recipe: container A backed up on
 * day 1 (disk X) and day 2 (disk Y); a backup B of disk X that dedups against day 1 and
 * takes longer than the lock TTL (a tight --limit-upload); prune --ct A --keep-last 1
 * --grace 0 forgets day 1 and deletes its chunks unless it sees B. Before the fix B's
 * lock refreshes queued behind its data in the upload token bucket, prune removed B's
 * "expired" registration and deleted 67 chunks B relied on, and B exited 0 with a damaged
 * backup. Whatever the interleaving (prune before, during or after B's manifest PUT, the
 * registration lapsing while the PUT waits, or the PUT landing before an answer that
 * arrives after the lapse), B must exit non-zero leaving no manifest, or restore
 * bit-identical; and `check` must find every remaining backup whole.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { sha256File } from "../ploop/fixtures.js";
import { proxiedRepo, type ProxiedRepo } from "../faults/harness.js";

const X = "101";
/** Small chunks make B's manifest big enough to upload for longer than the TTL at LIMIT. */
const CHUNK_AVG = "64K";
/** B's manifest (~1000 entries, ~40 kB) takes ~20 s at this rate. */
const LIMIT = "2K";
const Y = "103";
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-lapse-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function spawnCli(args: readonly string[], env: Record<string, string>) {
  return execa(process.execPath, [CLI, ...args], { reject: false, env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...env }, timeout: 240_000 });
}
async function done(p: ReturnType<typeof spawnCli>): Promise<CliResult> {
  const r = await p;
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Container A's two days, in a fresh repository with small chunks (many shared with B). */
async function seed(repo: RepoTarget, env: Record<string, string>, init = true): Promise<void> {
  if (init) {
    const r = await runCli(["init", ...repo.args, "--chunk-avg", CHUNK_AVG], { env: repo.env });
    expect(r.code, r.stderr).toBe(0);
  }
  for (const [disk, day] of [
    [X, "2026-01-01T00:00:00Z"],
    [Y, "2026-01-02T00:00:00Z"],
  ] as const) {
    const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf(disk), "--name", "A", "--time", day, "-q"], { env });
    expect(r.code, r.stderr).toBe(0);
  }
}

/** B exited 0 and restores bit-identical, or exited non-zero and left no manifest; check is clean. */
async function assertSound(repo: RepoTarget, env: Record<string, string>, b: CliResult): Promise<"restored" | "refused"> {
  const manifests = (await repo.listKeys("backups/B/")).filter((k) => k.endsWith("/manifest"));
  let outcome: "restored" | "refused";
  if (b.code === 0) {
    expect(manifests, b.stderr).toHaveLength(1);
    const target = join(work, `b-${Math.random().toString(16).slice(2)}.raw`);
    const r = await runCli(["restore", ...repo.args, "B:latest", "--format", "raw", "--target", target], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(target)).toBe(corpus().flatSha256[X]);
    await rm(target);
    outcome = "restored";
  } else {
    expect(manifests, `backup B failed (${b.stderr.trim().split("\n").pop()}) but left a manifest`).toEqual([]);
    outcome = "refused";
  }
  const check = await runCli(["check", ...repo.args], { env });
  expect(check.code, `${check.stdout}\n${check.stderr}`).toBe(0);
  return outcome;
}

/** A full backup of X afterwards stores what it needs and restores (no loss spread by dedup). */
async function assertNextBackupWhole(repo: RepoTarget, env: Record<string, string>): Promise<void> {
  const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf(X), "--name", "C", "--json"], { env });
  expect(r.code, r.stderr).toBe(0);
  const target = join(work, `c-${Math.random().toString(16).slice(2)}.raw`);
  const restore = await runCli(["restore", ...repo.args, "C:latest", "--format", "raw", "--target", target], { env });
  expect(restore.code, restore.stderr).toBe(0);
  expect(await sha256File(target)).toBe(corpus().flatSha256[X]);
  await rm(target);
  expect(jsonLines(r.stdout)).toHaveLength(1);
}

describe("a backup slower than the lock TTL while prune deletes what it dedups against (local repository)", () => {
  const lock = { PLOOPVAULT_LOCK_TTL: "8", PLOOPVAULT_LOCK_REFRESH: "1" };
  for (const [where, pruneAfterMs] of [
    ["before B starts", -1],
    ["while B uploads its manifest", 4000],
    ["after B finished", Infinity],
  ] as const) {
    it(`prune lands ${where}: B restores or fails without a manifest`, async () => {
      const repo = await localRepo();
      try {
        await seed(repo, {});
        const prune = (): Promise<CliResult> =>
          done(spawnCli(["prune", ...repo.args, "--ct", "A", "--keep-last", "1", "--grace", "0", "--wait", "2m", "--json"], lock));
        // after the prune B uploads day 1's data again: no limit then
        const limit = pruneAfterMs < 0 ? [] : ["--limit-upload", LIMIT];
        const backupB = (): Promise<CliResult> =>
          done(spawnCli(["backup", ...repo.args, "--disk", descriptorOf(X), "--name", "B", ...limit, "--threads", "0"], lock));
        let b: CliResult;
        let p: CliResult;
        if (pruneAfterMs < 0) {
          p = await prune();
          b = await backupB();
        } else if (pruneAfterMs === Infinity) {
          b = await backupB();
          p = await prune();
        } else {
          const running = backupB();
          await sleep(pruneAfterMs);
          p = await prune();
          b = await running;
        }
        expect([0, 3], `prune exit ${p.code}: ${p.stderr}`).toContain(p.code);
        await assertSound(repo, {}, b);
        await assertNextBackupWhole(repo, {});
      } finally {
        await repo.cleanup();
      }
    }, 240_000);
  }
});

describe("the registration lapses around the manifest PUT (RGW through a fault proxy)", () => {
  const lock = { PLOOPVAULT_LOCK_TTL: "6", PLOOPVAULT_LOCK_REFRESH: "1" };
  let target: ProxiedRepo | null = null;
  afterAll(async () => {
    await target?.close();
  });

  async function setUp(label: string): Promise<ProxiedRepo> {
    await target?.close();
    const proxied = await proxiedRepo(label, { stallMs: 60_000, delayMs: [9000, 9000] }, ["--chunk-avg", CHUNK_AVG]);
    await seed(proxied.repo, proxied.repo.env, false); // directly: only B goes through the proxy
    target = proxied;
    return proxied;
  }

  /** From the moment B's manifest PUT is seen, B's registration refreshes hang. */
  function stallRefreshesOnceManifestIsSent(proxied: ProxiedRepo, manifestFault: "holdResponse" | null): void {
    let manifestSent = false;
    proxied.proxy.setDecide((request) => {
      if (request.method === "PUT" && /\/backups\/B\/[^/]+\/manifest$/.test(request.path)) {
        manifestSent = true;
        return manifestFault;
      }
      if (manifestSent && request.method === "PUT" && request.path.includes("/locks/backup-")) return "stall";
      return null;
    });
  }

  it("the lapse comes while the manifest waits for upload tokens: cancelled, B fails, prune's deletions harm nobody", async () => {
    const proxied = await setUp("lapse-wait");
    // From B's first side file on, its refreshes hang; its manifest waits for upload
    // tokens (~20 s at LIMIT), the registration lapses meanwhile, a prune judges it
    // expired and deletes day 1's chunks, which B's manifest would have referenced.
    let waiting = false;
    proxied.proxy.setDecide((request) => {
      if (request.method === "PUT" && request.path.includes("/backups/B/")) waiting = true;
      if (waiting && request.method === "PUT" && request.path.includes("/locks/backup-")) return "stall";
      return null;
    });
    const running = done(
      spawnCli(["backup", ...proxied.repo.args, "--disk", descriptorOf(X), "--name", "B", "--limit-upload", LIMIT, "--threads", "0"], {
        ...proxied.env,
        ...lock,
      }),
    );
    await sleep(4000);
    const p = await done(
      spawnCli(["prune", ...proxied.repo.args, "--ct", "A", "--keep-last", "1", "--grace", "0", "--wait", "2m", "--json"], { ...proxied.env, ...lock }),
    );
    const b = await running;
    proxied.proxy.setDecide(undefined);
    expect(p.code, p.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(1);
    expect(b.stderr).toMatch(/lapsed/);
    expect(await assertSound(proxied.repo, proxied.env, b)).toBe("refused");
    await assertNextBackupWhole(proxied.repo, proxied.env);
  }, 240_000);

  it("the manifest lands, its answer comes after the lapse: B withdraws it and fails", async () => {
    const proxied = await setUp("lapse-late-answer");
    stallRefreshesOnceManifestIsSent(proxied, "holdResponse");
    // the held answer must not look like a stalled connection (that would retry the PUT)
    const patient = { PLOOPVAULT_S3_IDLE_TIMEOUT_MS: "30000" };
    const b = await done(
      spawnCli(["backup", ...proxied.repo.args, "--disk", descriptorOf(X), "--name", "B", "--threads", "0"], { ...proxied.env, ...lock, ...patient }),
    );
    proxied.proxy.setDecide(undefined);
    expect(proxied.proxy.counters.holdResponse).toBe(1);
    expect(b.code, `${b.stderr}`).toBe(1);
    expect(b.stderr).toMatch(/lapsed/);
    expect(await assertSound(proxied.repo, proxied.env, b)).toBe("refused");
  }, 240_000);
});
