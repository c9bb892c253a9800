/**
 * LazyBackupDisk fetches each chunk once however many places of the disk it fills (its
 * cache is keyed by chunk id): on a disk holding the same 4 MiB twice, reading the second
 * copy fetches only the chunks of it that the first copy did not have (the chunker
 * resynchronises after a few chunks, the manifest says which).
 */
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { seededBytes } from "../../scripts/corpus.js";
import { Repository } from "../../src/repository/repository.js";
import { LazyBackupDisk } from "../../src/restore/lazy-disk.js";
import { resolveBackup } from "../../src/restore/resolve.js";
import { openStore } from "../../src/uploader/open.js";
import { runCli } from "../helpers/cli.js";
import { asPloopDisk } from "../helpers/small-disks.js";

const MIB = 1 << 20;
let work: string;
const data = seededBytes("lazy dedupe", 4 * MIB);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-lazy-dedupe-"));
  const raw = join(work, "twice.raw");
  const fh = await open(raw, "w");
  await fh.write(seededBytes("lazy dedupe head", MIB), 0, MIB, 0);
  await fh.write(data, 0, data.length, MIB);
  await fh.write(seededBytes("lazy dedupe middle", 3 * MIB + 12345), 0, 3 * MIB + 12345, 5 * MIB);
  await fh.write(data, 0, data.length, 9 * MIB);
  await fh.truncate(16 * MIB);
  await fh.close();
  const r1 = await runCli(["init", "--repo", join(work, "repo"), "-q"]);
  expect(r1.code, r1.stderr).toBe(0);
  const r2 = await runCli([
    "backup",
    "--repo",
    join(work, "repo"),
    "--state-dir",
    join(work, "state"),
    "--disk",
    await asPloopDisk(raw, join(work, "private"), "twice"),
    "-q",
  ]);
  expect(r2.code, r2.stderr).toBe(0);
});

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe("LazyBackupDisk and repeated chunks", () => {
  it("reads a second copy of the same data from the cache", async () => {
    const repo = await Repository.open(await openStore(join(work, "repo")));
    try {
      const ref = await resolveBackup(repo, "twice");
      const manifest = await repo.loadManifest(ref);
      const disk = new LazyBackupDisk(repo, ref, manifest);
      const idsIn = (from: number, to: number): Set<string> =>
        new Set(
          manifest.entries
            .filter((e) => e.kind === "chunk" && e.offset < to && e.offset + e.length > from)
            .map((e) => (e.kind === "chunk" ? e.id.toString("hex") : "")),
        );
      const first = idsIn(MIB, 5 * MIB);
      const second = idsIn(9 * MIB, 13 * MIB);
      const shared = [...second].filter((id) => first.has(id));
      expect(shared.length).toBeGreaterThan(0);
      expect((await disk.read(MIB, 4 * MIB)).equals(data)).toBe(true);
      expect(disk.stats.chunksFetched).toBe(first.size);
      expect((await disk.read(9 * MIB, 4 * MIB)).equals(data)).toBe(true);
      expect(disk.stats.chunksFetched).toBe(first.size + second.size - shared.length);
    } finally {
      await repo.close();
    }
  });
});
