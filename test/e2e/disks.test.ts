/**
 * Disks beyond the plain corpus, end to end through the CLI (local repository): a disk with
 * two user snapshots made by the real ploop, v1 images with 256 KiB clusters, and a 10 GiB
 * virtual disk with 3 allocated clusters.
 */
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSparse, jsonLines, localRepo, runCli, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopCheck, ploopFlatten, ploopInit, ploopSnapshot } from "../helpers/ploop-tool.js";
import { pattern, sha256File } from "../ploop/fixtures.js";

describe("special disks", () => {
  let repo: RepoTarget;
  let work: string;

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-disks-"));
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "64K"]);
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  async function roundTrip(ct: string, dd: string): Promise<{ readBytes: number; logicalBytes: number }> {
    const b = await runCli(["backup", ...repo.args, "--disk", dd, "--name", ct, "--json"]);
    expect(b.code, b.stderr).toBe(0);
    const [result] = jsonLines<{ readBytes: number; logicalBytes: number }>(b.stdout);
    const expected = join(work, `${ct}.expected`);
    await ploopFlatten(dd, expected);
    const raw = join(work, `${ct}.raw`);
    const r = await runCli(["restore", ...repo.args, ct, "--format", "raw", "--target", raw]);
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(raw)).toBe(await sha256File(expected));
    const restored = join(work, `${ct}.ploop`);
    const p = await runCli(["restore", ...repo.args, ct, "--target", restored]);
    expect(p.code, p.stderr).toBe(0);
    const check = await ploopCheck(join(restored, "root.hdd"));
    expect(check.exitCode, check.output).toBe(0);
    return result!;
  }

  it("a disk with two user snapshots restores to its top state", async () => {
    const dir = join(work, "snap", "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await ploopInit(join(dir, "root.hds"), { size: "64M", version: 2 });
    const cluster = 1 << 20;
    for (const c of [0, 3, 7]) await writeClusterToTop(dd, c, pattern(1, c, cluster));
    await ploopSnapshot(dd, `{${randomUUID()}}`);
    for (const c of [3, 9]) await writeClusterToTop(dd, c, pattern(2, c, cluster));
    await ploopSnapshot(dd, `{${randomUUID()}}`);
    for (const c of [7, 12, 63]) await writeClusterToTop(dd, c, pattern(3, c, cluster));
    await writeClusterToTop(dd, 0, pattern(3, 0, 4096)); // a partial overwrite of a lower cluster
    const result = await roundTrip("snapchain", dd);
    expect(result.logicalBytes).toBe(64 << 20);
  });

  it("v1 images with 256 KiB clusters", async () => {
    const dir = join(work, "v1", "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await ploopInit(join(dir, "root.hdd"), { size: "32M", version: 1, clusterSectors: 512 });
    const cluster = 256 << 10;
    for (const c of [1, 2, 50, 127]) await writeClusterToTop(dd, c, pattern(4, c, cluster));
    await ploopSnapshot(dd, `{${randomUUID()}}`);
    for (const c of [2, 60]) await writeClusterToTop(dd, c, pattern(5, c, cluster));
    await roundTrip("v1disk", dd);
  });

  it("a 10 GiB disk with 3 allocated clusters reads ~3 MiB and restores sparse", async () => {
    const dir = join(work, "big", "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await ploopInit(join(dir, "root.hds"), { size: "10G", version: 2 });
    for (const c of [0, 5000, 10239]) await writeClusterToTop(dd, c, pattern(6, c, 1 << 20));
    const b = await runCli(["backup", ...repo.args, "--disk", dd, "--name", "big", "--json"]);
    expect(b.code, b.stderr).toBe(0);
    const [result] = jsonLines<{ readBytes: number; logicalBytes: number }>(b.stdout);
    expect(result!.logicalBytes).toBe(10 * 2 ** 30);
    expect(result!.readBytes).toBe(3 * 2 ** 20);
    const raw = join(work, "big.raw");
    const r = await runCli(["restore", ...repo.args, "big", "--format", "raw", "--target", raw]);
    expect(r.code, r.stderr).toBe(0);
    const { apparent, allocated } = await isSparse(raw);
    expect(apparent).toBe(10 * 2 ** 30);
    expect(allocated).toBeLessThan(16 * 2 ** 20);
    const restored = join(work, "big.ploop");
    const p = await runCli(["restore", ...repo.args, "big", "--target", restored]);
    expect(p.code, p.stderr).toBe(0);
    const check = await ploopCheck(join(restored, "root.hdd"));
    expect(check.exitCode, check.output).toBe(0);
    expect((await isSparse(join(restored, "root.hdd"))).apparent).toBeLessThan(8 * 2 ** 20);
  });
});
