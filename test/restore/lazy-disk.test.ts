import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Repository } from "../../src/repository/repository.js";
import { LazyBackupDisk } from "../../src/restore/lazy-disk.js";
import { resolveBackup } from "../../src/restore/resolve.js";
import { openStore } from "../../src/uploader/open.js";
import { runCli } from "../helpers/cli.js";
import { descriptorOf } from "../helpers/corpus.js";

/** Reads through the lazy disk agree with a full raw restore, and fetch only what they touch. */
describe("LazyBackupDisk", () => {
  let dir: string;
  let repo: Repository;
  let disk: LazyBackupDisk;
  let raw: Buffer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "pv-lazy-"));
    const repoDir = join(dir, "repo");
    expect((await runCli(["init", "--repo", repoDir, "-q"])).code).toBe(0);
    expect((await runCli(["backup", "--repo", repoDir, "--disk", descriptorOf("103"), "--state-dir", join(dir, "state"), "-q"])).code).toBe(0);
    const restored = join(dir, "103.raw");
    expect((await runCli(["restore", "--repo", repoDir, "103", "--format", "raw", "--target", restored, "-q"])).code).toBe(0);
    const fh = await open(restored);
    raw = await fh.readFile();
    await fh.close();
    repo = await Repository.open(await openStore(repoDir));
    const ref = await resolveBackup(repo, "103");
    disk = new LazyBackupDisk(repo, ref, await repo.loadManifest(ref), { cacheBytes: 4 * 1024 * 1024 });
  });

  afterAll(async () => {
    await repo?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("gives the raw restore's bytes for ranges anywhere, across entry boundaries", async () => {
    expect(disk.size).toBe(raw.length);
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 200; i++) {
      const length = rand(3) === 0 ? rand(3 * 1024 * 1024) : rand(9000);
      const offset = rand(raw.length - length);
      const got = await disk.read(offset, length);
      expect(got.equals(raw.subarray(offset, offset + length)), `read ${length} at ${offset}`).toBe(true);
    }
    expect((await disk.read(raw.length - 1, 1))[0]).toBe(raw[raw.length - 1]);
    await expect(disk.read(raw.length - 1, 2)).rejects.toThrow(RangeError);
  });

  it("fetches nothing for a hole and only the chunks a range overlaps", async () => {
    const manifest = await repo.loadManifest(disk.ref);
    const hole = manifest.entries.find((e) => e.kind === "hole" && e.length >= 8192);
    expect(hole).toBeDefined();
    const fresh = new LazyBackupDisk(repo, disk.ref, manifest);
    const zeros = await fresh.read(hole!.offset + 100, 4096);
    expect(zeros.every((b) => b === 0)).toBe(true);
    expect(fresh.stats.chunksFetched).toBe(0);
    const chunks = manifest.entries.filter((e) => e.kind === "chunk");
    const [a, b] = [chunks[10]!, chunks[11]!];
    // a range from the last byte of one chunk to the first byte of the next chunk
    await fresh.read(a.offset + a.length - 1, b.offset - (a.offset + a.length - 1) + 1);
    expect(fresh.stats.chunksFetched).toBe(2); // a hole between them costs nothing
    await fresh.read(a.offset, 10);
    expect(fresh.stats.chunksFetched).toBe(2);
    expect(fresh.stats.cacheHits).toBe(1);
  });
});
