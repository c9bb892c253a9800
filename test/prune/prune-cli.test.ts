/**
 * prune and check end to end through the built CLI, against a local directory repository
 * and the suite's Ceph RGW. Stored objects are listed, read, removed and corrupted only
 * through the filesystem or the independent minio client; the expected sets of chunks
 * come from decoding the manifests as stored.
 *
 * Backups (--time fixes their order):  a/103 (n1, T1), a/101 (n1, T2), a/104 (n1, T3),
 * a/102 (n2, T1: another host, so another group). `prune --keep-last 2` must forget a/103
 * only, and delete exactly the chunks no other backup uses.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeManifest } from "../../src/manifest/format.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { sha256File } from "../ploop/fixtures.js";

interface Made {
  ct: string;
  host: string;
  disk: string;
  id: string;
}

const chunkKey = (idHex: string): string => `chunks/${idHex.slice(0, 2)}/${idHex}`;

describe.each(["local", "s3"] as const)("prune and check through the CLI, %s repository", (kind) => {
  let repo: RepoTarget;
  let work: string;
  const made: Made[] = [];
  const chunksOf = new Map<string, Set<string>>(); // backup id -> chunk ids (hex)

  const cli = (args: string[]) => runCli([...args, ...repo.args], { env: repo.env });

  beforeAll(async () => {
    repo = kind === "local" ? await localRepo() : await s3Repo("prune");
    work = await mkdtemp(join(tmpdir(), "pv-prune-"));
    const init = await cli(["init", "--chunk-avg", "256K"]);
    expect(init.code, init.stderr).toBe(0);
    const plan: [string, string, string, string][] = [
      ["a", "n1", "103", "2026-01-01T10:00:00Z"],
      ["a", "n1", "101", "2026-01-02T10:00:00Z"],
      ["a", "n1", "104", "2026-01-03T10:00:00Z"],
      ["a", "n2", "102", "2026-01-01T12:00:00Z"],
    ];
    for (const [ct, host, disk, time] of plan) {
      const r = await cli(["backup", "--disk", descriptorOf(disk), "--name", ct, "--host", host, "--time", time, "--json", "-q", "--threads", "1"]);
      expect(r.code, r.stderr).toBe(0);
      const id = jsonLines<{ backup: string }>(r.stdout)[0]!.backup;
      made.push({ ct, host, disk, id });
      const key = `backups/${ct}/${id}/manifest`;
      const m = decodeManifest(await repo.read(key), key);
      chunksOf.set(id, new Set(m.entries.flatMap((e) => (e.kind === "chunk" ? [e.id.toString("hex")] : []))));
    }
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  const byDisk = (disk: string): Made => made.find((m) => m.disk === disk)!;

  it("refuses to run without a keep policy (usage error), changing nothing", async () => {
    const before = await repo.listKeys("");
    const r = await cli(["prune", "--grace", "0"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no keep policy given/);
    expect(await repo.listKeys("")).toEqual(before);
  });

  it("--dry-run lists what would be forgotten and freed, and changes nothing", async () => {
    const before = await repo.listKeys("");
    const forgotten = byDisk("103");
    const onlyForgotten = [...chunksOf.get(forgotten.id)!].filter((c) => made.every((m) => m === forgotten || !chunksOf.get(m.id)!.has(c)));
    expect(onlyForgotten.length).toBeGreaterThan(10);

    const text = await cli(["prune", "--keep-last", "2", "--grace", "0", "--dry-run"]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`would forget  a/${forgotten.id}`);
    expect(text.stdout).toMatch(/dry run: would forget 1 backup, delete \d+ chunks .* freeing [\d.]+ MiB; nothing changed/);

    const json = await cli(["prune", "--keep-last", "2", "--grace", "0", "--dry-run", "--json"]);
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout) as {
      dryRun: boolean;
      forgotten: number;
      chunksDeleted: number;
      bytesFreed: number;
      groups: { ct: string; host: string; forgotten: { id: string }[] }[];
    };
    expect(report.dryRun).toBe(true);
    expect(report.forgotten).toBe(1);
    expect(report.groups.flatMap((g) => g.forgotten.map((f) => `${g.ct}@${g.host}/${f.id}`))).toEqual([`a@n1/${forgotten.id}`]);
    expect(report.chunksDeleted).toBe(onlyForgotten.length);
    expect(report.bytesFreed).toBeGreaterThan(0);
    // nothing changed, not even a lock object came and went unnoticed
    expect(await repo.listKeys("")).toEqual(before);
  });

  it("--keep-last 2 forgets exactly the older backup and deletes exactly its own chunks", async () => {
    const forgotten = byDisk("103");
    const kept = made.filter((m) => m !== forgotten);
    const keptChunks = new Set(kept.flatMap((m) => [...chunksOf.get(m.id)!]));
    const gone = [...chunksOf.get(forgotten.id)!].filter((c) => !keptChunks.has(c));
    const chunksBefore = new Set(await repo.listKeys("chunks/"));

    const r = await cli(["prune", "--keep-last", "2", "--grace", "0", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { status: string; sweep: string; forgotten: number; kept: number; chunksDeleted: number };
    expect(report).toMatchObject({ status: "ok", sweep: "done", forgotten: 1, kept: 3, chunksDeleted: gone.length });

    const list = await cli(["snapshots", "--json"]);
    expect(list.code, list.stderr).toBe(0);
    const rows = JSON.parse(list.stdout) as { id: string; ct: string; host: string }[];
    expect(rows.map((x) => `${x.ct}@${x.host}/${x.id}`).sort()).toEqual(kept.map((m) => `${m.ct}@${m.host}/${m.id}`).sort());

    const keys = await repo.listKeys("");
    expect(keys.filter((k) => k.startsWith(`backups/a/${forgotten.id}/`))).toEqual([]); // manifest and side files
    expect(keys.filter((k) => k.startsWith("locks/"))).toEqual([]);
    const chunksAfter = new Set(await repo.listKeys("chunks/"));
    for (const c of gone) expect(chunksAfter.has(chunkKey(c))).toBe(false);
    for (const c of keptChunks) expect(chunksAfter.has(chunkKey(c))).toBe(true);
    expect(chunksAfter.size).toBe(chunksBefore.size - gone.length);
  });

  it("every remaining backup restores bit-identical and check --read-data passes", async () => {
    for (const m of made.filter((x) => x.disk !== "103")) {
      const target = join(work, `${m.id}.raw`);
      const r = await cli(["restore", `${m.ct}/${m.id}`, "--format", "raw", "--target", target]);
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(target), `${m.ct}/${m.id} (disk ${m.disk})`).toBe(corpus().flatSha256[m.disk]);
      await rm(target);
    }
    const check = await cli(["check", "--read-data", "--json"]);
    expect(check.code, check.stderr).toBe(0);
    const report = JSON.parse(check.stdout) as { status: string; chunksUnreferenced: number; chunksMissing: number; expiredLocks: number };
    expect(report).toMatchObject({ status: "ok", chunksUnreferenced: 0, chunksMissing: 0, expiredLocks: 0 });
  });

  it("a deleted chunk makes check fail naming exactly the backups that use it; a corrupt one needs --read-data", async () => {
    const kept = made.filter((m) => m.disk !== "103");
    const users = (c: string): Made[] => kept.filter((m) => chunksOf.get(m.id)!.has(c));
    const candidates = [...new Set(kept.flatMap((m) => [...chunksOf.get(m.id)!]))];
    // one chunk used by some but not all kept backups, and one used by exactly one
    const shared = candidates.find((c) => users(c).length === 2)!;
    const single = candidates.find((c) => users(c).length === 1 && c !== shared)!;
    expect(shared && single).toBeTruthy();

    const expectDamaged = async (args: string[], victims: Made[]): Promise<void> => {
      const r = await cli(["check", "--json", ...args]);
      expect(r.code, r.stderr).toBe(1);
      // the one error line names them, the log lines say what is wrong with each
      for (const m of victims) expect(r.stderr).toContain(`${m.ct}/${m.id}`);
      for (const m of kept.filter((x) => !victims.includes(x))) expect(r.stderr).not.toContain(`${m.ct}/${m.id}`);
      expect(r.stderr).toMatch(new RegExp(`check failed: ${victims.length} damaged backups?: `));
      const report = JSON.parse(r.stdout) as { status: string; damaged: { ct: string; id: string }[] };
      expect(report.status).toBe("damaged");
      expect(report.damaged.map((d) => `${d.ct}/${d.id}`).sort()).toEqual(victims.map((m) => `${m.ct}/${m.id}`).sort());
    };

    const original = await repo.read(chunkKey(shared));
    await repo.remove(chunkKey(shared));
    await expectDamaged([], users(shared));
    await repo.write(chunkKey(shared), original);

    const good = await repo.read(chunkKey(single));
    const bad = Buffer.from(good);
    bad[bad.length - 1]! ^= 0x40;
    await repo.write(chunkKey(single), bad);
    expect((await cli(["check"])).code).toBe(0); // present, so only reading it finds the damage
    await expectDamaged(["--read-data"], users(single));
    await repo.write(chunkKey(single), good);
    expect((await cli(["check", "--read-data"])).code).toBe(0);
  });
});
