/**
 * What a run writes is readable by its owner only (issue 12, item 8): local
 * repository objects and directories, keys, the state dir (caches, records, lock), and
 * restored disks, whatever the umask: the commands run here under umask 000, where any
 * file created without an explicit mode would come out world-readable and writable.
 * A password file others can read gets a warning.
 */
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localRepo, runCli, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopInit } from "../helpers/ploop-tool.js";

const HEAVY = 300_000;

/** Every path below `root` (root included) with its permission bits, "file" or "dir". */
async function modes(root: string): Promise<{ path: string; kind: "file" | "dir"; mode: string }[]> {
  const out: { path: string; kind: "file" | "dir"; mode: string }[] = [];
  const visit = async (path: string): Promise<void> => {
    const info = await stat(path);
    out.push({ path, kind: info.isDirectory() ? "dir" : "file", mode: (info.mode & 0o777).toString(8) });
    if (info.isDirectory()) for (const name of await readdir(path)) await visit(join(path, name));
  };
  await visit(root);
  return out;
}

function expectOwnerOnly(entries: { path: string; kind: "file" | "dir"; mode: string }[]): void {
  expect(entries.length).toBeGreaterThan(1);
  const wrong = entries.filter((e) => e.mode !== (e.kind === "dir" ? "700" : "600"));
  expect(wrong, JSON.stringify(wrong.slice(0, 5))).toEqual([]);
}

describe("owner-only files under umask 000", () => {
  let repo: RepoTarget;
  let work: string;
  let dd: string;
  let passwordFile: string;
  let previousUmask: number;

  beforeAll(async () => {
    previousUmask = process.umask(0); // inherited by the CLI processes started below
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-perm-"));
    await mkdir(join(work, "101", "root.hdd"), { recursive: true, mode: 0o700 });
    dd = await ploopInit(join(work, "101", "root.hdd", "root.hds"), { size: "16M", version: 2 });
    for (const c of [0, 5]) await writeClusterToTop(dd, c, randomBytes(1 << 20));
    await writeFile(join(work, "101", "ve.conf"), "HOSTNAME=ct101\n", { mode: 0o600 });
    passwordFile = join(work, "password");
    await writeFile(passwordFile, "permissions test password\n");
    await chmod(passwordFile, 0o644);
  }, HEAVY);
  afterAll(async () => {
    process.umask(previousUmask);
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it(
    "warns about a password file others can read, not about a 0600 one",
    async () => {
      const init = await runCli(["init", ...repo.args, "--encrypt", "--password-file", passwordFile, "--chunk-avg", "64K"]);
      expect(init.code, init.stderr).toBe(0);
      expect(init.stderr).toContain(`warning: --password-file ${passwordFile} is readable by everyone (mode 0644)`);
      await chmod(passwordFile, 0o640);
      const list = await runCli(["key", "list", ...repo.args, "--password-file", passwordFile]);
      expect(list.code, list.stderr).toBe(0);
      expect(list.stderr).toContain("is readable by its group (mode 0640)");
      await chmod(passwordFile, 0o600);
      const again = await runCli(["key", "list", ...repo.args, "--password-file", passwordFile]);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).not.toContain("readable");
    },
    HEAVY,
  );

  it(
    "repository objects and directories, keys, state and caches are 0600 / 0700",
    async () => {
      const backup = await runCli(["backup", ...repo.args, "--disk", dd, "--name", "101", "--password-file", passwordFile]);
      expect(backup.code, backup.stderr).toBe(0);
      const prune = await runCli(["prune", ...repo.args, "--keep-last", "1", "--password-file", passwordFile]);
      expect(prune.code, prune.stderr).toBe(0);
      // the host run lock (container backups and release take it; --disk backups do not)
      const release = await runCli(["release", "--all", "--state-dir", repo.stateDir]);
      expect(release.code, release.stderr).toBe(0);
      const repoEntries = await modes(repo.url);
      expect(repoEntries.some((e) => e.path.includes(`${join(repo.url, "keys")}/`))).toBe(true);
      expect(repoEntries.some((e) => e.path.includes(`${join(repo.url, "chunks")}/`))).toBe(true);
      expectOwnerOnly(repoEntries);
      const stateEntries = await modes(repo.stateDir);
      expect(stateEntries.some((e) => e.path.includes("/manifests/101/"))).toBe(true);
      expect(stateEntries.some((e) => e.path.endsWith("encryption.json"))).toBe(true);
      expect(stateEntries.some((e) => e.path.endsWith("run.lock"))).toBe(true);
      expectOwnerOnly(stateEntries);
    },
    HEAVY,
  );

  it(
    "restore targets are 0600 (raw) and a 0700 directory of 0600 files (ploop), new parent directories 0700",
    async () => {
      const raw = join(work, "out", "deeper", "101.raw");
      const r = await runCli(["restore", ...repo.args, "101", "--format", "raw", "--target", raw, "--password-file", passwordFile]);
      expect(r.code, r.stderr).toBe(0);
      expect(((await stat(raw)).mode & 0o777).toString(8)).toBe("600");
      expectOwnerOnly(await modes(join(work, "out")));
      const ploop = join(work, "restored", "root.hdd");
      const p = await runCli(["restore", ...repo.args, "101", "--target", ploop, "--password-file", passwordFile]);
      expect(p.code, p.stderr).toBe(0);
      const entries = await modes(ploop);
      expect(entries.map((e) => e.path.slice(ploop.length)).sort()).toEqual(["", "/DiskDescriptor.xml", "/root.hdd", "/ve.conf"]);
      expectOwnerOnly(entries);
    },
    HEAVY,
  );
});
