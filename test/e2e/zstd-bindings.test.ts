/**
 * A repository written through one zstd binding is read through the other, both ways:
 * backups made with PLOOPVAULT_ZSTD=napi and =zlib into one repository restore
 * bit-identical and pass `check --read-data` under either binding. A wrong
 * PLOOPVAULT_ZSTD fails with one line before anything is done.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { zstdBinding } from "../../src/util/zstd.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, runCli, type RepoTarget } from "../helpers/cli.js";
import { sha256File } from "../ploop/fixtures.js";

const both = zstdBinding("napi") !== null && zstdBinding("zlib") !== null;

describe.runIf(both)("repositories across zstd bindings", () => {
  let repo: RepoTarget;
  let work: string;
  const writer: Record<string, "napi" | "zlib"> = {};

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-zstd-e2e-"));
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "64K"]);
    expect(init.code, init.stderr).toBe(0);
    const [first, second] = corpus().cts;
    writer[first!] = "napi";
    writer[second!] = "zlib";
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("backs up one disk through zstd-napi and another through node:zlib", async () => {
    for (const [ct, binding] of Object.entries(writer)) {
      const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf(ct), "--json", "-q"], { env: { PLOOPVAULT_ZSTD: binding } });
      expect(r.code, r.stderr).toBe(0);
      expect(jsonLines<{ newChunks: number }>(r.stdout)[0]!.newChunks).toBeGreaterThan(10);
    }
  });

  it("restores each disk through the other binding, bit-identical", async () => {
    for (const [ct, binding] of Object.entries(writer)) {
      const other = binding === "napi" ? "zlib" : "napi";
      const target = join(work, `${ct}.raw`);
      const r = await runCli(["restore", ...repo.args, `${ct}:latest`, "--format", "raw", "--target", target], { env: { PLOOPVAULT_ZSTD: other } });
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(target), `${ct} written with ${binding}, read with ${other}`).toBe(corpus().flatSha256[ct]);
      await rm(target);
    }
  });

  it("check --read-data passes under either binding", async () => {
    for (const binding of ["napi", "zlib"]) {
      const r = await runCli(["check", ...repo.args, "--read-data"], { env: { PLOOPVAULT_ZSTD: binding } });
      expect(r.code, `${binding}: ${r.stderr}`).toBe(0);
    }
  });

  it("an unknown PLOOPVAULT_ZSTD fails with one line naming it, before the backup starts", async () => {
    // an empty repository: no manifest to read, so nothing would stop the backup before its first chunk
    const empty = await localRepo();
    try {
      expect((await runCli(["init", ...empty.args])).code).toBe(0);
      const before = await empty.listKeys("");
      const r = await runCli(["backup", ...empty.args, "--disk", descriptorOf(corpus().cts[0]!)], { env: { PLOOPVAULT_ZSTD: "lz4" } });
      expect(r.code).toBe(1);
      // the set-up error itself, not a chunk worker failing on it mid-backup
      expect(r.stderr).toBe('ploopvault: PLOOPVAULT_ZSTD="lz4": unknown zstd binding (use napi or zlib)\n');
      expect(await empty.listKeys("")).toEqual(before);
    } finally {
      await empty.cleanup();
    }
  });
});
