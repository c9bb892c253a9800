/**
 * Restore at the store's speed (issue 15 item 4):
 * - holes stay holes: a raw restore allocates no block where the backup has a hole, nor
 *   the all-zero 4 KiB blocks inside chunks (`filefrag`, the kernel's own extent list, is
 *   the oracle); a ploop restore allocates no cluster for a hole (its BAT, read by hand);
 * - restore --seed: yesterday's copy of a container's disk (raw, ploop directory, ploop
 *   image, or the target itself) makes a restore of today's backup, with ~1 % of the data
 *   changed, fetch only the chunks whose bytes differ. GETs are counted on the wire by a
 *   proxy in front of RGW and compared with the set computed here independently (SHA-256
 *   of the seed at the manifest's boundaries); the result equals the real ploop's
 *   flattening of the changed disk. Encrypted repositories (HMAC ids) too; a seed of
 *   garbage costs fetches, never a wrong byte.
 */
import { createHash, randomBytes } from "node:crypto";
import { copyFile, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Manifest } from "../../src/manifest/format.js";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { ploopCheck, ploopFlatten } from "../helpers/ploop-tool.js";
import { backUpTwoDays, differingChunks, fileExtents, manifestOf, TWO_DAYS_CT as CT, type TwoDays } from "../helpers/two-days.js";
import { sha256File } from "../ploop/fixtures.js";

const MIB = 1024 * 1024;

interface RestoreJson {
  chunks: number;
  fetchedChunks: number;
  seededChunks: number;
  dataBytes: number;
}

function overlaps(extents: [number, number][], start: number, end: number): boolean {
  return extents.some(([a, b]) => a < end && start < b);
}

describe("restore keeps holes as holes", () => {
  let repo: RepoTarget;
  let work: string;
  let manifest: Manifest;

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-holes-"));
    expect((await runCli(["init", ...repo.args, "--chunk-avg", "256K"])).code).toBe(0);
    const b = await runCli(["backup", ...repo.args, "--disk", descriptorOf(CT), "--json", "-q"]);
    expect(b.code, b.stderr).toBe(0);
    manifest = await manifestOf(repo, CT, jsonLines<{ backup: string }>(b.stdout)[0]!.backup);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("raw: no block is allocated in the backup's holes, nor for zero blocks inside chunks", async () => {
    const target = join(work, "101.raw");
    const r = await runCli(["restore", ...repo.args, CT, "--format", "raw", "--target", target, "-q"]);
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(target)).toBe(corpus().flatSha256[CT]);
    const extents = await fileExtents(target);
    const holes = manifest.entries.filter((e) => e.kind === "hole");
    expect(holes.length).toBeGreaterThan(0);
    for (const h of holes) expect(overlaps(extents, h.offset, h.offset + h.length), `hole at ${h.offset}`).toBe(false);
    // every aligned 4 KiB block of zeros inside a chunk is a hole too
    const content = await readFile(target);
    const zero = Buffer.alloc(4096);
    let zeroBlocksInChunks = 0;
    for (const e of manifest.entries) {
      if (e.kind !== "chunk") continue;
      for (let b = Math.ceil(e.offset / 4096) * 4096; b + 4096 <= e.offset + e.length; b += 4096) {
        if (!content.subarray(b, b + 4096).equals(zero)) continue;
        zeroBlocksInChunks++;
        expect(overlaps(extents, b, b + 4096), `zero block at ${b}`).toBe(false);
      }
    }
    expect(zeroBlocksInChunks).toBeGreaterThan(0); // the corpus has some: the check checked something
    const allocated = extents.reduce((s, [a, b]) => s + (b - a), 0);
    const data = manifest.entries.reduce((s, e) => s + (e.kind === "chunk" ? e.length : 0), 0);
    expect(allocated).toBeLessThan(data);
  });

  it("ploop: clusters of holes are unallocated in the BAT and take no space in the image", async () => {
    const target = join(work, "ploop");
    const r = await runCli(["restore", ...repo.args, CT, "--target", target, "-q"]);
    expect(r.code, r.stderr).toBe(0);
    const image = await readFile(join(target, "root.hdd"));
    const clusterBytes = image.readUInt32LE(0x1c) * 512;
    const batEntries = image.readUInt32LE(0x20);
    const firstDataSectors = image.readUInt32LE(0x30);
    const used = new Set<number>();
    for (const e of manifest.entries) {
      if (e.kind !== "chunk") continue;
      for (let c = Math.floor(e.offset / clusterBytes); c * clusterBytes < e.offset + e.length; c++) used.add(c);
    }
    let allocated = 0;
    for (let c = 0; c < batEntries; c++) {
      const entry = image.readUInt32LE(64 + 4 * c);
      expect(entry !== 0, `cluster ${c}`).toBe(used.has(c));
      if (entry !== 0) allocated++;
    }
    expect(allocated).toBeLessThan(batEntries);
    expect(image.length).toBe(firstDataSectors * 512 + allocated * clusterBytes);
    expect((await ploopCheck(join(target, "root.hdd"))).exitCode).toBe(0);
  });
});

describe.each(["s3", "encrypted"] as const)("restore --seed, %s repository", (kind) => {
  let days: TwoDays;
  let seedRaw: string;
  let seedDir: string;

  const cli = (args: string[]): Promise<CliResult> => days.cli(args);
  /**
   * GETs seen on the wire for `fetched` chunk fetches: equal, give or take a retry of a
   * request the loaded test machine let time out.
   */
  const expectWireGets = (gets: number, fetched: number): void => {
    expect(gets).toBeGreaterThanOrEqual(fetched);
    expect(gets).toBeLessThanOrEqual(fetched + 3);
  };
  /** Restore with --json; returns the result and the chunk GETs the proxy saw. */
  const restore = async (args: string[]): Promise<{ result: RestoreJson; gets: number }> => {
    days.resetGets();
    const r = await cli(["restore", `${CT}:latest`, "--json", ...args]);
    expect(r.code, r.stderr).toBe(0);
    return { result: jsonLines<RestoreJson>(r.stdout)[0]!, gets: days.gets };
  };
  /** Chunk entries of today's manifest whose bytes in `seed` do not hash to their id (s3 only). */
  const differing = (seed: Buffer): { entries: number; ids: number } => differingChunks(days.today!, days.maxChunk, seed);

  beforeAll(async () => {
    // yesterday's backup restored as raw (by the fixture) and as ploop: the seeds
    days = await backUpTwoDays(kind, "seed");
    seedRaw = days.yesterdayRaw;
    seedDir = join(days.work, "yesterday-ploop");
    const ploop = await cli(["restore", `${CT}/${days.yesterdayId}`, "--target", seedDir, "-q"]);
    expect(ploop.code, ploop.stderr).toBe(0);
  });
  afterAll(async () => {
    await days?.cleanup();
  });

  it("a raw seed: only the chunks that changed are fetched, and the result is today's disk", async () => {
    const target = join(days.work, "today.raw");
    const unseeded = await restore(["--format", "raw", "--target", target]);
    expect(await sha256File(target)).toBe(days.todaySha);
    await rm(target);
    const { result, gets } = await restore(["--format", "raw", "--target", target, "--seed", seedRaw]);
    expect(await sha256File(target)).toBe(days.todaySha);
    expect(result.fetchedChunks).toBeGreaterThan(0);
    expect(result.fetchedChunks / result.chunks).toBeLessThan(0.05);
    expect(result.seededChunks + result.fetchedChunks).toBeLessThanOrEqual(result.chunks);
    if (kind === "s3") {
      expectWireGets(unseeded.gets, unseeded.result.fetchedChunks);
      expect(unseeded.gets).toBeGreaterThan(10 * gets);
      expectWireGets(gets, result.fetchedChunks); // counted on the wire
      const expected = differing(await readFile(seedRaw));
      expect(gets).toBeGreaterThanOrEqual(expected.ids);
      expect(result.fetchedChunks).toBeLessThanOrEqual(expected.entries);
    }
    await rm(target);
  });

  it("the target itself as the seed (raw and ploop, --force): replaced atomically, few fetches", async () => {
    const raw = join(days.work, "over.raw");
    await copyFile(seedRaw, raw);
    const a = await restore(["--format", "raw", "--target", raw, "--force", "--seed", raw]);
    expect(await sha256File(raw)).toBe(days.todaySha);
    expect(a.result.fetchedChunks / a.result.chunks).toBeLessThan(0.05);
    if (kind === "s3") expectWireGets(a.gets, a.result.fetchedChunks);
    // a raw file seeded by itself is rewritten whole: the log points at --in-place, once
    const again = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", raw, "--force", "--seed", raw]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr.split("\n").filter((l) => l.includes("hint: --in-place"))).toHaveLength(1);
    const other = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", raw, "--force", "--seed", seedRaw]);
    expect(other.code, other.stderr).toBe(0);
    expect(other.stderr).not.toContain("--in-place");
    await rm(raw);

    const dir = join(days.work, "over-ploop");
    await execa("cp", ["-a", seedDir, dir]);
    const b = await restore(["--target", dir, "--force", "--seed", dir]);
    expect(b.result.fetchedChunks / b.result.chunks).toBeLessThan(0.05);
    expect((await ploopCheck(join(dir, "root.hdd"))).exitCode).toBe(0);
    const flat = join(days.work, "over.flat");
    await ploopFlatten(join(dir, "DiskDescriptor.xml"), flat);
    expect(await sha256File(flat)).toBe(days.todaySha);
    await rm(flat);
    await rm(dir, { recursive: true });
  });

  it("a ploop image file or DiskDescriptor.xml as the seed; a raw stream with a seed", async () => {
    for (const seed of [join(seedDir, "root.hdd"), join(seedDir, "DiskDescriptor.xml")]) {
      const target = join(days.work, "from-ploop-seed.raw");
      const { result } = await restore(["--format", "raw", "--target", target, "--seed", seed]);
      expect(await sha256File(target)).toBe(days.todaySha);
      expect(result.fetchedChunks / result.chunks).toBeLessThan(0.05);
      await rm(target);
    }
    days.resetGets();
    const piped = await execa(
      process.execPath,
      [CLI, "restore", ...days.repo.args, `${CT}:latest`, "--format", "raw", "--target", "-", "--seed", seedRaw, "-q"],
      {
        env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...days.env },
        encoding: "buffer",
        maxBuffer: 1024 * MIB,
      },
    );
    expect(createHash("sha256").update(piped.stdout).digest("hex")).toBe(days.todaySha);
    if (kind === "s3") expect(days.gets).toBeLessThan(days.today!.entries.length * 0.05);
  });

  it("a seed of garbage or of the wrong size costs fetches, never a wrong byte; a missing seed is one line", async () => {
    const garbage = join(days.work, "garbage.raw");
    await writeFile(garbage, randomBytes(3 * MIB));
    const target = join(days.work, "from-garbage.raw");
    const { result, gets } = await restore(["--format", "raw", "--target", target, "--seed", garbage]);
    expect(await sha256File(target)).toBe(days.todaySha);
    // only chunks of zeros lying past the garbage's end can match (it reads as zeros there)
    expect(result.seededChunks).toBeLessThan(result.chunks * 0.05);
    expect(result.fetchedChunks).toBeGreaterThan(result.chunks * 0.8);
    if (kind === "s3") {
      expectWireGets(gets, result.fetchedChunks);
      const expected = differing(await readFile(garbage));
      expect(gets).toBeGreaterThanOrEqual(expected.ids);
      expect(result.fetchedChunks).toBeLessThanOrEqual(expected.entries);
    }
    await rm(target);
    // a seed longer than the disk (yesterday's disk grown by 64 MiB of random data)
    const longer = join(days.work, "longer.raw");
    await copyFile(seedRaw, longer);
    const fh = await open(longer, "a");
    await fh.write(randomBytes(64 * MIB));
    await fh.close();
    const l = await restore(["--format", "raw", "--target", target, "--seed", longer]);
    expect(await sha256File(target)).toBe(days.todaySha);
    expect(l.result.fetchedChunks / l.result.chunks).toBeLessThan(0.05);
    await rm(target);
    await rm(longer);

    const missing = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", target, "--seed", join(days.work, "nope.raw")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split("\n")).toHaveLength(1);
    expect(missing.stderr).toMatch(/cannot use seed .*nope\.raw/);
    await expect(stat(target)).rejects.toThrow();
  });
});
