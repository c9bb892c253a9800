/**
 * New chunks encoded by the chunk workers in the pass that scans their block (the main
 * thread stores each object under the id of the candidate chunk it came with): a first
 * backup with worker threads, where every chunk is new, must store exactly the objects
 * the sequential pipeline (--threads 0) stores, restore bit-identical to the real
 * ploop's flattening, and pass check --read-data. Real corpus disk, the built CLI.
 */
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, runCli, type RepoTarget } from "../helpers/cli.js";

async function firstBackup(repo: RepoTarget, ct: string, threads: number): Promise<{ newChunks: number }> {
  const init = await runCli(["init", ...repo.args, "--chunk-avg", "64K"]);
  expect(init.code, init.stderr).toBe(0);
  const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf(ct), "--name", ct, "--threads", String(threads), "--json", "-q"]);
  expect(r.code, r.stderr).toBe(0);
  return jsonLines<{ newChunks: number }>(r.stdout)[0]!;
}

describe("chunks encoded by the workers that scanned them", () => {
  const repos: RepoTarget[] = [];
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-worker-encode-"));
  });
  afterAll(async () => {
    for (const repo of repos) await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("are the sequential pipeline's objects, restore bit-identical and pass check --read-data", async () => {
    const ct = corpus().cts[0]!;
    const sequential = await localRepo();
    const parallel = await localRepo();
    repos.push(sequential, parallel);
    const seq = await firstBackup(sequential, ct, 0);
    const par = await firstBackup(parallel, ct, 2);
    expect(par.newChunks).toBeGreaterThan(500);
    expect(par.newChunks).toBe(seq.newChunks);

    const keys = await parallel.listKeys("chunks/");
    expect(keys).toEqual(await sequential.listKeys("chunks/"));
    expect(keys.length).toBe(par.newChunks);
    for (const key of keys) {
      const [a, b] = await Promise.all([parallel.read(key), sequential.read(key)]);
      expect(Buffer.compare(a, b), key).toBe(0);
    }

    const target = join(work, `${ct}.raw`);
    const restore = await runCli(["restore", ...parallel.args, `${ct}:latest`, "--format", "raw", "--target", target]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(
      createHash("sha256")
        .update(await readFile(target))
        .digest("hex"),
    ).toBe(corpus().flatSha256[ct]);
    await rm(target);

    const check = await runCli(["check", ...parallel.args, "--read-data"]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });
});
