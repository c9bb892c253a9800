/**
 * Several nodes share one repository and container ids repeat across them (issue: an
 * operator's first day: `restore 101:latest` silently restored another node's 101).
 * A "newest backup of CT" that several hosts have is refused naming the hosts; HOST/CT,
 * HOST/CT:latest and --host pick one; snapshots and prune take --host as a filter; short
 * id prefixes work where they are unique.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, localRepo, runCli, type RepoTarget } from "../helpers/cli.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { sha256File } from "../ploop/fixtures.js";
import { expectCleanFailure } from "../faults/harness.js";

describe("backups of one container id from several hosts", () => {
  let repo: RepoTarget;
  let work: string;
  const ids: Record<string, string> = {};
  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-hosts-"));
    expect((await runCli(["init", ...repo.args])).code).toBe(0);
    // node1's container 101 holds disk 101, node2's container 101 holds disk 103
    for (const [host, disk, time] of [
      ["node1", "101", "2026-03-01T01:00:00Z"],
      ["node2", "103", "2026-03-01T02:00:00Z"],
      ["node1", "101", "2026-03-02T01:00:00Z"],
    ] as const) {
      const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf(disk), "--name", "101", "--host", host, "--time", time, "--json", "-q"]);
      expect(r.code, r.stderr).toBe(0);
      ids[`${host}@${time}`] = jsonLines<{ backup: string }>(r.stdout)[0]!.backup;
    }
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  async function restoredDisk(spec: string, extra: string[] = []): Promise<string> {
    const target = join(work, `${Math.random().toString(16).slice(2)}.raw`);
    const r = await runCli(["restore", ...repo.args, spec, ...extra, "--format", "raw", "--target", target]);
    expect(r.code, r.stderr).toBe(0);
    const sha = await sha256File(target);
    await rm(target);
    return Object.entries(corpus().flatSha256).find(([, s]) => s === sha)?.[0] ?? "unknown";
  }

  it("CT:latest and CT are refused, naming the hosts", async () => {
    for (const spec of ["101:latest", "101"]) {
      const r = await runCli(["restore", ...repo.args, spec, "--format", "raw", "--target", join(work, "x.raw")]);
      expectCleanFailure(r, /container 101 has backups from several hosts \(node1, node2\).*node1\/101:latest/);
    }
  });

  it("HOST/CT:latest, HOST/CT and --host pick the host's newest backup", async () => {
    expect(await restoredDisk("node1/101:latest")).toBe("101");
    expect(await restoredDisk("node2/101:latest")).toBe("103");
    expect(await restoredDisk("node2/101")).toBe("103");
    expect(await restoredDisk("101:latest", ["--host", "node2"])).toBe("103");
    expectCleanFailure(await runCli(["restore", ...repo.args, "node3/101:latest", "--target", join(work, "y")]), /no backups from host node3/);
  });

  it("a unique id prefix names one backup; an ambiguous one is refused", async () => {
    const id = ids["node2@2026-03-01T02:00:00Z"]!;
    expect(await restoredDisk(id.slice(0, 18))).toBe("103");
    expect(await restoredDisk(`101/${id.slice(0, 18)}`)).toBe("103");
    // both node1 backups and node2's start with "202603"
    expectCleanFailure(await runCli(["restore", ...repo.args, "202603", "--target", join(work, "z")]), /ambiguous/);
  });

  it("snapshots --host and prune --host filter by host; prune's lock name is --lock-host", async () => {
    const list = await runCli(["snapshots", ...repo.args, "--host", "node1", "--json"]);
    expect(list.code, list.stderr).toBe(0);
    const rows = JSON.parse(list.stdout) as { host: string }[];
    expect(rows.map((r) => r.host)).toEqual(["node1", "node1"]);
    const p = await runCli(["prune", ...repo.args, "--host", "node2", "--keep-last", "1", "--lock-host", "admin", "--json"]);
    expect(p.code, p.stderr).toBe(0);
    expect((JSON.parse(p.stdout) as { forgotten: number; groups: { host: string }[] }).groups.map((g) => g.host)).toEqual(["node2"]);
    const all = JSON.parse((await runCli(["snapshots", ...repo.args, "--json"])).stdout) as unknown[];
    expect(all).toHaveLength(3); // node1's two backups were not considered by a prune of node2
  });
});
