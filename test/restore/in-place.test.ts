/**
 * restore --in-place (issue 15 item 4): a raw restore over yesterday's restored file reads
 * and hashes each chunk's range there and writes only what differs, working under
 * FILE.ploopvault-partial until done. Proven on the real corpus disk changed in two
 * clusters by a real ploop delta: the result equals the real ploop's flattening of today's
 * disk (sha256) and a normal restore; only the changed chunks are fetched (counted on the
 * wire by a proxy in front of RGW, against the set computed here with SHA-256; an
 * encrypted repository's HMAC ids too); a start file that is longer, shorter, garbage or
 * has data where the disk has holes still ends bit-identical. A failed fetch or a SIGKILL
 * mid-way leaves no FILE, only the marker, and the same command resumes from it.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile, rm, stat, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, jsonLines, PLOOP_WRAPPER, type CliResult } from "../helpers/cli.js";
import { backUpTwoDays, differingChunks, fileExtents, TWO_DAYS_CT as CT, type TwoDays } from "../helpers/two-days.js";
import { sha256File } from "../ploop/fixtures.js";
import { expectCleanFailure } from "../faults/harness.js";

const MIB = 1024 * 1024;
const MARKER = ".ploopvault-partial";

interface InPlaceJson {
  chunks: number;
  fetchedChunks: number;
  seededChunks: number;
  unchangedChunks: number;
  writtenBytes: number;
  zeroedBytes: number;
  readBytes: number;
  dataBytes: number;
  logicalBytes: number;
  resumed: boolean;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe.each(["s3", "encrypted"] as const)("restore --in-place, %s repository", (kind) => {
  let days: TwoDays;

  const cli = (args: string[]): Promise<CliResult> => days.cli(args);
  const inPlace = async (target: string, extra: string[] = []): Promise<{ result: InPlaceJson; gets: number }> => {
    days.resetGets();
    const r = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", target, "--force", "--in-place", "--json", ...extra]);
    expect(r.code, r.stderr).toBe(0);
    expect(await exists(target + MARKER)).toBe(false);
    return { result: jsonLines<InPlaceJson>(r.stdout)[0]!, gets: days.gets };
  };
  /** A sparse copy of yesterday's restored file, world-readable (the restore makes it owner-only). */
  const yesterdayCopy = async (name: string): Promise<string> => {
    const path = join(days.work, name);
    await execa("cp", ["--sparse=always", days.yesterdayRaw, path]);
    await chmod(path, 0o644);
    return path;
  };

  beforeAll(async () => {
    days = await backUpTwoDays(kind, "inplace");
  });
  afterAll(async () => {
    await days?.cleanup();
  });

  it("over yesterday's file: bit-identical to a normal restore, only the changed chunks fetched, owner-only", async () => {
    const fresh = join(days.work, "fresh.raw");
    const normal = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", fresh, "-q"]);
    expect(normal.code, normal.stderr).toBe(0);
    expect(await sha256File(fresh)).toBe(days.todaySha);
    await rm(fresh);

    const target = await yesterdayCopy("over.raw");
    const { result, gets } = await inPlace(target);
    expect(await sha256File(target)).toBe(days.todaySha);
    expect(result.resumed).toBe(false);
    expect(result.fetchedChunks).toBeGreaterThan(0);
    expect(result.fetchedChunks / result.chunks).toBeLessThan(0.05);
    expect(result.unchangedChunks + result.fetchedChunks).toBeLessThanOrEqual(result.chunks);
    // only the blocks that differ are written: at most what was fetched, at least the 2 x 256 KiB changed
    expect(result.writtenBytes).toBeGreaterThanOrEqual(2 * 256 * 1024);
    expect(result.writtenBytes).toBeLessThanOrEqual(result.fetchedChunks * 4 * MIB);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    // the file's holes (cp --sparse=always wrote it sequentially: filefrag lists several
    // extents and counts them as one) are known from its extents, not read
    expect(result.logicalBytes).toBeGreaterThan(3 * result.dataBytes);
    // and every chunk's range is read and counted (ranges are read 8 or 32 at a time)
    expect(result.readBytes).toBeGreaterThanOrEqual(0.95 * result.dataBytes);
    expect(result.readBytes).toBeLessThan(result.dataBytes + 16 * MIB);
    if (kind === "s3") {
      const expected = differingChunks(days.today!, days.maxChunk, await readFile(days.yesterdayRaw));
      expect(gets).toBeGreaterThanOrEqual(expected.ids); // counted on the wire
      expect(gets).toBeLessThanOrEqual(result.fetchedChunks + 3); // a retry of a request timed out on a loaded machine
      expect(result.fetchedChunks).toBeGreaterThanOrEqual(expected.ids);
      expect(result.fetchedChunks).toBeLessThanOrEqual(expected.entries);
    }
    // nothing differs any more: nothing fetched, nothing written
    const again = await inPlace(target);
    expect(again.result.fetchedChunks).toBe(0);
    expect(again.result.writtenBytes + again.result.zeroedBytes).toBe(0);
    expect(await sha256File(target)).toBe(days.todaySha);
    await rm(target);
  });

  it("over a file that is longer, shorter, garbage, or has data where the disk has holes: bit-identical", async () => {
    const longer = await yesterdayCopy("longer.raw");
    const fh = await open(longer, "a");
    await fh.write(randomBytes(64 * MIB));
    await fh.close();
    const shorter = await yesterdayCopy("shorter.raw");
    await truncate(shorter, 10 * MIB);
    const garbage = join(days.work, "garbage.raw");
    await writeFile(garbage, randomBytes(3 * MIB));
    // random bytes in the middle of the widest hole of yesterday's file
    const holey = await yesterdayCopy("holey.raw");
    const extents = await fileExtents(holey);
    let gap: [number, number] = [0, 0];
    for (let i = 1; i < extents.length; i++) if (extents[i]![0] - extents[i - 1]![1] > gap[1] - gap[0]) gap = [extents[i - 1]![1], extents[i]![0]];
    expect(gap[1] - gap[0]).toBeGreaterThan(8 * MIB);
    const hfh = await open(holey, "r+");
    await hfh.write(randomBytes(2 * MIB), 0, 2 * MIB, Math.floor((gap[0] + gap[1]) / 2 / MIB) * MIB);
    await hfh.close();

    for (const [target, check] of [
      [longer, (r: InPlaceJson) => expect(r.fetchedChunks / r.chunks).toBeLessThan(0.05)],
      [shorter, (r: InPlaceJson) => expect(r.fetchedChunks).toBeGreaterThan(r.chunks * 0.5)],
      [garbage, (r: InPlaceJson) => expect(r.fetchedChunks).toBeGreaterThan(r.chunks * 0.8)],
      // holes are checked and punched in 4 MiB pieces: the 2 MiB lie in one or two of them
      [holey, (r: InPlaceJson) => expect([2 * MIB, 4 * MIB, 8 * MIB]).toContain(r.zeroedBytes)],
    ] as const) {
      const { result } = await inPlace(target);
      expect(await sha256File(target), target).toBe(days.todaySha);
      check(result);
      await rm(target);
    }
  });

  it("a failed fetch leaves only the marker, one line says how to resume, and the same command resumes", async () => {
    // yesterday's file with its first 8 MiB garbage: those chunks are fetched and written before the failure
    const target = await yesterdayCopy("fail.raw");
    const fh = await open(target, "r+");
    await fh.write(randomBytes(8 * MIB), 0, 8 * MIB, 0);
    await fh.close();
    const saved = new Map<string, Buffer>();
    for (const key of days.chunksAddedToday) {
      saved.set(key, await days.repo.read(key));
      await days.repo.remove(key);
    }
    const failed = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", target, "--force", "--in-place", "--concurrency", "1"]);
    expectCleanFailure(failed, /run the same restore --in-place again to resume/);
    expect(failed.stderr).toContain(`${target} is now ${target}${MARKER}`);
    expect(await exists(target)).toBe(false);
    expect(await exists(target + MARKER)).toBe(true);
    for (const [key, body] of saved) await days.repo.write(key, body);

    const { result } = await inPlace(target);
    expect(result.resumed).toBe(true);
    expect(await sha256File(target)).toBe(days.todaySha);
    // the garbage was rewritten before the failure: the resume fetches about what yesterday's file needs
    expect(result.fetchedChunks / result.chunks).toBeLessThan(0.05);
  });

  it.runIf(kind === "s3")("SIGKILL mid-way leaves no FILE, only the marker; running the command again resumes and ends bit-identical", async () => {
    const target = join(days.work, "killed.raw");
    await writeFile(target, randomBytes(32 * MIB));
    const child = execa(
      process.execPath,
      [CLI, "restore", ...days.repo.args, `${CT}:latest`, "--format", "raw", "--target", target, "--force", "--in-place", "--concurrency", "2", "-q"],
      {
        env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...days.env },
        reject: false,
      },
    );
    let seen = 0;
    days.onChunkGet = () => {
      if (++seen === 20) child.kill("SIGKILL");
    };
    const r = await child;
    days.onChunkGet = null;
    expect(r.signal).toBe("SIGKILL");
    expect(await exists(target)).toBe(false);
    expect(await exists(target + MARKER)).toBe(true);
    // without --force the marker is not touched
    const noForce = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", target, "--in-place"]);
    expectCleanFailure(noForce, /is left from an interrupted restore --in-place .*add --force to resume/);
    const { result } = await inPlace(target);
    expect(result.resumed).toBe(true);
    expect(await sha256File(target)).toBe(days.todaySha);
    await rm(target);
  });

  it.runIf(kind === "encrypted")("refusals: missing file, directory, symlink, other --seed, no --force, marker beside the file, not raw", async () => {
    const missing = join(days.work, "missing.raw");
    expectCleanFailure(
      await cli(["restore", CT, "--format", "raw", "--target", missing, "--force", "--in-place"]),
      /missing\.raw does not exist: --in-place rewrites an existing file/,
    );
    expect(await exists(missing)).toBe(false);
    const dir = join(days.work, "a-dir");
    await mkdir(dir);
    expectCleanFailure(await cli(["restore", CT, "--format", "raw", "--target", dir, "--force", "--in-place"]), /a-dir is a directory/);
    const link = join(days.work, "link.raw");
    await symlink(days.yesterdayRaw, link);
    expectCleanFailure(await cli(["restore", CT, "--format", "raw", "--target", link, "--force", "--in-place"]), /link\.raw is not a regular file/);

    const file = await yesterdayCopy("refused.raw");
    const before = await sha256File(file);
    const other = await cli(["restore", CT, "--format", "raw", "--target", file, "--force", "--in-place", "--seed", days.yesterdayRaw]);
    expectCleanFailure(other, /--in-place uses the target .* as its own seed: --seed .* does not apply/, 2);
    expectCleanFailure(await cli(["restore", CT, "--format", "raw", "--target", file, "--in-place"]), /refused\.raw already exists \(use --force/);
    expectCleanFailure(await cli(["restore", CT, "--target", file, "--force", "--in-place"]), /--in-place rewrites a raw disk image: add --format raw/, 2);
    await writeFile(file + MARKER, "someone else's\n");
    expectCleanFailure(
      await cli(["restore", CT, "--format", "raw", "--target", file, "--force", "--in-place"]),
      /refused\.raw\.ploopvault-partial exists beside restore target .*refused\.raw/,
    );
    expect(await readFile(file + MARKER, "utf8")).toBe("someone else's\n");
    expect(await sha256File(file)).toBe(before);
    expect((await stat(file)).mode & 0o777).toBe(0o644);
    // the target itself as --seed is accepted (it is the seed anyway)
    await rm(file + MARKER);
    const self = await cli(["restore", CT, "--format", "raw", "--target", file, "--force", "--in-place", "--seed", file, "-q"]);
    expect(self.code, self.stderr).toBe(0);
    expect(await sha256File(file)).toBe(days.todaySha);
  });
});
