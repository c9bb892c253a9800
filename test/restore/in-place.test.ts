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
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, open, readFile, rm, stat, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeManifest, type Manifest } from "../../src/manifest/format.js";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, s3Repo, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { copyContainer } from "../helpers/corpus.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { ploopFlatten } from "../helpers/ploop-tool.js";
import { testS3 } from "../helpers/s3-server.js";
import { sha256File } from "../ploop/fixtures.js";
import { expectCleanFailure } from "../faults/harness.js";

const CT = "101";
const MIB = 1024 * 1024;
const MARKER = ".ploopvault-partial";

interface InPlaceJson {
  chunks: number;
  fetchedChunks: number;
  seededChunks: number;
  unchangedChunks: number;
  writtenBytes: number;
  zeroedBytes: number;
  resumed: boolean;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Allocated extents of a file, in bytes [start, end), from e2fsprogs' filefrag. */
async function allocatedExtents(path: string): Promise<[number, number][]> {
  const out = (await execa("filefrag", ["-e", path])).stdout;
  const block = Number(/blocks of (\d+) bytes/.exec(out)![1]);
  const extents: [number, number][] = [];
  for (const m of out.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) extents.push([Number(m[1]) * block, (Number(m[2]) + 1) * block]);
  return extents;
}

describe.each(["s3", "encrypted"] as const)("restore --in-place, %s repository", (kind) => {
  let repo: RepoTarget;
  let work: string;
  let proxy: FaultProxy | null = null;
  let env: Record<string, string>;
  let todaySha: string;
  let yesterdayRaw: string;
  /** Chunk objects that today's backup added (yesterday's file does not hold them). */
  let newChunkKeys: string[];
  let today: Manifest | null = null;
  let maxChunk = 0;
  let chunkGets = 0;
  let onChunkGet: (() => void) | null = null;

  const cli = (args: string[]): Promise<CliResult> => runCli([args[0]!, ...repo.args, ...args.slice(1)], { env });
  const inPlace = async (target: string, extra: string[] = []): Promise<{ result: InPlaceJson; gets: number }> => {
    chunkGets = 0;
    const r = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", target, "--force", "--in-place", "--json", ...extra]);
    expect(r.code, r.stderr).toBe(0);
    expect(await exists(target + MARKER)).toBe(false);
    return { result: jsonLines<InPlaceJson>(r.stdout)[0]!, gets: chunkGets };
  };
  /** Chunk entries of today's manifest whose bytes in `file` do not hash to their id (SHA-256: s3 only). */
  const differing = (file: Buffer): { entries: number; ids: number } => {
    const ids = new Set<string>();
    let entries = 0;
    const zeroId = createHash("sha256").update(Buffer.alloc(maxChunk)).digest();
    for (const e of today!.entries) {
      if (e.kind !== "chunk" || (e.length === maxChunk && e.id.equals(zeroId))) continue;
      const bytes = Buffer.alloc(e.length);
      if (e.offset < file.length) file.copy(bytes, 0, e.offset, Math.min(file.length, e.offset + e.length));
      if (!createHash("sha256").update(bytes).digest().equals(e.id)) {
        entries++;
        ids.add(e.id.toString("hex"));
      }
    }
    return { entries, ids: ids.size };
  };
  /** A sparse copy of yesterday's restored file, world-readable (the restore makes it owner-only). */
  const yesterdayCopy = async (name: string): Promise<string> => {
    const path = join(work, name);
    await execa("cp", ["--sparse=always", yesterdayRaw, path]);
    await chmod(path, 0o644);
    return path;
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-inplace-"));
    if (kind === "s3") {
      repo = await s3Repo("inplace");
      proxy = await startFaultProxy({
        target: testS3().endpoint,
        decide: (req) => {
          if (req.method === "GET" && req.path.includes("/chunks/")) {
            chunkGets++;
            onChunkGet?.();
          }
          return null;
        },
      });
      env = { ...repo.env, AWS_ENDPOINT_URL: proxy.url };
    } else {
      repo = await localRepo();
      env = { PLOOPVAULT_PASSWORD: "in-place test password" };
    }
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "256K", ...(kind === "encrypted" ? ["--encrypt"] : [])], { env });
    expect(init.code, init.stderr).toBe(0);
    const copy = await copyContainer(CT);
    const dd = join(copy, "root.hdd", "DiskDescriptor.xml");
    const day1 = await cli(["backup", "--disk", dd, "--name", CT, "--time", "2026-01-01T02:00:00Z", "--json", "-q"]);
    expect(day1.code, day1.stderr).toBe(0);
    const yesterdayId = jsonLines<{ backup: string }>(day1.stdout)[0]!.backup;
    yesterdayRaw = join(work, "yesterday.raw");
    expect((await cli(["restore", `${CT}/${yesterdayId}`, "--format", "raw", "--target", yesterdayRaw, "-q"])).code).toBe(0);
    const chunksBefore = new Set(await repo.listKeys("chunks/"));
    // today: 256 KiB rewritten in each of two clusters holding data (a real ploop delta)
    for (const c of [30, 60]) await writeClusterToTop(dd, c, randomBytes(256 * 1024));
    const day2 = await cli(["backup", "--disk", dd, "--name", CT, "--time", "2026-01-02T02:00:00Z", "--json", "-q"]);
    expect(day2.code, day2.stderr).toBe(0);
    newChunkKeys = (await repo.listKeys("chunks/")).filter((k) => !chunksBefore.has(k));
    expect(newChunkKeys.length).toBeGreaterThan(0);
    if (kind === "s3") {
      const key = `backups/${CT}/${jsonLines<{ backup: string }>(day2.stdout)[0]!.backup}/manifest`;
      today = decodeManifest(await repo.read(key), key);
      maxChunk = (JSON.parse((await repo.read("config")).toString()) as { chunker: { maxSize: number } }).chunker.maxSize;
    }
    const flat = join(work, "today.flat");
    await ploopFlatten(dd, flat);
    todaySha = await sha256File(flat);
    await rm(flat);
    await rm(copy, { recursive: true, force: true });
  });
  afterAll(async () => {
    await proxy?.close();
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("over yesterday's file: bit-identical to a normal restore, only the changed chunks fetched, owner-only", async () => {
    const fresh = join(work, "fresh.raw");
    const normal = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", fresh, "-q"]);
    expect(normal.code, normal.stderr).toBe(0);
    expect(await sha256File(fresh)).toBe(todaySha);
    await rm(fresh);

    const target = await yesterdayCopy("over.raw");
    const { result, gets } = await inPlace(target);
    expect(await sha256File(target)).toBe(todaySha);
    expect(result.resumed).toBe(false);
    expect(result.fetchedChunks).toBeGreaterThan(0);
    expect(result.fetchedChunks / result.chunks).toBeLessThan(0.05);
    expect(result.unchangedChunks + result.fetchedChunks).toBeLessThanOrEqual(result.chunks);
    // only the blocks that differ are written: at most what was fetched, at least the 2 x 256 KiB changed
    expect(result.writtenBytes).toBeGreaterThanOrEqual(2 * 256 * 1024);
    expect(result.writtenBytes).toBeLessThanOrEqual(result.fetchedChunks * 4 * MIB);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    if (kind === "s3") {
      const expected = differing(await readFile(yesterdayRaw));
      expect(gets).toBeGreaterThanOrEqual(expected.ids); // counted on the wire
      expect(gets).toBeLessThanOrEqual(result.fetchedChunks + 3); // a retry of a request timed out on a loaded machine
      expect(result.fetchedChunks).toBeGreaterThanOrEqual(expected.ids);
      expect(result.fetchedChunks).toBeLessThanOrEqual(expected.entries);
    }
    // nothing differs any more: nothing fetched, nothing written
    const again = await inPlace(target);
    expect(again.result.fetchedChunks).toBe(0);
    expect(again.result.writtenBytes + again.result.zeroedBytes).toBe(0);
    expect(await sha256File(target)).toBe(todaySha);
    await rm(target);
  });

  it("over a file that is longer, shorter, garbage, or has data where the disk has holes: bit-identical", async () => {
    const longer = await yesterdayCopy("longer.raw");
    const fh = await open(longer, "a");
    await fh.write(randomBytes(64 * MIB));
    await fh.close();
    const shorter = await yesterdayCopy("shorter.raw");
    await truncate(shorter, 10 * MIB);
    const garbage = join(work, "garbage.raw");
    await writeFile(garbage, randomBytes(3 * MIB));
    // random bytes in the middle of the widest hole of yesterday's file
    const holey = await yesterdayCopy("holey.raw");
    const extents = await allocatedExtents(holey);
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
      expect(await sha256File(target), target).toBe(todaySha);
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
    for (const key of newChunkKeys) {
      saved.set(key, await repo.read(key));
      await repo.remove(key);
    }
    const failed = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", target, "--force", "--in-place", "--concurrency", "1"]);
    expectCleanFailure(failed, /run the same restore --in-place again to resume/);
    expect(failed.stderr).toContain(`${target} is now ${target}${MARKER}`);
    expect(await exists(target)).toBe(false);
    expect(await exists(target + MARKER)).toBe(true);
    for (const [key, body] of saved) await repo.write(key, body);

    const { result } = await inPlace(target);
    expect(result.resumed).toBe(true);
    expect(await sha256File(target)).toBe(todaySha);
    // the garbage was rewritten before the failure: the resume fetches about what yesterday's file needs
    expect(result.fetchedChunks / result.chunks).toBeLessThan(0.05);
  });

  it.runIf(kind === "s3")("SIGKILL mid-way leaves no FILE, only the marker; running the command again resumes and ends bit-identical", async () => {
    const target = join(work, "killed.raw");
    await writeFile(target, randomBytes(32 * MIB));
    const child = execa(
      process.execPath,
      [CLI, "restore", ...repo.args, `${CT}:latest`, "--format", "raw", "--target", target, "--force", "--in-place", "--concurrency", "2", "-q"],
      {
        env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...env },
        reject: false,
      },
    );
    let seen = 0;
    onChunkGet = () => {
      if (++seen === 20) child.kill("SIGKILL");
    };
    const r = await child;
    onChunkGet = null;
    expect(r.signal).toBe("SIGKILL");
    expect(await exists(target)).toBe(false);
    expect(await exists(target + MARKER)).toBe(true);
    // without --force the marker is not touched
    const noForce = await cli(["restore", `${CT}:latest`, "--format", "raw", "--target", target, "--in-place"]);
    expectCleanFailure(noForce, /is left from an interrupted restore --in-place .*add --force to resume/);
    const { result } = await inPlace(target);
    expect(result.resumed).toBe(true);
    expect(await sha256File(target)).toBe(todaySha);
    await rm(target);
  });

  it.runIf(kind === "encrypted")("refusals: missing file, directory, symlink, other --seed, no --force, marker beside the file, not raw", async () => {
    const missing = join(work, "missing.raw");
    expectCleanFailure(
      await cli(["restore", CT, "--format", "raw", "--target", missing, "--force", "--in-place"]),
      /missing\.raw does not exist: --in-place rewrites an existing file/,
    );
    expect(await exists(missing)).toBe(false);
    const dir = join(work, "a-dir");
    await mkdir(dir);
    expectCleanFailure(await cli(["restore", CT, "--format", "raw", "--target", dir, "--force", "--in-place"]), /a-dir is a directory/);
    const link = join(work, "link.raw");
    await symlink(yesterdayRaw, link);
    expectCleanFailure(await cli(["restore", CT, "--format", "raw", "--target", link, "--force", "--in-place"]), /link\.raw is not a regular file/);

    const file = await yesterdayCopy("refused.raw");
    const before = await sha256File(file);
    const other = await cli(["restore", CT, "--format", "raw", "--target", file, "--force", "--in-place", "--seed", yesterdayRaw]);
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
    expect(await sha256File(file)).toBe(todaySha);
  });
});
