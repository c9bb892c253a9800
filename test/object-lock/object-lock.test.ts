/**
 * S3 Object Lock repositories end to end (docs/object-lock.md), through the built CLI
 * against the suite's Ceph RGW; the bucket is inspected and attacked only with the
 * independent minio client:
 *  - init refuses a local directory and a bucket without object lock, and creates a new
 *    bucket with it (and the lock bucket);
 *  - a backup node under the append-only policy backs up; every object gets a retention,
 *    every chunk a backup references is retained for the backup's needs; an intruder with
 *    that node's credentials cannot delete anything, shorten a retention or prune, and his
 *    overwrites (a forged manifest, an unlocked config, junk chunks) fool neither restore,
 *    nor backup, nor check; `check --repair` from the trusted side removes them;
 *  - delete markers (a node without the policy) hide nothing from snapshots, restore,
 *    backup and check (which names them); `check --repair` removes them;
 *  - prune deletes exactly the unreferenced objects whose retention has passed (short
 *    retentions set by date, seconds ahead), keeps retained backups and reports the rest.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeManifest, encodeManifest } from "../../src/manifest/format.js";
import { jsonLines, runCli, type CliResult } from "../helpers/cli.js";
import { applyAppendOnlyPolicies, listVersions, makeLockedBucket, nodeCredentials, retentionOf, type VersionItem } from "../helpers/object-lock.js";
import { getObject, listKeys, makeTestBucket, minioClient, putObject, testS3 } from "../helpers/s3-server.js";
import { buildSmallDisks, type SmallPloopDisk } from "../helpers/small-ploop-disks.js";
import { sha256File } from "../ploop/fixtures.js";

const DAY_MS = 86_400_000;
const PASSWORD = "object lock test password";

function ok(r: CliResult, what: string): CliResult {
  expect(r.code, `${what}: ${r.stderr}`).toBe(0);
  return r;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("object lock (RGW)", () => {
  let work: string;
  let disks: Map<string, SmallPloopDisk>;
  const trusted = (): Record<string, string> => {
    const s3 = testS3();
    return { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint };
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-objlock-"));
    disks = await buildSmallDisks(work);
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** CLI arguments of the repository in `bucket`, with a state dir of its own per role. */
  const repoArgs = (bucket: string, role: string): string[] => ["--repo", `s3://${bucket}/repo`, "--state-dir", join(work, `state-${bucket}-${role}`)];
  const backup = (bucket: string, role: string, disk: string, ct: string, env: Record<string, string>): Promise<CliResult> =>
    runCli(["backup", ...repoArgs(bucket, role), "--disk", disks.get(disk)!.descriptor, "--name", ct, "--json", "-q"], { env });
  const restoredSha = async (bucket: string, role: string, spec: string, env: Record<string, string>): Promise<string> => {
    const out = join(work, `r-${randomBytes(4).toString("hex")}.raw`);
    ok(await runCli(["restore", ...repoArgs(bucket, role), spec, "--format", "raw", "--target", out, "-q"], { env }), `restore ${spec}`);
    const sha = await sha256File(out);
    await rm(out);
    return sha;
  };
  const dataVersions = async (bucket: string, key: string): Promise<VersionItem[]> =>
    (await listVersions(bucket, key)).filter((v) => v.key === key && !v.deleteMarker);
  const chunksOf = async (bucket: string, manifestKey: string, versionId?: string): Promise<Set<string>> => {
    const body = versionId === undefined ? await getObject(bucket, manifestKey) : await readVersion(bucket, manifestKey, versionId);
    return new Set(decodeManifest(body, manifestKey).entries.flatMap((e) => (e.kind === "chunk" ? [e.id.toString("hex")] : [])));
  };

  it("init refuses a local directory and a bucket without object lock, and creates a new bucket with it", async () => {
    const local = await runCli(["init", "--repo", join(work, "localrepo"), "--object-lock", "30"]);
    expect(local.code).toBe(2);
    expect(local.stderr.trim().split("\n")).toHaveLength(1);
    expect(local.stderr).toMatch(/needs an S3 repository/);
    const plain = await makeTestBucket("olplain");
    const refused = await runCli(["init", "--repo", `s3://${plain}/repo`, "--object-lock", "30"], { env: trusted() });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr).toMatch(/does not have S3 Object Lock enabled/);
    expect(await listKeys(plain)).toEqual([]);
    // a bucket that does not exist yet is created with object lock, the lock bucket beside it
    const fresh = `pv-olnew-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
    const r = ok(
      await runCli(["init", "--repo", `s3://${fresh}/repo`, "--object-lock", "2", "--lock-mode", "compliance", "--json"], { env: trusted() }),
      "init new",
    );
    expect(JSON.parse(r.stdout).objectLock).toEqual({ mode: "compliance", retentionSeconds: 2 * 86400, extensionSeconds: 86400, lockBucket: `${fresh}-locks` });
    expect(await minioClient().getObjectLockConfig(fresh)).toMatchObject({ objectLockEnabled: "Enabled" });
    expect(await minioClient().bucketExists(`${fresh}-locks`)).toBe(true);
    const config = await retentionOf(fresh, "repo/config");
    expect(config?.mode).toBe("COMPLIANCE");
    expect(config!.until.getTime()).toBeGreaterThan(Date.now() + 2.9 * DAY_MS);
    // and an existing repository is refused (conditional creates do not work on versioned RGW buckets)
    const again = await runCli(["init", "--repo", `s3://${fresh}/repo`, "--object-lock", "2"], { env: trusted() });
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already exists/);
    // prune from another place (a state dir that never saw this repository) probes the
    // lock bucket, where its conditional writes go, and runs
    const admin = ["--repo", `s3://${fresh}/repo`, "--state-dir", join(work, `state-${fresh}-admin`)];
    ok(await runCli(["prune", ...admin, "--keep-last", "1"], { env: trusted() }), "prune from another state dir");
  });

  it("an intruder with the backup node's credentials destroys nothing and fools nobody; check --repair undoes his overwrites", async (ctx) => {
    const node = nodeCredentials();
    if (node === null) return ctx.skip(); // the test server has no second user (external server without PLOOPVAULT_TEST_S3_NODE_*)
    const bucket = await makeLockedBucket("olattack");
    const lockBucket = await makeTestBucket("olattack-locks");
    ok(await runCli(["init", ...repoArgs(bucket, "trusted"), "--object-lock", "1", "--lock-bucket", lockBucket], { env: trusted() }), "init");
    await applyAppendOnlyPolicies(bucket, lockBucket, node.user);

    // the node backs up under the append-only policy
    const started = Date.now();
    for (const ct of ["101", "102"]) ok(await backup(bucket, "node", ct, ct, node.env), `node backup ${ct}`);
    const versionsBefore = await listVersions(bucket);
    // every object is retained for a day; the lock bucket keeps nothing
    for (const v of versionsBefore) {
      const r = await retentionOf(bucket, v.key, v.versionId);
      expect(r?.mode, v.key).toBe("GOVERNANCE");
      expect(r!.until.getTime(), v.key).toBeGreaterThanOrEqual(started + DAY_MS - 1000);
    }
    expect(versionsBefore.some((v) => v.key === "repo/config")).toBe(true);
    expect(await listKeys(lockBucket)).toEqual([]);
    const manifestKeyOf = (ct: string): string => versionsBefore.find((v) => v.key.startsWith(`repo/backups/${ct}/`) && v.key.endsWith("/manifest"))!.key;
    const m101 = manifestKeyOf("101");
    const m102 = manifestKeyOf("102");
    const chunkKeys = versionsBefore.filter((v) => v.key.startsWith("repo/chunks/")).map((v) => v.key);
    const targets = ["repo/config", m101, m101.replace(/manifest$/, "DiskDescriptor.xml"), ...chunkKeys.slice(0, 5)];

    // the intruder: delete (plain, by version, bypassing governance), shorten retentions
    const original = new Map<string, string>();
    for (const key of targets) {
      const [v] = await dataVersions(bucket, key);
      original.set(key, v!.versionId);
      await expect(node.client.removeObject(bucket, key), `delete ${key}`).rejects.toMatchObject({ code: "AccessDenied" });
      await expect(
        node.client.removeObject(bucket, key, { versionId: v!.versionId, governanceBypass: true }),
        `delete version of ${key}`,
      ).rejects.toMatchObject({ code: "AccessDenied" });
      await expect(node.client.removeObjects(bucket, [{ name: key, versionId: v!.versionId }]), `batch delete of ${key}`).rejects.toMatchObject({
        code: "AccessDenied",
      });
      for (const governanceBypass of [false, true]) {
        await expect(
          node.client.putObjectRetention(bucket, key, {
            versionId: v!.versionId,
            mode: "GOVERNANCE",
            retainUntilDate: new Date(Date.now() + 60_000).toISOString(),
            governanceBypass,
          }),
          `shorten ${key}`,
        ).rejects.toMatchObject({ code: "AccessDenied" });
      }
    }
    // ... and overwrites: an unlocked config, 101's manifest forged to describe 102's disk, junk
    const config = JSON.parse((await getObject(bucket, "repo/config")).toString()) as Record<string, unknown>;
    delete config.objectLock;
    await node.client.putObject(bucket, "repo/config", Buffer.from(JSON.stringify(config)));
    const forged = decodeManifest(await getObject(bucket, m101), m101);
    forged.entries = decodeManifest(await getObject(bucket, m102), m102).entries;
    await node.client.putObject(bucket, m101, encodeManifest(forged));
    for (const key of targets.slice(2)) await node.client.putObject(bucket, key, Buffer.from(`junk over ${key}`));
    // ... and prune
    const zero = await runCli(["prune", ...repoArgs(bucket, "node"), "--keep-last", "0"], { env: node.env });
    expect(zero.code).toBe(2);

    // nothing was destroyed, nobody is fooled: restores as the node and from the trusted side
    expect(await restoredSha(bucket, "node", "101", node.env)).toBe(disks.get("101")!.sha);
    expect(await restoredSha(bucket, "trusted", "102", trusted())).toBe(disks.get("102")!.sha);
    // the node still backs up (dedup against the attacked chunks), and its prune deletes nothing
    ok(await backup(bucket, "node", "104", "101", node.env), "node backup after the attack");
    const pruned = await runCli(["prune", ...repoArgs(bucket, "node"), "--keep-last", "1", "--grace", "0"], { env: node.env });
    expect(pruned.code, pruned.stderr).not.toBe(0);
    const versionsAfter = await listVersions(bucket);
    for (const v of versionsBefore)
      expect(
        versionsAfter.some((a) => a.key === v.key && a.versionId === v.versionId),
        `${v.key} ${v.versionId}`,
      ).toBe(true);
    expect(versionsAfter.filter((v) => v.deleteMarker)).toEqual([]);
    for (const spec of ["101", "102"]) {
      const listing = JSON.parse(
        ok(await runCli(["snapshots", ...repoArgs(bucket, "trusted"), "--ct", spec, "--json"], { env: trusted() }), "snapshots").stdout,
      ) as { id: string }[];
      for (const b of listing) {
        const expected = spec === "102" ? "102" : listing.indexOf(b) === 0 ? "101" : "104";
        expect(await restoredSha(bucket, "trusted", `${spec}/${b.id}`, trusted()), `${spec}/${b.id}`).toBe(disks.get(expected)!.sha);
      }
    }

    // check names the overwrites; --repair from the trusted side removes them
    const check = await runCli(["check", ...repoArgs(bucket, "trusted")], { env: trusted() });
    expect(check.code).toBe(1);
    expect(check.stderr).toContain("overwritten: config");
    expect(check.stderr).toContain(`overwritten: ${m101.slice("repo/".length)}`);
    expect(check.stderr).toMatch(/check --repair/);
    const byNode = await runCli(["check", ...repoArgs(bucket, "node"), "--repair"], { env: node.env });
    expect(byNode.code).not.toBe(0); // the node may not delete versions
    ok(await runCli(["check", ...repoArgs(bucket, "trusted"), "--repair"], { env: trusted() }), "check --repair");
    for (const key of targets) {
      const left = await dataVersions(bucket, key);
      expect(
        left.map((v) => v.versionId),
        key,
      ).toEqual([original.get(key)!]);
    }
    ok(await runCli(["check", ...repoArgs(bucket, "trusted"), "--read-data"], { env: trusted() }), "check --read-data after the repair");
  });

  it("delete markers hide nothing from snapshots, restore, backup and check; check --repair removes them", async () => {
    const bucket = await makeLockedBucket("olmarkers");
    const env = { ...trusted(), PLOOPVAULT_PASSWORD: PASSWORD };
    ok(await runCli(["init", ...repoArgs(bucket, "a"), "--object-lock", "1", "--encrypt"], { env }), "init");
    for (const ct of ["101", "102"]) ok(await backup(bucket, "a", ct, ct, env), `backup ${ct}`);
    const keys = await listKeys(bucket, "repo/");
    const m101 = keys.find((k) => k.startsWith("repo/backups/101/") && k.endsWith("/manifest"))!;
    const chunk101 = [...(await listKeys(bucket, "repo/chunks/"))];
    const hidden = [
      "repo/config",
      keys.find((k) => k.startsWith("repo/keys/"))!,
      m101,
      m101.replace(/manifest$/, "DiskDescriptor.xml"),
      ...chunk101.slice(0, 3),
    ];
    for (const key of hidden) await minioClient().removeObject(bucket, key);
    for (const key of chunk101.slice(3, 5)) await putObject(bucket, key, `junk over ${key}`);
    expect((await listKeys(bucket, "repo/")).filter((k) => hidden.includes(k))).toEqual([]);

    // another node's view (own state dir: no cache)
    const listed = JSON.parse(ok(await runCli(["snapshots", ...repoArgs(bucket, "b"), "--json"], { env }), "snapshots").stdout) as { ct: string }[];
    expect(listed.map((b) => b.ct).sort()).toEqual(["101", "102"]);
    expect(await restoredSha(bucket, "b", "101", env)).toBe(disks.get("101")!.sha);
    const next = ok(await backup(bucket, "b", "103", "103", env), "backup after the hiding");
    expect(jsonLines(next.stdout)[0]).toMatchObject({ status: "ok" });
    const check = await runCli(["check", ...repoArgs(bucket, "b")], { env });
    expect(check.code).toBe(1);
    for (const key of hidden) expect(check.stderr).toContain(`hidden by a delete marker: ${key.slice("repo/".length)}`);
    ok(await runCli(["check", ...repoArgs(bucket, "b"), "--repair", "--read-data"], { env }), "check --repair");
    expect((await listVersions(bucket)).filter((v) => v.deleteMarker)).toEqual([]);
    for (const key of chunk101.slice(3, 5)) expect(await dataVersions(bucket, key), key).toHaveLength(1);
    ok(await runCli(["check", ...repoArgs(bucket, "c"), "--read-data"], { env }), "check after the repair");
    expect(await restoredSha(bucket, "c", "103", env)).toBe(disks.get("103")!.sha);
  });

  it("prune deletes exactly the unreferenced objects whose retention has passed, and keeps and reports the rest", async () => {
    const bucket = await makeLockedBucket("olprune");
    const env = trusted();
    // Retentions of RETAIN_S (+ up to 4 s of phase): short enough to wait for them to
    // pass, long enough that backup B, the retention checks and the first prune finish
    // before A's passes on a loaded machine (8 s was not: a CI-like run at load 18 failed).
    const RETAIN_S = 25;
    ok(await runCli(["init", ...repoArgs(bucket, "a"), "--object-lock", `${RETAIN_S}s`, "--lock-extension", "4s"], { env }), "init");
    ok(await backup(bucket, "a", "101", "101", env), "backup A");
    const aDone = Date.now();
    ok(await backup(bucket, "a", "104", "101", env), "backup B");
    const manifestKeys = (await listKeys(bucket, "repo/backups/")).filter((k) => k.endsWith("/manifest")).sort();
    const [mA, mB] = manifestKeys as [string, string];
    const chunksA = await chunksOf(bucket, mA);
    const chunksB = await chunksOf(bucket, mB);
    // every chunk B references (uploaded, or reused from A and extended) is retained for B's needs
    const basisB = Date.parse((decodeManifest(await getObject(bucket, mB), mB).metadata as { objectLock?: { at: string } }).objectLock!.at);
    for (const id of chunksB) {
      const r = await retentionOf(bucket, `repo/chunks/${id.slice(0, 2)}/${id}`);
      expect(r!.until.getTime(), id).toBeGreaterThanOrEqual(basisB + RETAIN_S * 1000);
      expect(r!.until.getTime(), id).toBeLessThan(basisB + RETAIN_S * 1000 + 4000 + 1000);
    }
    // garbage: one chunk retained for an hour, one not retained at all
    const retainedJunk = `repo/chunks/ee/${"ee".repeat(32)}`;
    const freeJunk = `repo/chunks/ef/${"ef".repeat(32)}`;
    await putObject(bucket, retainedJunk, "retained garbage");
    await minioClient().putObjectRetention(bucket, retainedJunk, {
      versionId: (await dataVersions(bucket, retainedJunk))[0]!.versionId,
      mode: "GOVERNANCE",
      retainUntilDate: new Date(Date.now() + 3_600_000).toISOString(),
    });
    await putObject(bucket, freeJunk, "garbage");

    // at once: A is still retained (kept), only the garbage without retention goes
    const first = jsonLines<Record<string, unknown>>(
      ok(await runCli(["prune", ...repoArgs(bucket, "a"), "--keep-last", "1", "--grace", "0", "--json"], { env }), "prune 1").stdout,
    )[0]!;
    expect(first).toMatchObject({ forgotten: 0, kept: 2, chunksDeleted: 1, chunksRetained: 1, status: "ok" });
    expect((first.backupsRetained as { id: string }[]).map((b) => b.id)).toEqual([mA.split("/")[3]]);
    expect(await listVersions(bucket, freeJunk)).toEqual([]);

    // once A's retention has passed: A goes with exactly the chunks only it referenced
    await sleep(Math.max(0, aDone + (RETAIN_S + 5) * 1000 - Date.now()));
    const second = jsonLines<Record<string, unknown>>(
      ok(await runCli(["prune", ...repoArgs(bucket, "a"), "--keep-last", "1", "--grace", "0", "--json"], { env }), "prune 2").stdout,
    )[0]!;
    const onlyA = [...chunksA].filter((id) => !chunksB.has(id));
    expect(onlyA.length).toBeGreaterThan(0);
    expect(second).toMatchObject({ forgotten: 1, kept: 1, chunksDeleted: onlyA.length, chunksRetained: 1, backupsRetained: [] });
    const left = await listVersions(bucket, "repo/");
    const chunkKeysLeft = new Set(left.filter((v) => v.key.startsWith("repo/chunks/")).map((v) => v.key.split("/").at(-1)!));
    expect([...chunkKeysLeft].sort()).toEqual([...chunksB, "ee".repeat(32)].sort());
    expect(left.filter((v) => v.key.startsWith(mA.replace(/manifest$/, "")))).toEqual([]);
    expect(left.filter((v) => v.deleteMarker)).toEqual([]);
    expect(await restoredSha(bucket, "b", "101", env)).toBe(disks.get("104")!.sha);
  });
});

async function readVersion(bucket: string, key: string, versionId: string): Promise<Buffer> {
  const stream = await minioClient().getObject(bucket, key, { versionId });
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}
