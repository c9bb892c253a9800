/**
 * backup --skip-free end to end through the CLI, on an aged disk (GPT + ext4 at 1 MiB in a
 * ploop image; files written, deleted and rewritten by the real debugfs, so about a third
 * of the clusters holding data are free in ext4). Oracles: e2fsck -fn of the restored
 * partition, every file's content by debugfs (rdump), dumpe2fs's free blocks of the
 * source (every block it calls in use is restored bit-identical; the others are the
 * source's bytes or zeros), and the default backup bit-identical as before. Fallbacks:
 * no filesystem, a filesystem in errors state, a damaged bitmap: everything is read.
 * Incremental with the real ploop: files deleted and written between backups.
 */
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { buildAgedDisk, debugfsWrite, e2fsckClean, freeBlockMap, type AgedDisk } from "../helpers/aged-disk.js";
import { debugfsTree } from "../helpers/debugfs-oracle.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopFlatten } from "../helpers/ploop-tool.js";
import { asPloopDisk, patch } from "../helpers/small-disks.js";
import { sha256File } from "../ploop/fixtures.js";

interface Result {
  status: string;
  backup: string;
  mode?: "incremental" | "full";
  fullReason?: string;
  readBytes: number;
  dataBytes: number;
  holeBytes: number;
  newBytesStored: number;
  reusedChunks: number;
  skippedFreeBytes?: number;
}

const CLUSTER = 1 << 20;

/** Bytes of the clusters of `raw` that hold anything but zeros (what a ploop image allocates). */
async function nonZeroClusterBytes(raw: string): Promise<number> {
  const data = await readFile(raw);
  let n = 0;
  for (let at = 0; at < data.length; at += CLUSTER) {
    const c = data.subarray(at, Math.min(at + CLUSTER, data.length));
    if (c.some((b) => b !== 0)) n += c.length;
  }
  return n;
}

/**
 * Every block dumpe2fs calls in use in the source, and everything outside the filesystem,
 * is identical in the restored disk; a block that differs is free in the source and zero
 * in the restore. Returns how many free blocks came back as zeros instead of their bytes.
 */
async function expectUsedBlocksIdentical(source: AgedDisk, restored: string): Promise<number> {
  const a = await readFile(source.raw);
  const b = await readFile(restored);
  expect(b.length).toBe(a.length);
  const bs = source.blockSize;
  const blocks = Math.floor((a.length - source.fsOffset) / bs);
  const free = await freeBlockMap(source.raw, source.fsOffset, blocks);
  let zeroed = 0;
  for (let at = 0; at < a.length; at += bs) {
    const x = a.subarray(at, at + bs);
    const y = b.subarray(at, at + bs);
    if (x.equals(y)) continue;
    const block = (at - source.fsOffset) / bs;
    if (at < source.fsOffset || free[block] !== 1)
      throw new Error(`restored disk differs at byte ${at} (filesystem block ${block}), which is in use in the source`);
    if (y.some((v) => v !== 0)) throw new Error(`restored disk has neither the source's bytes nor zeros at byte ${at}`);
    zeroed++;
  }
  return zeroed;
}

/** The restored filesystem is clean and holds exactly the source's files (debugfs as oracle). */
async function expectSameFiles(source: string, restored: string, offset: number): Promise<number> {
  const fsck = await e2fsckClean(restored, offset);
  expect(fsck.code, fsck.output).toBe(0);
  const want = await debugfsTree(source, offset);
  const got = await debugfsTree(restored, offset);
  try {
    expect([...got.entries.keys()].sort()).toEqual([...want.entries.keys()].sort());
    let files = 0;
    for (const [path, e] of want.entries) {
      const g = got.entries.get(path)!;
      expect({ path, type: g.type, size: g.size, sha256: g.sha256, mode: g.permissions }).toEqual({
        path,
        type: e.type,
        size: e.size,
        sha256: e.sha256,
        mode: e.permissions,
      });
      if (e.type === "file") files++;
    }
    return files;
  } finally {
    await want.cleanup();
    await got.cleanup();
  }
}

describe("backup --skip-free", () => {
  let work: string;
  let aged: AgedDisk;
  let agedDd: string;
  const repos: RepoTarget[] = [];

  async function newRepo(): Promise<RepoTarget> {
    const repo = await localRepo();
    repos.push(repo);
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "64K"]);
    expect(init.code, init.stderr).toBe(0);
    return repo;
  }

  async function backup(repo: RepoTarget, dd: string, ct: string, extra: string[] = []): Promise<Result & { stderr: string }> {
    const b = await runCli(["backup", ...repo.args, "--disk", dd, "--name", ct, "--json", ...extra]);
    expect(b.code, b.stderr).toBe(0);
    const [r] = jsonLines<Result>(b.stdout);
    expect(r!.status).toBe("ok");
    return { ...r!, stderr: b.stderr };
  }

  let lastRestoreStderr = "";
  async function restoreRaw(repo: RepoTarget, ref: string, name: string): Promise<string> {
    const raw = join(work, `${name}.restored`);
    await rm(raw, { force: true });
    const r = await runCli(["restore", ...repo.args, ref, "--format", "raw", "--target", raw]);
    expect(r.code, r.stderr).toBe(0);
    lastRestoreStderr = r.stderr;
    return raw;
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-skipfree-"));
    aged = await buildAgedDisk(work, "aged", { sizeMiB: 96 });
    agedDd = await asPloopDisk(aged.raw, join(work, "disks"), "aged");
  });
  afterAll(async () => {
    for (const r of repos) await r.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("skips the clusters ext4 has freed: fewer bytes read and stored, a clean filesystem with every file identical", async () => {
    const plain = await newRepo();
    const skipping = await newRepo();
    const full = await backup(plain, agedDd, "aged");
    expect(full.skippedFreeBytes).toBeUndefined();
    const free = await backup(skipping, agedDd, "aged", ["--skip-free"]);
    expect(free.stderr).toMatch(/--skip-free: ext4 filesystem in partition 1 of disk .*: \d+ of \d+ blocks free, \d+ whole clusters skipped/);

    // the disk is aged as the issue asks: ~30 % of the allocated clusters are free in ext4
    const allocated = await nonZeroClusterBytes(aged.raw);
    const share = free.skippedFreeBytes! / allocated;
    expect(share, `skipped ${free.skippedFreeBytes} of ${allocated} allocated bytes`).toBeGreaterThan(0.2);
    expect(share).toBeLessThan(0.6);
    expect(free.readBytes).toBeLessThanOrEqual(full.readBytes - free.skippedFreeBytes! + 64 * 4096); // + the bitmaps and descriptors read
    expect(free.dataBytes).toBe(full.dataBytes - free.skippedFreeBytes!);
    expect(free.newBytesStored).toBeLessThan(full.newBytesStored);

    // the default is unchanged: bit-identical to the source
    const plainRaw = await restoreRaw(plain, "aged", "plain");
    expect(await sha256File(plainRaw)).toBe(await sha256File(aged.raw));
    expect(lastRestoreStderr).not.toMatch(/skip-free/);

    const restored = await restoreRaw(skipping, "aged", "skipped");
    expect(lastRestoreStderr).toMatch(/was taken with --skip-free: .* of free filesystem space was not stored and reads as zeros/);
    const zeroed = await expectUsedBlocksIdentical(aged, restored);
    // free blocks that held deleted files' bytes came back as zeros (some free blocks were zeros already)
    expect(zeroed * aged.blockSize).toBeGreaterThan(free.skippedFreeBytes! / 2);
    expect(zeroed * aged.blockSize).toBeLessThanOrEqual(free.skippedFreeBytes!);
    const files = await expectSameFiles(aged.raw, restored, aged.fsOffset);
    expect(files).toBe(aged.files.length + 2); // + /README, /etc/hostname

    // the repository is consistent and the manifest says free space was skipped
    const check = await runCli(["check", ...skipping.args, "--read-data"]);
    expect(check.code, check.stderr).toBe(0);
    const list = await runCli(["snapshots", ...skipping.args, "--json"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/"freeSpace"|skippedFreeBytes/);
  });

  it("reads everything when it cannot prove space free: no filesystem, errors state, a damaged bitmap", async () => {
    const repo = await newRepo();
    // no filesystem: random clusters
    const noFs = join(work, "nofs.raw");
    const data = Buffer.alloc(16 * CLUSTER);
    for (const c of [0, 3, 4, 9]) data.fill(c + 1, c * CLUSTER, (c + 1) * CLUSTER);
    await writeFile(noFs, data);
    const noFsDd = await asPloopDisk(noFs, join(work, "disks"), "nofs");
    const r1 = await backup(repo, noFsDd, "nofs", ["--skip-free"]);
    expect(r1.stderr).toMatch(/--skip-free: reading everything: no ext2\/ext3\/ext4 filesystem/);
    expect(r1.skippedFreeBytes).toBe(0);
    expect(await sha256File(await restoreRaw(repo, "nofs", "nofs"))).toBe(await sha256File(noFs));

    // errors state (set by debugfs, checksum updated): refused with one line
    const errors = join(work, "errors.raw");
    await copyFile(aged.raw, errors);
    await debugfsWrite(errors, aged.fsOffset, ["ssv state 2"]);
    const r2 = await backup(repo, await asPloopDisk(errors, join(work, "disks"), "errors"), "errors", ["--skip-free"]);
    expect(r2.stderr.split("\n").filter((l) => l.includes("--skip-free"))).toEqual([
      expect.stringMatching(/reading all of the ext4 filesystem in partition 1 of .*: the filesystem is marked as having errors/),
    ]);
    expect(r2.skippedFreeBytes).toBe(0);
    expect(await sha256File(await restoreRaw(repo, "errors", "errors"))).toBe(await sha256File(errors));

    // a damaged block bitmap (its checksum no longer matches)
    const damaged = join(work, "damaged.raw");
    await copyFile(aged.raw, damaged);
    const stats = (await execa("dumpe2fs", [`${damaged}?offset=${aged.fsOffset}`])).stdout;
    const bitmapBlock = Number(/Block bitmap at (\d+)/.exec(stats)![1]);
    await patch({ raw: damaged, fsOffset: aged.fsOffset, blockSize: 4096 }, aged.fsOffset + bitmapBlock * 4096 + 3000, Buffer.from([0xa5]));
    const r3 = await backup(repo, await asPloopDisk(damaged, join(work, "disks"), "damaged"), "damaged", ["--skip-free"]);
    expect(r3.stderr).toMatch(/--skip-free: reading all of partition 1 of .*: .*block bitmap checksum mismatch/);
    expect(r3.skippedFreeBytes).toBe(0);
    expect(await sha256File(await restoreRaw(repo, "damaged", "damaged"))).toBe(await sha256File(damaged));
  });

  it("incremental backups with --skip-free: files deleted and written between backups restore correctly", async () => {
    const repo = await newRepo();
    const privateRoot = join(work, "private");
    const ct = "501";
    const dd = await asPloopDisk(aged.raw, privateRoot, ct);
    const args = [
      ...repo.args,
      "--private-root",
      privateRoot,
      "--vzlist-bin",
      "/nonexistent/vzlist",
      "--ploop-bin",
      PLOOP_WRAPPER,
      ct,
      "--json",
      "--skip-free",
    ];
    const b1 = await runCli(["backup", ...args]);
    expect(b1.code, b1.stderr).toBe(0);
    const [first] = jsonLines<Result>(b1.stdout);
    expect(first!.mode).toBe("full");
    expect(first!.skippedFreeBytes).toBeGreaterThan(0);

    // a "day": the container deletes files (their clusters become free, unwritten) and
    // writes new ones (partly into space that was free at the first backup)
    let state: AgedDisk = aged;
    let skippedBefore = first!.skippedFreeBytes!;
    for (let day = 1; day <= 2; day++) {
      const next = join(work, `day${day}.raw`);
      await copyFile(state.raw, next);
      const remaining = day === 1 ? aged.files.filter((_, i) => i % 3 === 0) : aged.files.filter((_, i) => i % 3 === 1);
      const src = join(work, `day${day}-src`);
      await mkdir(src, { recursive: true });
      const cmds = remaining.map((f) => `rm ${f}`);
      for (let j = 0; j < 6; j++) {
        await writeFile(join(src, `n${j}`), Buffer.alloc((300 << 10) + j * 4096 * 7, `day ${day} file ${j} `));
        cmds.push(`write ${join(src, `n${j}`)} /data/day${day}-n${j}`);
      }
      await debugfsWrite(next, aged.fsOffset, cmds);
      // the container's writes land in the top delta, cluster by cluster
      const before = await readFile(state.raw);
      const after = await readFile(next);
      let written = 0;
      for (let c = 0; c * CLUSTER < after.length; c++) {
        const x = after.subarray(c * CLUSTER, (c + 1) * CLUSTER);
        if (!x.equals(before.subarray(c * CLUSTER, (c + 1) * CLUSTER))) {
          await writeClusterToTop(dd, c, x);
          written++;
        }
      }
      expect(written).toBeGreaterThan(0);
      state = { ...aged, raw: next };
      const b = await runCli(["backup", ...args]);
      expect(b.code, b.stderr).toBe(0);
      const [r] = jsonLines<Result>(b.stdout);
      expect(r!.mode, r!.fullReason).toBe("incremental");
      expect(r!.reusedChunks).toBeGreaterThan(0);
      // the deleted files' clusters (not written since: only metadata changed) are dropped
      expect(r!.skippedFreeBytes).toBeGreaterThan(skippedBefore);
      skippedBefore = r!.skippedFreeBytes!;
      // the disk as the real ploop sees it at that snapshot is the day's disk
      const flat = join(work, `day${day}.flat`);
      await ploopFlatten(dd, flat);
      expect(await sha256File(flat)).toBe(await sha256File(next));
      await rm(flat);
      const restored = await restoreRaw(repo, `${ct}/${r!.backup}`, `day${day}`);
      await expectUsedBlocksIdentical(state, restored);
      await expectSameFiles(next, restored, aged.fsOffset);
    }
  });
});
