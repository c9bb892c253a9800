/**
 * The parallel pipeline (workers cut and hash blocks, the main thread stitches) must
 * produce exactly the manifest of the sequential one (--threads 0: one thread cuts every
 * chunk): same chunk offsets, lengths and ids, so deduplication and incremental
 * backups do not depend on the thread count. Real corpus disks, the built CLI.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeManifest, type ManifestEntry } from "../../src/manifest/format.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, runCli, type RepoTarget } from "../helpers/cli.js";

function describeEntries(entries: readonly ManifestEntry[]): string[] {
  return entries.map((e) => (e.kind === "chunk" ? `chunk ${e.offset}+${e.length} ${Buffer.from(e.id).toString("hex")}` : `hole ${e.offset}+${e.length}`));
}

describe("parallel chunking in the backup pipeline", () => {
  let repo: RepoTarget;
  beforeAll(async () => {
    repo = await localRepo();
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "64K"]);
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => repo?.cleanup());

  async function manifestOf(ct: string, disk: string, threads: number): Promise<{ entries: string[]; newChunks: number }> {
    const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf(disk), "--name", ct, "--threads", String(threads), "--json", "-q"]);
    expect(r.code, r.stderr).toBe(0);
    const result = jsonLines<{ backup: string; newChunks: number }>(r.stdout)[0]!;
    const manifest = decodeManifest(await repo.read(`backups/${ct}/${result.backup}/manifest`), ct);
    return { entries: describeEntries(manifest.entries), newChunks: result.newChunks };
  }

  it("gives the same chunks as the sequential pipeline on every corpus disk, with 1 and 2 worker threads", async () => {
    for (const disk of corpus().cts) {
      const sequential = await manifestOf(`seq-${disk}`, disk, 0);
      expect(sequential.entries.filter((e) => e.startsWith("chunk")).length).toBeGreaterThan(100);
      for (const threads of [2, 1]) {
        const parallel = await manifestOf(`par${threads}-${disk}`, disk, threads);
        expect(parallel.entries, `disk ${disk}, ${threads} threads`).toEqual(sequential.entries);
        expect(parallel.newChunks).toBe(0); // every chunk was stored by the sequential run
      }
    }
  });
});
