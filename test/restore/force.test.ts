/**
 * `restore --force` replaces only what a restore writes (issue: an operator's first day):
 * it once renamed a whole target directory away and deleted it, taking unrelated files
 * with it. A ploop restore now writes root.hdd, DiskDescriptor.xml (and the saved config)
 * into a directory that holds nothing else, and refuses one holding foreign files; a raw
 * restore replaces a file, never a directory. A container's own private area (root.hds, its
 * snapshot deltas, ploop's lock file) is the disk being replaced, not foreign files: the
 * in-place restore of docs/operations.md works there.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localRepo, runCli, type RepoTarget } from "../helpers/cli.js";
import { copyContainer, corpus, descriptorOf } from "../helpers/corpus.js";
import { sha256File } from "../ploop/fixtures.js";
import { ploopFlatten, ploopSnapshot } from "../helpers/ploop-tool.js";
import { expectCleanFailure } from "../faults/harness.js";

describe("restore --force", () => {
  let repo: RepoTarget;
  let work: string;
  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-force-"));
    expect((await runCli(["init", ...repo.args])).code).toBe(0);
    const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf("101"), "--name", "101", "-q"]);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("refuses a directory holding files a ploop restore does not write, and leaves every file alone", async () => {
    const target = join(work, "busy");
    await mkdir(target);
    await writeFile(join(target, "notes.txt"), "mine\n");
    await writeFile(join(target, "root.hds"), "an image of another disk\n");
    await writeFile(join(target, "DiskDescriptor.xml"), "old descriptor\n");
    const r = await runCli(["restore", ...repo.args, "101", "--target", target, "--force"]);
    expectCleanFailure(r, /holds files a ploop restore does not write \(notes\.txt, root\.hds\)/);
    expect((await readdir(target)).sort()).toEqual(["DiskDescriptor.xml", "notes.txt", "root.hds"]);
    expect(await readFile(join(target, "notes.txt"), "utf8")).toBe("mine\n");
    expect(await readFile(join(target, "DiskDescriptor.xml"), "utf8")).toBe("old descriptor\n");
  });

  it("replaces an earlier ploop restore in place: the restored disk is whole", async () => {
    const target = join(work, "again");
    expect((await runCli(["restore", ...repo.args, "101", "--target", target])).code).toBe(0);
    await writeFile(join(target, "root.hdd"), "damaged by someone\n");
    const r = await runCli(["restore", ...repo.args, "101", "--target", target, "--force"]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(target)).sort()).toEqual(["DiskDescriptor.xml", "root.hdd", "ve.conf"]);
    const flat = join(work, "again.flat");
    await ploopFlatten(join(target, "DiskDescriptor.xml"), flat);
    expect(await sha256File(flat)).toBe(corpus().flatSha256["101"]);
  });

  it("restores a container's private area in place: the old disk's images (root.hds, a snapshot delta) are replaced, the lock file stays", async () => {
    // as OpenVZ leaves /vz/private/101/root.hdd: root.hds, a kept snapshot's delta, DiskDescriptor.xml.lck
    const ct = await copyContainer("101");
    const target = join(ct, "root.hdd");
    await ploopSnapshot(join(target, "DiskDescriptor.xml"), "{70766c74-0000-4000-8000-00000000f0ce}");
    await writeFile(join(target, "DiskDescriptor.xml.lck"), "");
    const before = (await readdir(target)).sort();
    expect(before.filter((f) => f.startsWith("root.hds")).length).toBe(2);
    const dry = await runCli(["restore", ...repo.args, "101", "--target", target, "--force", "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`${join(target, "root.hds")} (removed`);
    expect((await readdir(target)).sort()).toEqual(before);
    const r = await runCli(["restore", ...repo.args, "101", "--target", target, "--force", "--seed", target]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(target)).sort()).toEqual(["DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hdd", "ve.conf"]);
    const flat = join(work, "inplace.flat");
    await ploopFlatten(join(target, "DiskDescriptor.xml"), flat);
    expect(await sha256File(flat)).toBe(corpus().flatSha256["101"]);
    await rm(ct, { recursive: true, force: true });
  });

  it("a raw restore replaces a file but never a directory", async () => {
    const dir = join(work, "rawdir");
    await mkdir(dir);
    await writeFile(join(dir, "keep.txt"), "x");
    expectCleanFailure(await runCli(["restore", ...repo.args, "101", "--format", "raw", "--target", dir, "--force"]), /is a directory/);
    expect(await readdir(dir)).toEqual(["keep.txt"]);
    const file = join(work, "old.raw");
    await writeFile(file, "old");
    const r = await runCli(["restore", ...repo.args, "101", "--format", "raw", "--target", file, "--force"]);
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(file)).toBe(corpus().flatSha256["101"]);
  });
});
