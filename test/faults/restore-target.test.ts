/**
 * Restore robustness: whatever goes wrong (full or read-only target file system, missing
 * bucket, wrong credentials, deleted manifest or chunk, a kill -9 midway), the restore
 * exits 1 with one clear line, and nothing at the target looks complete: the target name
 * does not exist (or, with --force, still holds the old, intact target) and no visible
 * leftovers are beside it.
 */
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, PLOOP_WRAPPER, jsonLines, localRepo, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopInit } from "../helpers/ploop-tool.js";
import { pattern, sha256File } from "../ploop/fixtures.js";
import { startFaultProxy } from "../helpers/fault-proxy.js";
import { testS3 } from "../helpers/s3-server.js";
import { expectCleanFailure, visibleEntries } from "./harness.js";

async function backup(repo: RepoTarget, ct: string, descriptor = descriptorOf(ct)): Promise<string> {
  const r = await runCli(["backup", ...repo.args, "--disk", descriptor, "--name", ct, "--json", "-q"], { env: repo.env });
  expect(r.code, r.stderr).toBe(0);
  return jsonLines<{ backup: string }>(r.stdout)[0]!.backup;
}

async function gone(path: string): Promise<boolean> {
  return stat(path).then(
    () => false,
    () => true,
  );
}

describe("restore target failures", () => {
  let repo: RepoTarget;
  let work: string;
  let id: string;

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-target-"));
    expect((await runCli(["init", ...repo.args])).code).toBe(0);
    id = await backup(repo, "101");
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  describe("on a small tmpfs (needs root and mount)", () => {
    let mnt: string | null = null;
    beforeAll(async () => {
      const dir = join(work, "mnt");
      await mkdir(dir);
      try {
        execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", dir], { stdio: "ignore" });
        mnt = dir;
      } catch {
        mnt = null;
      }
    });
    afterAll(() => {
      if (mnt !== null) execFileSync("umount", [mnt], { stdio: "ignore" });
    });

    it.for(["raw", "ploop"])("a full target file system: %s restore fails with one line, leaving nothing", async (format, ctx) => {
      if (mnt === null) return ctx.skip();
      const target = join(mnt, `full-${format}`);
      const r = await runCli(["restore", ...repo.args, `101/${id}`, "--format", format, "--target", target]);
      expectCleanFailure(r, new RegExp(`${target}.*no space left on device`));
      expect(await readdir(mnt)).toEqual([]); // not even the hidden partial file
    });

    it.for(["raw", "ploop"])("a read-only target file system: %s restore fails with one line", async (format, ctx) => {
      if (mnt === null) return ctx.skip();
      execFileSync("mount", ["-o", "remount,ro", mnt]);
      try {
        const target = join(mnt, `ro-${format}`);
        const r = await runCli(["restore", ...repo.args, `101/${id}`, "--format", format, "--target", target]);
        expectCleanFailure(r, new RegExp(`${target}.*read-only file system`));
        expect(await readdir(mnt)).toEqual([]);
      } finally {
        execFileSync("mount", ["-o", "remount,rw", mnt]);
      }
    });
  });

  it("a target directory that cannot be created is named", async () => {
    for (const target of [join(repo.url, "config", "sub", "x.raw"), "/proc/self/pv/x.raw"]) {
      const r = await runCli(["restore", ...repo.args, `101/${id}`, "--format", "raw", "--target", target], { timeoutMs: 30_000 });
      expectCleanFailure(r, new RegExp(`${target}: (a parent of it is not a directory|no such file or directory)`));
    }
  });

  it("a deleted manifest: restore by id and by CT:latest fail with one line, nothing written", async () => {
    const lost = await backup(repo, "102"); // the backup's manifest is also in the local cache now
    await repo.remove(`backups/102/${lost}/manifest`); // its chunks and descriptor stay
    const dir = join(work, "deleted-manifest");
    for (const spec of [`102/${lost}`, lost, "102:latest", "102"]) {
      const r = await runCli(["restore", ...repo.args, spec, "--format", "raw", "--target", join(dir, "t.raw")]);
      expectCleanFailure(r, /(not found|no backups|no backup or container)/);
    }
    expect(await gone(dir)).toBe(true);
  });

  it("a deleted chunk fails the restore naming chunk and backup; --force keeps the old target intact", async () => {
    const own = await localRepo();
    try {
      expect((await runCli(["init", ...own.args, "--chunk-avg", "64K"])).code).toBe(0);
      // a small disk of recognisable clusters: quick to back up and restore
      await mkdir(join(work, "small"));
      const dd = await ploopInit(join(work, "small", "root.hds"), { size: "32M", version: 2 });
      for (const c of [0, 3, 9, 17, 30]) await writeClusterToTop(dd, c, pattern(11, c, 1 << 20));
      const ok = await backup(own, "104", dd);
      const dir = join(work, "force");
      const raw = join(dir, "t.raw");
      const ploop = join(dir, "t.ploop");
      expect((await runCli(["restore", ...own.args, `104/${ok}`, "--format", "raw", "--target", raw])).code).toBe(0);
      expect((await runCli(["restore", ...own.args, `104/${ok}`, "--format", "ploop", "--target", ploop])).code).toBe(0);
      const rawSha = await sha256File(raw);
      const imageSha = await sha256File(join(ploop, "root.hdd"));
      const [victim] = await own.listKeys("chunks/");
      await own.remove(victim!);
      const name = victim!.split("/").pop()!;
      for (const [format, target] of [
        ["raw", raw],
        ["ploop", ploop],
      ] as const) {
        const r = await runCli(["restore", ...own.args, `104/${ok}`, "--format", format, "--target", target, "--force"]);
        expectCleanFailure(r, new RegExp(`chunk ${name}.*104/${ok}`));
      }
      expect(await sha256File(raw)).toBe(rawSha);
      expect(await sha256File(join(ploop, "root.hdd"))).toBe(imageSha);
      expect(await readdir(dir)).toEqual(["t.ploop", "t.raw"]); // no leftovers, hidden or not
    } finally {
      await own.cleanup();
    }
  });
});

describe("restore from S3 that cannot be read", () => {
  let repo: RepoTarget;
  let work: string;
  beforeAll(async () => {
    repo = await s3Repo("target");
    work = await mkdtemp(join(tmpdir(), "pv-target-s3-"));
    expect((await runCli(["init", ...repo.args], { env: repo.env })).code).toBe(0);
    await backup(repo, "102");
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("a missing bucket is named; nothing written", async () => {
    const target = join(work, "missing", "t.raw");
    const r = await runCli(
      ["restore", "--repo", "s3://pv-no-such-bucket-restore/repo", "--state-dir", repo.stateDir, "102", "--format", "raw", "--target", target],
      {
        env: repo.env,
      },
    );
    expectCleanFailure(r, /pv-no-such-bucket-restore/);
    expect(await gone(join(work, "missing"))).toBe(true);
  });

  it("wrong credentials fail with one line; nothing written", async () => {
    const target = join(work, "creds", "t.raw");
    const r = await runCli(["restore", ...repo.args, "102", "--format", "raw", "--target", target], { env: { ...repo.env, AWS_SECRET_ACCESS_KEY: "wrong" } });
    expectCleanFailure(r, /(access denied|credential|signature)/i);
    expect(await gone(join(work, "creds"))).toBe(true);
  });

  it("a restore killed midway (kill -9) leaves nothing at the target; the next one succeeds", async () => {
    // every request delayed, so the restore is slow enough to be killed while writing
    const proxy = await startFaultProxy({ target: testS3().endpoint, rates: { delay: 1 }, delayMs: [150, 300] });
    const env = { ...repo.env, AWS_ENDPOINT_URL: proxy.url, PLOOPVAULT_PLOOP: PLOOP_WRAPPER };
    try {
      const dir = join(work, "killed");
      await mkdir(dir);
      for (const format of ["raw", "ploop"]) {
        const target = join(dir, format);
        const child = execa(process.execPath, [CLI, "restore", ...repo.args, "102", "--format", format, "--target", target], { env, reject: false });
        // wait until it is writing (the hidden partial exists), then kill it
        for (let i = 0; i < 200 && !(await readdir(dir)).some((n) => n.startsWith(`.${format}.ploopvault-partial-`)); i++)
          await new Promise((r) => setTimeout(r, 50));
        await new Promise((r) => setTimeout(r, 300));
        child.kill("SIGKILL");
        const result = await child;
        expect(result.signal, `restore was not killed but exited ${result.exitCode}: ${String(result.stderr)}`).toBe("SIGKILL");
        expect(await gone(target)).toBe(true);
        expect(await visibleEntries(dir)).toEqual([]);
      }
      proxy.setRates({});
      const target = join(dir, "again.raw");
      const r = await runCli(["restore", ...repo.args, "102", "--format", "raw", "--target", target], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(target)).toBe(corpus().flatSha256["102"]);
    } finally {
      await proxy.close();
    }
  });
});
