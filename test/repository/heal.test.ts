/**
 * Damage heals (issue: "Never report a backup that does not restore", item 6): once a
 * chunk is known missing, from `check` or from a read that got a 404, the next backup of
 * a disk that still holds its data uploads it again, which repairs every backup that
 * references it. Before, the known-chunk set came from manifests only, and the next
 * backup exited 0 referencing the lost chunk again.
 */
import { describe, expect, it } from "vitest";
import { planBackup, withUnknownChunksRewritten, type PreviousBackup } from "../../src/backup/plan.js";
import { jsonLines, localRepo, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { descriptorOf } from "../helpers/corpus.js";
import { join } from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";

async function backup(repo: RepoTarget, name: string): Promise<{ backup: string; newChunks: number }> {
  const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf("104"), "--name", name, "--json", "-q"], { env: repo.env });
  expect(r.code, r.stderr).toBe(0);
  return jsonLines<{ backup: string; newChunks: number }>(r.stdout)[0]!;
}

for (const kind of ["local", "s3"] as const) {
  describe(`a lost chunk is uploaded again by the next backup (${kind} repository)`, () => {
    it("found by check", async () => {
      const repo = kind === "local" ? await localRepo() : await s3Repo("heal-check");
      try {
        expect((await runCli(["init", ...repo.args], { env: repo.env })).code).toBe(0);
        const first = await backup(repo, "104");
        const chunks = await repo.listKeys("chunks/");
        const victims = [chunks[3]!, chunks[chunks.length - 2]!];
        for (const v of victims) await repo.remove(v);
        const damaged = await runCli(["check", ...repo.args, "--json"], { env: repo.env });
        expect(damaged.code).toBe(1);
        expect(JSON.parse(damaged.stdout)).toMatchObject({ chunksMissing: 2, chunksRecordedForRepair: 2 });
        expect(await repo.listKeys("missing/")).toHaveLength(1);
        const second = await backup(repo, "104");
        expect(second.newChunks).toBe(2); // exactly the two lost chunks, from the disk's data
        for (const v of victims) expect(await repo.listKeys(v)).toEqual([v]);
        const healthy = await runCli(["check", ...repo.args, "--read-data", "--json"], { env: repo.env });
        expect(healthy.code, healthy.stderr).toBe(0);
        expect(JSON.parse(healthy.stdout)).toMatchObject({ backups: 2, chunksMissing: 0, chunksRecordedForRepair: 0 });
        expect(await repo.listKeys("missing/")).toEqual([]); // the record was superseded
        expect(first.backup).not.toBe(second.backup);
      } finally {
        await repo.cleanup();
      }
    });

    // the 404 path is the same for both stores (Repository.getChunk): once is enough
    it.skipIf(kind === "s3")("found by a restore that got a 404", async () => {
      const repo = kind === "local" ? await localRepo() : await s3Repo("heal-read");
      const work = await mkdtemp(join(tmpdir(), "pv-heal-"));
      try {
        expect((await runCli(["init", ...repo.args], { env: repo.env })).code).toBe(0);
        await backup(repo, "104");
        const [victim] = await repo.listKeys("chunks/");
        await repo.remove(victim!);
        const restore = await runCli(["restore", ...repo.args, "104", "--format", "raw", "--target", join(work, "r.raw")], { env: repo.env });
        expect(restore.code).toBe(1);
        expect(await repo.listKeys("missing/")).toHaveLength(1);
        expect((await backup(repo, "104")).newChunks).toBe(1);
        const check = await runCli(["check", ...repo.args], { env: repo.env });
        expect(check.code, check.stderr).toBe(0);
      } finally {
        await repo.cleanup();
        await rm(work, { recursive: true, force: true });
      }
    });
  });
}

describe("an incremental backup re-reads exactly the chunks the repository lost", () => {
  const id = (n: number): Buffer => Buffer.alloc(32, n);
  const previous: PreviousBackup = {
    entries: [
      { kind: "chunk", offset: 0, length: 4096, id: id(1) },
      { kind: "chunk", offset: 4096, length: 8192, id: id(2) },
      { kind: "chunk", offset: 12288, length: 4096, id: id(3) },
    ],
    written: new Uint8Array(4),
    clusterBytes: 4096,
  };
  const runs = [{ offset: 0, length: 16384 }];

  it("reuses every chunk while all are known, re-reads a lost one", () => {
    expect(
      planBackup(
        runs,
        16384,
        withUnknownChunksRewritten(previous, () => true),
        1024,
      ).map((s) => s.kind),
    ).toEqual(["reuse", "reuse", "reuse"]);
    const lost = withUnknownChunksRewritten(previous, (i) => !i.equals(id(2)));
    expect(planBackup(runs, 16384, lost, 1024)).toEqual([
      { kind: "reuse", entry: previous.entries[0] },
      { kind: "read", offset: 4096, length: 8192 },
      { kind: "reuse", entry: previous.entries[2] },
    ]);
    expect(previous.written.every((w) => w === 0)).toBe(true); // the input is not changed
  });
});
