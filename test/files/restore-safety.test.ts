/**
 * restore --include writes into a folder that someone else may control (a container's
 * root): it never follows a symlink found there, refuses to overwrite what exists unless
 * --force (which replaces the entry, never its target), leaves no temporary files behind,
 * gives restored entries their backed-up mode and the folders it only creates 0700.
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { asPloopDisk, buildSmallDisk } from "../helpers/small-disks.js";

let work: string;
let repoArgs: string[];
let target: string;
let outside: string;

async function restore(...args: string[]): Promise<{ code: number; stderr: string }> {
  return runCli(["restore", ...repoArgs, "safe", ...args]);
}

async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    out.push(e.name);
    if (e.isDirectory()) out.push(...(await tree(join(dir, e.name))).map((n) => `${e.name}/${n}`));
  }
  return out.sort();
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-fs-safety-"));
  repoArgs = ["--repo", join(work, "repo"), "--state-dir", join(work, "state")];
  expect((await runCli(["init", ...repoArgs, "-q"])).code).toBe(0);
  const disk = await buildSmallDisk(work, "safe", { gpt: true });
  const r = await runCli(["backup", ...repoArgs, "--disk", await asPloopDisk(disk.raw, join(work, "private"), "safe"), "-q"]);
  expect(r.code, r.stderr).toBe(0);
}, 120_000);

beforeEach(async () => {
  const base = await mkdtemp(join(work, "case-"));
  target = join(base, "target");
  outside = join(base, "outside");
  await mkdir(target);
  await mkdir(outside);
  await writeFile(join(outside, "victim"), "must stay\n");
});

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe("restore --include into a folder with symlinks in it", () => {
  it("refuses a symlinked folder on the way, and --force replaces the link, not its target", async () => {
    await symlink(outside, join(target, "dir"));
    const r = await restore("--include", "/dir", "--target", target);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`ploopvault: ${target}/dir is a symbolic link in the restore target: refusing to restore through it (--force replaces it)`);
    expect(await tree(outside)).toEqual(["victim"]);
    const forced = await restore("--include", "/dir", "--target", target, "--force", "-q");
    expect(forced.code, forced.stderr).toBe(0);
    expect((await lstat(join(target, "dir"))).isDirectory()).toBe(true);
    expect(await readFile(join(target, "dir", "sub", "deep.txt"), "utf8")).toBe("deep\n");
    expect(await tree(outside)).toEqual(["victim"]);
  });

  it("refuses a symlink deeper down, in a parent of the included path", async () => {
    await mkdir(join(target, "dir"));
    await symlink(outside, join(target, "dir", "sub"));
    const r = await restore("--include", "/dir/sub/deep.txt", "--target", target);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${target}/dir/sub is a symbolic link in the restore target`);
    expect(await tree(outside)).toEqual(["victim"]);
  });

  it("never writes through a symlink at a file's place, and replaces it only with --force", async () => {
    await symlink(join(outside, "victim"), join(target, "hello.txt"));
    const r = await restore("--include", "/hello.txt", "--target", target);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`ploopvault: ${target}/hello.txt already exists in the restore target (--force replaces it)`);
    const forced = await restore("--include", "/hello.txt", "--target", target, "--force", "-q");
    expect(forced.code, forced.stderr).toBe(0);
    expect((await lstat(join(target, "hello.txt"))).isFile()).toBe(true);
    expect(await readFile(join(target, "hello.txt"), "utf8")).toBe("hello\n");
    expect(await readFile(join(outside, "victim"), "utf8")).toBe("must stay\n");
  });

  it("replaces an existing file only with --force, and a folder never", async () => {
    await mkdir(join(target, "dir"), { recursive: true });
    await writeFile(join(target, "dir", "f1"), "local edit\n");
    const r = await restore("--include", "/dir", "--target", target);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${target}/dir/f1 already exists in the restore target`);
    expect(await readFile(join(target, "dir", "f1"), "utf8")).toBe("local edit\n");
    expect((await tree(target)).filter((n) => n.includes(".ploopvault-restore-"))).toEqual([]);
    const forced = await restore("--include", "/dir", "--target", target, "--force", "-q");
    expect(forced.code, forced.stderr).toBe(0);
    expect(await readFile(join(target, "dir", "f1"), "utf8")).toBe("file 1\nfile 1\n");
    await rm(join(target, "hello.txt"), { force: true });
    await mkdir(join(target, "hello.txt"));
    const dirInTheWay = await restore("--include", "/hello.txt", "--target", target, "--force");
    expect(dirInTheWay.code).toBe(1);
    expect(dirInTheWay.stderr).toContain(`${target}/hello.txt is a folder in the restore target, but not in the backup`);
  });

  it("restores symlinks as symlinks (even absolute ones), without following them", async () => {
    const r = await restore("--include", "/etc-link", "--include", "/link", "--target", target, "-q");
    expect(r.code, r.stderr).toBe(0);
    expect(await readlink(join(target, "etc-link"))).toBe("/etc");
    expect(await readlink(join(target, "link"))).toBe("dir/sub/deep.txt");
    expect(await tree(target)).toEqual(["etc-link", "link"]);
  });

  it("gives restored entries their mode and the folders it only creates 0700", async () => {
    const fresh = join(target, "new", "place");
    const r = await restore("--include", "/dir/sub/deep.txt", "--target", fresh, "-q");
    expect(r.code, r.stderr).toBe(0);
    const mode = async (p: string): Promise<string> => ((await lstat(p)).mode & 0o7777).toString(8);
    expect(await mode(fresh)).toBe("700");
    expect(await mode(join(fresh, "dir"))).toBe("700");
    expect(await mode(join(fresh, "dir", "sub"))).toBe("700");
    expect(await mode(join(fresh, "dir", "sub", "deep.txt"))).toBe("644");
    const whole = join(target, "whole");
    expect((await restore("--include", "/dir", "--target", whole, "-q")).code).toBe(0);
    expect(await mode(whole)).toBe("700");
    expect(await mode(join(whole, "dir"))).toBe("755");
    expect(await mode(join(whole, "dir", "sub"))).toBe("750");
  });
});
