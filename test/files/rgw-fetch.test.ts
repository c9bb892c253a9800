/**
 * A single-file restore reads only what it needs, against the S3 server (Ceph RGW): dumping
 * a 10 MiB file out of a backup of a disk with 1 GiB of data fetches at most 3x the file's
 * size plus 4 MiB. The GETs and their bytes are counted by a wrapper around the real S3
 * store (it counts, it does not answer), with a fresh state directory so the manifest is
 * fetched too; the dumped bytes must be the file's. The CLI's --json report agrees.
 * Timing against a full raw restore is in bench/file-restore.ts (timings do not belong in
 * tests).
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildDataDisk, type DataDisk } from "../../scripts/fs-corpus.js";
import { openBackupFilesystemBySpec } from "../../src/files/backup-fs.js";
import { dumpFileContent } from "../../src/files/dump.js";
import { resolveItem } from "../../src/files/listing.js";
import { Repository } from "../../src/repository/repository.js";
import { openStore } from "../../src/uploader/open.js";
import type { ObjectStore } from "../../src/uploader/store.js";
import { jsonLines, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { sha256File } from "../helpers/debugfs-oracle.js";

const MIB = 1 << 20;

/** The real store, with its GETs counted (object reads only: the way a chunk reaches us). */
function countingStore(inner: ObjectStore): ObjectStore & { gets: number; bytes: number; keys: string[] } {
  const counted = {
    gets: 0,
    bytes: 0,
    keys: [] as string[],
    location: inner.location,
    put: inner.put.bind(inner),
    async get(key: string): Promise<Buffer> {
      const body = await inner.get(key);
      counted.gets++;
      counted.bytes += body.length;
      counted.keys.push(key);
      return body;
    },
    async getRange(key: string, offset: number, length: number): Promise<Buffer> {
      const body = await inner.getRange(key, offset, length);
      counted.gets++;
      counted.bytes += body.length;
      counted.keys.push(key);
      return body;
    },
    stat: inner.stat.bind(inner),
    list: inner.list.bind(inner),
    delete: inner.delete.bind(inner),
    close: inner.close.bind(inner),
  };
  return counted;
}

let repo: RepoTarget;
let work: string;
let disk: DataDisk;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-fs-fetch-"));
  disk = await buildDataDisk(join(work, "private"), "301", { dataMiB: 1024, fileMiB: 10 });
  repo = await s3Repo("fsfetch");
  expect((await runCli(["init", ...repo.args, "-q"], { env: repo.env })).code).toBe(0);
  const b = await runCli(["backup", ...repo.args, "--disk", disk.descriptorPath, "-q"], { env: repo.env, timeoutMs: 900_000 });
  expect(b.code, b.stderr).toBe(0);
}, 1_200_000);

afterAll(async () => {
  await repo?.cleanup();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe("dumping one file of a large backup from RGW", () => {
  it("fetches at most 3x the file's size + 4 MiB", async () => {
    const saved = { ...process.env };
    Object.assign(process.env, repo.env);
    const store = countingStore(await openStore(repo.url));
    try {
      const repository = await Repository.open(store);
      const backup = await openBackupFilesystemBySpec(repository, "301:latest", join(work, "fresh-state"));
      const item = await resolveItem(backup.fs, disk.file);
      const h = createHash("sha256");
      await dumpFileContent(backup.fs, item.inode, { write: async (b) => void h.update(b) });
      expect(h.digest("hex")).toBe(disk.fileSha256);
      const bound = 3 * disk.fileBytes + 4 * MIB;
      const chunkGets = store.keys.filter((k) => k.startsWith("chunks/")).length;
      process.stderr.write(
        `file restore from RGW: ${store.gets} GETs (${chunkGets} chunks), ${(store.bytes / MIB).toFixed(1)} MiB for a ${disk.fileBytes / MIB} MiB file (bound ${bound / MIB} MiB); disk ${(disk.sizeBytes / MIB).toFixed(0)} MiB\n`,
      );
      expect(store.bytes).toBeLessThanOrEqual(bound);
      expect(backup.disk.stats.bytesFetched).toBeLessThanOrEqual(bound);
      await repository.close();
    } finally {
      process.env = saved;
    }
    // the command line reports the same bound in --json
    const out = join(work, "restore-me.bin");
    const r = await runCli(["dump", ...repo.args, "301", disk.file, "--target", out, "--json"], { env: repo.env });
    expect(r.code, r.stderr).toBe(0);
    const summary = jsonLines<{ bytesFetched: number; chunksFetched: number; bytesWritten: number }>(r.stdout)[0]!;
    expect(summary.bytesWritten).toBe(disk.fileBytes);
    expect(summary.bytesFetched).toBeGreaterThanOrEqual(disk.fileBytes);
    expect(summary.bytesFetched).toBeLessThanOrEqual(3 * disk.fileBytes + 4 * MIB);
    expect(await sha256File(out)).toBe(disk.fileSha256);
  });
});
