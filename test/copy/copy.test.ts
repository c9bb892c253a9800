/**
 * `ploopvault copy` end to end through the built CLI, between local directories and the
 * suite's Ceph RGW, unencrypted and encrypted (objects inspected through the filesystem
 * or the independent minio client only):
 *  - local -> RGW and RGW -> local: every copied backup restores bit-identical to the real
 *    ploop's flattening; a second run copies 0 backups and 0 chunks;
 *  - plain -> encrypted -> encrypted (another password) -> plain: chunks re-keyed (other
 *    names), every backup restores bit-identical from each;
 *  - a damaged source backup fails alone (exit 3), is not published, the others are;
 *  - a copy SIGKILLed midway publishes nothing half-copied, and the re-run completes it;
 *  - prunes of the destination racing a copy lose nothing (check --read-data passes).
 */
import { randomBytes } from "node:crypto";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeManifest } from "../../src/manifest/format.js";
import { buildSmallDisks, type SmallPloopDisk } from "../helpers/small-ploop-disks.js";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, s3Repo, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { sha256File } from "../ploop/fixtures.js";

const CTS = ["101", "102", "103", "104"];
const PASSWORD_A = "copy source password";
const PASSWORD_B = "a different destination password";

interface CopyJson {
  selected: number;
  present: number;
  copied: number;
  failed: number;
  chunksUploaded: number;
  bytesUploaded: number;
  bytesDownloaded: number;
  status: string;
  backups: { ct: string; backup: string; status: string; chunks: number; chunksUploaded: number; chunksPresent: number; error?: string }[];
}

function ok(r: CliResult, what: string): CliResult {
  expect(r.code, `${what}: ${r.stderr}`).toBe(0);
  return r;
}

describe("copy", () => {
  let work: string;
  let source: RepoTarget;
  const targets: RepoTarget[] = [];
  /** Descriptor and the real ploop's flattening (SHA-256) of each test disk. */
  let disks = new Map<string, SmallPloopDisk>();
  const descriptorOf = (ct: string): string => disks.get(ct)!.descriptor;
  const expectedSha = (ct: string): string => disks.get(ct)!.sha;

  const fresh = async (kind: "local" | "s3", label: string): Promise<RepoTarget> => {
    const t = kind === "local" ? await localRepo() : await s3Repo(label);
    targets.push(t);
    return t;
  };
  /** --from arguments and environment for copying out of `t`. */
  const from = (t: RepoTarget): string[] => ["--from", t.url];
  const copy = (src: RepoTarget, dst: RepoTarget, extra: string[] = [], env: Record<string, string> = {}): Promise<CliResult> =>
    runCli(["copy", ...from(src), "--to", dst.url, "--state-dir", dst.stateDir, "--json", ...extra], { env: { ...src.env, ...dst.env, ...env } });
  const parse = (r: CliResult): CopyJson => jsonLines<CopyJson>(r.stdout).at(-1)!;

  /** SHA-256 of the raw disk restored from the latest backup of `ct`. */
  const restoredSha = async (t: RepoTarget, ct: string, env: Record<string, string> = {}): Promise<string> => {
    const out = join(work, `restore-${randomBytes(4).toString("hex")}.raw`);
    ok(await runCli(["restore", ...t.args, ct, "--format", "raw", "--target", out, "-q"], { env: { ...t.env, ...env } }), `restore ${ct} from ${t.url}`);
    const sha = await sha256File(out);
    await rm(out);
    return sha;
  };
  const expectAllRestore = async (t: RepoTarget, env: Record<string, string> = {}): Promise<void> => {
    for (const ct of CTS) expect(await restoredSha(t, ct, env), `${ct} from ${t.url}`).toBe(expectedSha(ct));
  };
  const manifests = async (t: RepoTarget): Promise<string[]> => (await t.listKeys("backups/")).filter((k) => k.endsWith("/manifest"));

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-copy-"));
    disks = await buildSmallDisks(work);
    source = await fresh("local", "src");
    ok(await runCli(["init", ...source.args]), "init source");
    for (const ct of CTS) ok(await runCli(["backup", ...source.args, "--disk", descriptorOf(ct), "--name", ct, "-q"]), `backup ${ct}`);
  });
  afterAll(async () => {
    for (const t of targets) await t.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  let s3Copy: RepoTarget;

  it("local -> RGW: every backup restores bit-identical; a second run copies 0 chunks", async () => {
    s3Copy = await fresh("s3", "copydst");
    ok(await runCli(["init", ...s3Copy.args], { env: s3Copy.env }), "init s3");
    const first = parse(ok(await copy(source, s3Copy), "copy"));
    expect(first).toMatchObject({ selected: 4, present: 0, copied: 4, failed: 0, status: "ok" });
    expect(first.chunksUploaded).toBeGreaterThan(0);
    // same id space: the chunk objects are the source's, byte for byte
    const sourceChunks = await source.listKeys("chunks/");
    expect(await s3Copy.listKeys("chunks/")).toEqual(sourceChunks);
    const sample = sourceChunks[7]!;
    expect((await s3Copy.read(sample)).equals(await source.read(sample))).toBe(true);
    await expectAllRestore(s3Copy);
    // ids, times, hosts and stats kept
    const listed = (t: RepoTarget) =>
      runCli(["snapshots", ...t.args, "--json"], { env: t.env }).then((r) => JSON.parse(ok(r, "snapshots").stdout) as Record<string, unknown>[]);
    expect(await listed(s3Copy)).toEqual(await listed(source));
    const again = parse(ok(await copy(source, s3Copy), "second copy"));
    expect(again).toMatchObject({ selected: 4, present: 4, copied: 0, chunksUploaded: 0, bytesUploaded: 0, bytesDownloaded: 0 });
    ok(await runCli(["check", ...s3Copy.args, "--read-data", "-q"], { env: s3Copy.env }), "check --read-data");
  });

  it("RGW -> local: every backup restores bit-identical", async () => {
    const local = await fresh("local", "back");
    ok(await runCli(["init", ...local.args]), "init local");
    const r = parse(ok(await copy(s3Copy, local), "copy back"));
    expect(r).toMatchObject({ copied: 4, failed: 0 });
    await expectAllRestore(local);
  });

  it("plain -> encrypted -> encrypted with another password -> plain: re-keyed, every backup restores from each", async () => {
    const a = await fresh("local", "ea");
    const b = await fresh("local", "eb");
    const plain = await fresh("local", "ep");
    ok(await runCli(["init", ...a.args, "--encrypt"], { env: { PLOOPVAULT_PASSWORD: PASSWORD_A } }), "init a");
    ok(await runCli(["init", ...b.args, "--encrypt"], { env: { PLOOPVAULT_PASSWORD: PASSWORD_B } }), "init b");
    ok(await runCli(["init", ...plain.args]), "init plain");
    expect(parse(ok(await copy(source, a, [], { PLOOPVAULT_PASSWORD: PASSWORD_A }), "plain -> a"))).toMatchObject({ copied: 4 });
    // two containers first, then the rest: the second run maps what the first copied
    const partial = parse(
      ok(await copy(a, b, ["--ct", "101", "102"], { PLOOPVAULT_FROM_PASSWORD: PASSWORD_A, PLOOPVAULT_PASSWORD: PASSWORD_B }), "a -> b (101, 102)"),
    );
    expect(partial).toMatchObject({ selected: 2, copied: 2 });
    const rest = parse(ok(await copy(a, b, [], { PLOOPVAULT_FROM_PASSWORD: PASSWORD_A, PLOOPVAULT_PASSWORD: PASSWORD_B }), "a -> b"));
    expect(rest).toMatchObject({ selected: 4, present: 2, copied: 2 });
    expect(parse(ok(await copy(b, plain, [], { PLOOPVAULT_FROM_PASSWORD: PASSWORD_B }), "b -> plain"))).toMatchObject({ copied: 4 });
    // the keyed ids differ between the two encrypted repositories, and from the plain ones
    const names = async (t: RepoTarget) => new Set((await t.listKeys("chunks/")).map((k) => k.split("/").at(-1)));
    const [na, nb, np] = [await names(a), await names(b), await names(plain)];
    expect(na.size).toBe(np.size);
    expect(nb.size).toBe(np.size);
    expect([...na].filter((n) => nb.has(n) || np.has(n))).toEqual([]);
    expect(np).toEqual(await names(source));
    await expectAllRestore(b, { PLOOPVAULT_PASSWORD: PASSWORD_B });
    await expectAllRestore(plain);
    // a wrong source password is one line and exit 5
    const target = await fresh("local", "x");
    ok(await runCli(["init", ...target.args]), "init");
    const wrong = await copy(a, target, [], { PLOOPVAULT_FROM_PASSWORD: "nope" });
    expect(wrong.code).toBe(5);
    expect(wrong.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("a damaged source backup fails alone and is not published; the others are", async () => {
    // the source's backups of the four disks, in a repository of their own to damage
    const damaged = await fresh("local", "dmg");
    await cp(source.url, damaged.url, { recursive: true });
    expect((await manifests(damaged)).length).toBe(CTS.length);
    // a chunk only 103 references, flipped on disk
    const ids = new Map<string, Set<string>>();
    for (const key of await manifests(damaged)) {
      const m = decodeManifest(await damaged.read(key), key);
      ids.set(m.metadata.ct, new Set(m.entries.flatMap((e) => (e.kind === "chunk" ? [e.id.toString("hex")] : []))));
    }
    const only103 = [...ids.get("103")!].find((id) => !["101", "102", "104"].some((ct) => ids.get(ct)!.has(id)))!;
    const key = `chunks/${only103.slice(0, 2)}/${only103}`;
    const body = await damaged.read(key);
    body[body.length - 5] ^= 0xff;
    await damaged.write(key, body);
    const dst = await fresh("local", "dmgdst");
    ok(await runCli(["init", ...dst.args]), "init dst");
    const r = await copy(damaged, dst);
    expect(r.code, r.stderr).toBe(3);
    const report = parse(r);
    expect(report).toMatchObject({ copied: 3, failed: 1, status: "partial" });
    expect(report.backups.find((b) => b.ct === "103")?.error).toContain(only103);
    expect(r.stderr).toMatch(new RegExp(`103/.*${only103}`));
    const published = (await manifests(dst)).map((k) => k.split("/")[1]).sort();
    expect(published).toEqual(["101", "102", "104"]);
    ok(await runCli(["check", ...dst.args, "--read-data", "-q"]), "check dst");
  });

  it("a copy killed midway publishes nothing half-copied; the re-run completes it", async () => {
    const dst = await fresh("local", "kill");
    ok(await runCli(["init", ...dst.args]), "init dst");
    const child = execa(
      process.execPath,
      [CLI, "copy", ...from(source), "--to", dst.url, "--state-dir", dst.stateDir, "--limit-upload", "1M", "--concurrency", "2"],
      {
        reject: false,
        env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER },
      },
    );
    // kill once some chunks are stored but not all backups are published
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await dst.listKeys("chunks/")).length < 40) await new Promise((r) => setTimeout(r, 200));
    child.kill("SIGKILL");
    await child;
    const before = await manifests(dst);
    const storedBefore = (await dst.listKeys("chunks/")).length;
    expect(before.length).toBeLessThan(4);
    expect(storedBefore).toBeGreaterThan(0);
    // whatever was published is complete
    ok(await runCli(["check", ...dst.args, "--read-data", "-q"]), "check after the kill");
    const rerun = parse(ok(await copy(source, dst), "re-run"));
    expect(rerun).toMatchObject({ present: before.length, copied: 4 - before.length, failed: 0 });
    // the re-run found the chunks the killed run stored and sent only the others
    expect(rerun.chunksUploaded).toBe((await source.listKeys("chunks/")).length - storedBefore);
    await expectAllRestore(dst);
  });

  it("prunes of the destination racing a copy lose nothing", async () => {
    const src = await fresh("local", "racesrc");
    ok(await runCli(["init", ...src.args]), "init");
    // two backups of 101 (the older one gets forgotten by --keep-last 1), one of each other
    ok(await runCli(["backup", ...src.args, "--disk", descriptorOf("104"), "--name", "101", "--time", "2026-01-01T00:00:00Z", "-q"]), "backup 101 (old)");
    for (const ct of CTS.slice(0, 3)) ok(await runCli(["backup", ...src.args, "--disk", descriptorOf(ct), "--name", ct, "-q"]), `backup ${ct}`);
    const dst = await fresh("s3", "copyrace");
    ok(await runCli(["init", ...dst.args], { env: dst.env }), "init dst");
    const copying = execa(process.execPath, [CLI, "copy", ...from(src), "--to", dst.url, "--state-dir", dst.stateDir, "--limit-upload", "1M"], {
      reject: false,
      env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...dst.env },
    });
    let copyDone = false;
    void copying.then(() => (copyDone = true));
    const codes: number[] = [];
    const pruneState = await mkdtemp(join(work, "prune-state-"));
    while (!copyDone) {
      const p = await runCli(["prune", "--repo", dst.url, "--state-dir", pruneState, "--keep-last", "1", "--grace", "0", "--wait", "1s"], { env: dst.env });
      expect([0, 3], p.stderr).toContain(p.code);
      codes.push(p.code);
    }
    const copied = await copying;
    expect(copied.exitCode, String(copied.stderr)).toBe(0);
    expect(codes.length).toBeGreaterThan(2);
    // and once more now that nothing runs: it sweeps
    ok(await runCli(["prune", "--repo", dst.url, "--state-dir", pruneState, "--keep-last", "1", "--grace", "0"], { env: dst.env }), "final prune");
    ok(await runCli(["check", ...dst.args, "--read-data"], { env: dst.env }), "check --read-data");
    for (const ct of CTS.slice(0, 3)) expect(await restoredSha(dst, ct), ct).toBe(expectedSha(ct));
  });

  it("--host copies only the backups made on that host (--last counts per container on it)", async () => {
    const src = await fresh("local", "hosts");
    ok(await runCli(["init", ...src.args]), "init");
    // container id 101 on two nodes sharing the repository, 102 only on node-b
    const made: [string, string, string, string][] = [
      ["101", "node-a", "101", "2026-01-01T00:00:00Z"],
      ["104", "node-b", "101", "2026-01-01T00:00:00Z"],
      ["101", "node-b", "101", "2026-01-02T00:00:00Z"],
      ["102", "node-b", "102", "2026-01-02T00:00:00Z"],
    ];
    for (const [disk, host, name, time] of made)
      ok(
        await runCli(["backup", ...src.args, "--disk", descriptorOf(disk), "--name", name, "--host", host, "--time", time, "-q"]),
        `backup ${name} on ${host}`,
      );
    const dst = await fresh("local", "hostsdst");
    ok(await runCli(["init", ...dst.args]), "init dst");
    const r = parse(ok(await copy(src, dst, ["--host", "node-b", "--last", "1"]), "copy --host node-b --last 1"));
    expect(r).toMatchObject({ selected: 2, copied: 2, failed: 0 });
    const listed = JSON.parse(ok(await runCli(["snapshots", ...dst.args, "--json"]), "snapshots").stdout) as { ct: string; host: string; time: string }[];
    expect(listed.map((b) => `${b.host}/${b.ct}@${b.time.slice(0, 10)}`).sort()).toEqual(["node-b/101@2026-01-02", "node-b/102@2026-01-02"]);
    expect(await restoredSha(dst, "node-b/101:latest")).toBe(expectedSha("101"));
    // node-a's backup next: nothing of node-b's copied again
    const a = parse(ok(await copy(src, dst, ["--host", "node-a"]), "copy --host node-a"));
    expect(a).toMatchObject({ selected: 1, copied: 1, present: 0 });
    expect(parse(ok(await copy(src, dst, ["--host", "node-c"]), "copy --host node-c"))).toMatchObject({ selected: 0, copied: 0 });
  });
});
