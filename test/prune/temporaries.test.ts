/**
 * Temp files a crash leaves in a local repository (issue 12, item 12). A put writes
 * ".tmp-<random>" beside the final name and renames it; a writer killed in between leaves
 * it, invisible to list(), for ever. prune removes those untouched for an hour (and twice
 * the lock TTL), never a young one (a live writer's) nor a compare-and-swap claim made
 * recently (judged by its ctime: it is a hard link to a lock object whose mtime can be old).
 */
import { mkdir, mkdtemp, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalDirectoryStore } from "../../src/uploader/local.js";
import { jsonLines, localRepo, runCli, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopInit } from "../helpers/ploop-tool.js";

const HOUR = 3_600_000;

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function plant(path: string, ageMs: number, size = 1000): Promise<void> {
  await mkdir(join(path, ".."), { recursive: true });
  await writeFile(path, randomBytes(size));
  const when = new Date(Date.now() - ageMs);
  await utimes(path, when, when);
}

describe("stale temp files of a local repository", () => {
  let repo: RepoTarget;
  let work: string;

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-tmp-"));
    await mkdir(join(work, "101", "root.hdd"), { recursive: true });
    const dd = await ploopInit(join(work, "101", "root.hdd", "root.hds"), { size: "8M", version: 2 });
    await writeClusterToTop(dd, 1, randomBytes(1 << 20));
    expect((await runCli(["init", ...repo.args, "--chunk-avg", "64K"])).code).toBe(0);
    const b = await runCli(["backup", ...repo.args, "--disk", dd, "--name", "101"]);
    expect(b.code, b.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("prune removes the old ones and leaves young ones and recent claims", async () => {
    const chunkDir = join(repo.url, (await repo.listKeys("chunks/"))[0]!.split("/").slice(0, 2).join("/"));
    const old = [join(repo.url, ".tmp-0a1b2c3d4e5f6071"), join(chunkDir, ".tmp-1111222233334444"), join(repo.url, "backups", "101", ".tmp-5555666677778888")];
    for (const path of old) await plant(path, 2 * HOUR);
    const young = join(chunkDir, ".tmp-9999aaaabbbbcccc");
    await plant(young, 60_000); // a live writer's
    const claim = join(repo.url, "locks", ".tmp-cas-prune-0123456789abcdef");
    await plant(claim, 2 * HOUR); // old mtime (the lock version it links to), made just now (ctime)

    const dry = await runCli(["prune", ...repo.args, "--keep-last", "1", "--dry-run", "--json"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(jsonLines<{ temporariesRemoved: number }>(dry.stdout)[0]!.temporariesRemoved).toBe(3);
    for (const path of old) expect(await exists(path), path).toBe(true);

    const r = await runCli(["prune", ...repo.args, "--keep-last", "1", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const report = jsonLines<{ temporariesRemoved: number; temporaryBytesRemoved: number }>(r.stdout)[0]!;
    expect(report).toMatchObject({ temporariesRemoved: 3, temporaryBytesRemoved: 3000 });
    for (const path of old) expect(await exists(path), path).toBe(false);
    expect(await exists(young)).toBe(true);
    expect(await exists(claim)).toBe(true);
    // the repository is intact
    const check = await runCli(["check", ...repo.args, "--read-data"]);
    expect(check.code, check.stderr).toBe(0);
  });

  it("the store judges by its cutoff: a file changed after it stays", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pv-tmpstore-"));
    try {
      const store = new LocalDirectoryStore(dir);
      await store.put("chunks/ab/abcd", Buffer.from("x"));
      await plant(join(dir, "chunks", "ab", ".tmp-aaaa"), 10_000, 5);
      await plant(join(dir, "chunks", "ab", ".tmp-bbbb"), 0, 7);
      const cutoff = new Date(Date.now() - 5_000);
      expect(await store.removeStaleTemporaries(cutoff)).toEqual({ count: 1, bytes: 5 });
      expect(await exists(join(dir, "chunks", "ab", ".tmp-aaaa"))).toBe(false);
      expect(await exists(join(dir, "chunks", "ab", ".tmp-bbbb"))).toBe(true);
      expect(await store.get("chunks/ab/abcd")).toEqual(Buffer.from("x"));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
