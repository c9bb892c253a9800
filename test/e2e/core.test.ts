/**
 * The core pipeline end to end through the CLI, against a local directory repository and
 * the test S3 server: every corpus disk restores raw bit-identical to the real ploop's
 * flattening, and as ploop passes `ploop check -f -c -r` and flattens to the same content.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeManifest } from "../../src/manifest/format.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { ploopCheck, ploopFlatten } from "../helpers/ploop-tool.js";
import { sha256File } from "../ploop/fixtures.js";

interface BackupJson {
  ct: string;
  backup: string;
  status: string;
  logicalBytes: number;
  readBytes: number;
  newChunks: number;
  newBytesStored: number;
  chunks: number;
  dataBytes: number;
}

describe.each(["local", "s3"] as const)("core pipeline, %s repository", (kind) => {
  let repo: RepoTarget;
  let work: string;
  const backups = new Map<string, BackupJson>();

  beforeAll(async () => {
    repo = kind === "local" ? await localRepo() : await s3Repo("core");
    work = await mkdtemp(join(tmpdir(), "pv-core-"));
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "256K"], { env: repo.env });
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("backs up every corpus disk with one JSON result each", async () => {
    for (const ct of corpus().cts) {
      const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf(ct), "--json", "-q"], { env: repo.env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe(""); // -q: silent on success, no SDK warnings
      const [result] = jsonLines<BackupJson>(r.stdout);
      expect(result).toMatchObject({ ct, status: "ok" });
      expect(result!.readBytes).toBeGreaterThan(0);
      expect(result!.readBytes).toBeLessThan(result!.logicalBytes); // holes were not read
      backups.set(ct, result!);
    }
    const list = await runCli(["snapshots", ...repo.args, "--json"], { env: repo.env });
    expect(list.code, list.stderr).toBe(0);
    const rows = JSON.parse(list.stdout) as { id: string; ct: string; host: string; time: string; logicalBytes: number; newBytesStored: number }[];
    expect(rows.map((r) => r.ct).sort()).toEqual([...corpus().cts].sort());
    for (const row of rows) {
      expect(row.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
      expect(row.id).toBe(backups.get(row.ct)!.backup);
      expect(row.logicalBytes).toBe(backups.get(row.ct)!.logicalBytes);
    }
  });

  it("restores every disk as raw, bit-identical to the real ploop's flattening", async () => {
    for (const ct of corpus().cts) {
      const target = join(work, `${ct}.raw`);
      const r = await runCli(["restore", ...repo.args, `${ct}:latest`, "--format", "raw", "--target", target], { env: repo.env });
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(target)).toBe(corpus().flatSha256[ct]);
      await rm(target);
    }
  });

  it("restores as ploop: passes ploop check -f -c -r and flattens to the same content", async () => {
    const ct = corpus().cts[0]!;
    const target = join(work, `restored-${ct}`);
    const r = await runCli(["restore", ...repo.args, ct, "--target", target], { env: repo.env });
    expect(r.code, r.stderr).toBe(0);
    const check = await ploopCheck(join(target, "root.hdd"));
    expect(check.exitCode, check.output).toBe(0);
    const flat = join(work, `${ct}.flat`);
    await ploopFlatten(join(target, "DiskDescriptor.xml"), flat);
    expect(await sha256File(flat)).toBe(corpus().flatSha256[ct]);
    await rm(flat);
    await rm(target, { recursive: true });
  });

  it("re-backs up an unchanged disk storing 0 new chunks; 101 and 102 share most chunks", async () => {
    const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf("101"), "--json"], { env: repo.env });
    expect(r.code, r.stderr).toBe(0);
    const [again] = jsonLines<BackupJson>(r.stdout);
    expect(again!.newChunks).toBe(0);
    expect(again!.newBytesStored).toBe(0);
    expect(again!.chunks).toBe(backups.get("101")!.chunks);

    const ids = async (ct: string): Promise<Set<string>> => {
      const key = `backups/${ct}/${backups.get(ct)!.backup}/manifest`;
      const m = decodeManifest(await repo.read(key), key);
      return new Set(m.entries.flatMap((e) => (e.kind === "chunk" ? [e.id.toString("hex")] : [])));
    };
    const a = await ids("101");
    const b = await ids("102");
    const shared = [...b].filter((id) => a.has(id)).length;
    expect(shared / b.size).toBeGreaterThan(0.6);
  });
});
