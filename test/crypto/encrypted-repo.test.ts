/**
 * Encrypted repositories end to end through the built CLI, against a local directory and
 * the test S3 server (Ceph RGW). Stored objects are inspected and corrupted only through
 * the filesystem or the independent minio client.
 *
 * A disk full of a known marker text and a corpus disk are backed up; no stored object
 * holds the marker, a long plaintext run, a zstd frame or a plain manifest; chunk names
 * are not the SHA-256 names an unencrypted repository gives the same data; restores are
 * bit-identical to the real ploop's flattening; a wrong password is one line and exit 5;
 * a flipped byte in a chunk or a manifest is reported naming the backup (exit 1); `key
 * passwd` makes the old password fail and the new one work.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, runCli, s3Repo, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopCheck, ploopFlatten, ploopInit } from "../helpers/ploop-tool.js";
import { sha256File } from "../ploop/fixtures.js";

const MARKER = "PLOOPVAULT-PLAINTEXT-MARKER-7f3a";
const PASSWORD = "correct horse battery staple";
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const CLUSTER = 1 << 20;
/** Clusters of the marker disk that hold marker text (the rest are holes). */
const MARKER_CLUSTERS = [0, 1, 2, 5, 9, 10, 31];
/** Tests that run several CLI commands (one scrypt each) on a loaded 2-core host. */
const HEAVY = 300_000;

interface BackupJson {
  ct: string;
  backup: string;
  status: string;
  newChunks: number;
  chunks: number;
}

function expectOneLineFailure(r: CliResult, pattern: RegExp, code: number): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** Lines of readable text, each saying where it is, all containing the marker. */
function markerCluster(cluster: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < CLUSTER; i++) {
    const line = `${MARKER} cluster ${cluster} line ${i}: the quick brown fox jumps over the lazy dog\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, CLUSTER);
}

/** The container config stored beside the backup (found as <ct dir>/ve.conf), full of the marker too. */
const VE_CONF = `# ${MARKER}\nHOSTNAME="${MARKER}.example"\nDISK_QUOTA=yes\n`;

async function makeMarkerDisk(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const dd = await ploopInit(join(dir, "root.hds"), { size: "32M", version: 2 });
  for (const c of MARKER_CLUSTERS) await writeClusterToTop(dd, c, markerCluster(c));
  await writeFile(join(dir, "..", "ve.conf"), VE_CONF);
  return dd;
}

function longestPrintableRun(body: Buffer): number {
  let best = 0;
  let run = 0;
  for (const b of body) {
    run = b >= 0x20 && b < 0x7f ? run + 1 : 0;
    if (run > best) best = run;
  }
  return best;
}

describe.each(["local", "s3"] as const)("encrypted repository, %s", (kind) => {
  let repo: RepoTarget;
  let plainRepo: RepoTarget;
  let work: string;
  let markerDd: string;
  let markerFlatSha: string;
  let env: Record<string, string>;
  const backups = new Map<string, string>();
  const cli = (args: string[], extraEnv: Record<string, string> = {}): Promise<CliResult> => runCli(args, { env: { ...repo.env, ...extraEnv } });

  beforeAll(async () => {
    repo = kind === "local" ? await localRepo() : await s3Repo("enc");
    plainRepo = kind === "local" ? await localRepo() : await s3Repo("encplain");
    work = await mkdtemp(join(tmpdir(), "pv-enc-"));
    env = { ...repo.env, PLOOPVAULT_PASSWORD: PASSWORD };
    markerDd = await makeMarkerDisk(join(work, "marker", "root.hdd"));
    const flat = join(work, "marker.flat");
    await ploopFlatten(markerDd, flat);
    markerFlatSha = await sha256File(flat);
    await rm(flat);
  });
  afterAll(async () => {
    await repo.cleanup();
    await plainRepo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("init --encrypt writes a plaintext config with an encryption header and one key object", async () => {
    const r = await runCli(["init", ...repo.args, "--encrypt", "--chunk-avg", "64K", "--json"], { env });
    expect(r.code, r.stderr).toBe(0);
    const [result] = jsonLines<{ encryption: { key: string } | null }>(r.stdout);
    expect(result!.encryption?.key).toMatch(/^[0-9a-f]{32}$/);
    const config = JSON.parse((await repo.read("config")).toString()) as { encryption: Record<string, string> | null };
    expect(config.encryption).toMatchObject({ scheme: "ploopvault-aead-v1", cipher: "aes-256-gcm", chunkId: "hmac-sha256" });
    expect(config.encryption!.keyCheck).toMatch(/^[0-9a-f]{64}$/);
    expect(await repo.listKeys("keys/")).toEqual([`keys/${result!.encryption!.key}`]);
    const key = JSON.parse((await repo.read(`keys/${result!.encryption!.key}`)).toString()) as Record<string, unknown>;
    expect(key).toMatchObject({ format: "ploopvault-key", kdf: { algorithm: "scrypt", N: 131072, r: 8, p: 1 } });
    expect(JSON.stringify(key)).not.toContain(PASSWORD);
    const plain = await runCli(["init", ...plainRepo.args, "--chunk-avg", "64K"], { env: plainRepo.env });
    expect(plain.code, plain.stderr).toBe(0);
  });

  it(
    "backs up the marker disk and a corpus disk; an unchanged disk stores nothing new (dedup works)",
    async () => {
      for (const [ct, dd] of [
        ["marker", markerDd],
        ["101", descriptorOf("101")],
      ] as const) {
        const r = await runCli(["backup", ...repo.args, "--disk", dd, "--name", ct, "--json", "-q"], { env });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toBe("");
        const [result] = jsonLines<BackupJson>(r.stdout);
        expect(result).toMatchObject({ ct, status: "ok" });
        expect(result!.newChunks).toBeGreaterThan(0);
        backups.set(ct, result!.backup);
      }
      // again, on the main thread this time (the inline processor must agree with the workers)
      const again = await runCli(["backup", ...repo.args, "--disk", markerDd, "--name", "marker", "--threads", "0", "--json"], { env });
      expect(again.code, again.stderr).toBe(0);
      expect(jsonLines<BackupJson>(again.stdout)[0]!.newChunks).toBe(0);
      const plain = await runCli(["backup", ...plainRepo.args, "--disk", markerDd, "--name", "marker", "--json"], { env: plainRepo.env });
      expect(plain.code, plain.stderr).toBe(0);
    },
    HEAVY,
  );

  it("no stored object holds the marker, a long plaintext run, a zstd frame or a plain manifest", async () => {
    const keys = await repo.listKeys("");
    const marker = Buffer.from(MARKER);
    const kinds = new Map<string, number>();
    let scanned = 0;
    for (const key of keys) {
      const body = await repo.read(key);
      scanned += body.length;
      expect(body.includes(marker), key).toBe(false);
      expect(body.includes(Buffer.from("quick brown fox")), key).toBe(false);
      if (key === "config" || key.startsWith("keys/")) {
        JSON.parse(body.toString()); // plaintext JSON by design: parameters and wrapped keys only
        expect(body.toString(), key).not.toContain(PASSWORD);
        continue;
      }
      const kindName = key.startsWith("chunks/") ? "chunk" : key.endsWith("/manifest") ? "manifest" : "file";
      kinds.set(kindName, (kinds.get(kindName) ?? 0) + 1);
      expect(body[0], key).toBe({ chunk: 0x02, manifest: 0x03, file: 0x04 }[kindName]);
      expect(body.subarray(1, 5).equals(ZSTD_MAGIC), key).toBe(false);
      expect(body.subarray(0, 4).equals(ZSTD_MAGIC), key).toBe(false);
      expect(body.subarray(0, 4).toString("latin1"), key).not.toBe("PVMF");
      expect(body.includes(Buffer.from("Parallels_disk_image")), key).toBe(false);
      expect(body.includes(Buffer.from("<?xml")), key).toBe(false);
      expect(longestPrintableRun(body), key).toBeLessThan(24);
    }
    expect(kinds.get("chunk")).toBeGreaterThan(10);
    expect(kinds.get("manifest")).toBe(3);
    expect(kinds.get("file")).toBeGreaterThanOrEqual(3);
    expect(scanned).toBeGreaterThan(1 << 20);
    // the same disk in an unencrypted repository gets SHA-256 names: none of them appear here
    const plainChunks = new Set((await plainRepo.listKeys("chunks/")).map((k) => k.split("/").pop()));
    expect(plainChunks.size).toBeGreaterThan(0);
    const encChunks = (await repo.listKeys("chunks/")).map((k) => k.split("/").pop());
    expect(encChunks.filter((id) => plainChunks.has(id))).toEqual([]);
    // and the unencrypted repository does hold the plaintext (the scan above would catch it)
    const somePlain = await plainRepo.read((await plainRepo.listKeys("backups/")).find((k) => k.endsWith("DiskDescriptor.xml"))!);
    expect(somePlain.includes(Buffer.from("<?xml"))).toBe(true);
  });

  it(
    "restores raw bit-identical to the real ploop's flattening, and lists backups",
    async () => {
      const list = await runCli(["snapshots", ...repo.args, "--json"], { env });
      expect(list.code, list.stderr).toBe(0);
      expect((JSON.parse(list.stdout) as { ct: string }[]).map((r) => r.ct).sort()).toEqual(["101", "marker", "marker"]);
      for (const [ct, sha] of [
        ["marker", markerFlatSha],
        ["101", corpus().flatSha256["101"]!],
      ] as const) {
        const target = join(work, `${ct}.raw`);
        const r = await runCli(["restore", ...repo.args, backups.get(ct)!, "--format", "raw", "--target", target], { env });
        expect(r.code, r.stderr).toBe(0);
        expect(await sha256File(target)).toBe(sha);
        await rm(target);
      }
    },
    HEAVY,
  );

  it(
    "restores as ploop: passes ploop check and flattens to the same content; check --read-data is clean",
    async () => {
      const target = join(work, "marker.ploop");
      const r = await runCli(["restore", ...repo.args, "marker", "--target", target], { env });
      expect(r.code, r.stderr).toBe(0);
      const check = await ploopCheck(join(target, "root.hdd"));
      expect(check.exitCode, check.output).toBe(0);
      expect(await readFile(join(target, "ve.conf"), "utf8")).toBe(VE_CONF); // the sealed side file, opened
      const flat = join(work, "marker.reflat");
      await ploopFlatten(join(target, "DiskDescriptor.xml"), flat);
      expect(await sha256File(flat)).toBe(markerFlatSha);
      await rm(flat);
      await rm(target, { recursive: true });
      const verify = await runCli(["check", ...repo.args, "--read-data"], { env });
      expect(verify.code, verify.stderr).toBe(0);
    },
    HEAVY,
  );

  it(
    "a wrong password is one line and exit 5; no password on a non-terminal is a usage error (2)",
    async () => {
      const wrong = await cli(["snapshots", ...repo.args], { PLOOPVAULT_PASSWORD: "not the password" });
      expectOneLineFailure(wrong, /wrong password for repository/, 5);
      expect(wrong.stderr).not.toContain("not the password");
      const wrongRestore = await cli(["restore", ...repo.args, "marker", "--format", "raw", "--target", join(work, "never.raw")], {
        PLOOPVAULT_PASSWORD: "nope",
      });
      expectOneLineFailure(wrongRestore, /wrong password/, 5);
      const wrongBackup = await cli(["backup", ...repo.args, "--disk", markerDd, "--name", "marker"], { PLOOPVAULT_PASSWORD: "nope" });
      expectOneLineFailure(wrongBackup, /wrong password/, 5);
      const none = await cli(["snapshots", ...repo.args]);
      expectOneLineFailure(none, /is encrypted: no password given \(set PLOOPVAULT_PASSWORD, use --password-file FILE/, 2);
      const pwFile = join(work, "pw");
      await writeFile(pwFile, `${PASSWORD}\n`);
      const fromFile = await cli(["snapshots", ...repo.args, "--password-file", pwFile, "-q"]);
      expect(fromFile.code, fromFile.stderr).toBe(0);
      // a password given for an unencrypted repository is refused (a replaced config must not downgrade silently)
      const downgrade = await runCli(["snapshots", ...plainRepo.args], { env: { ...plainRepo.env, PLOOPVAULT_PASSWORD: PASSWORD } });
      expectOneLineFailure(downgrade, /is not encrypted, but a password was given/, 2);
      const plainOk = await runCli(["snapshots", ...plainRepo.args, "-q"], { env: plainRepo.env });
      expect(plainOk.code, plainOk.stderr).toBe(0);
    },
    HEAVY,
  );

  it(
    "a flipped byte in a chunk is detected and reported naming the chunk and the backup",
    async () => {
      const key = (await repo.listKeys("chunks/"))[0]!;
      const id = key.split("/").pop()!;
      const original = await repo.read(key);
      const bad = Buffer.from(original);
      bad[bad.length >> 1]! ^= 0x01;
      await repo.write(key, bad);
      try {
        const check = await cli(["check", ...repo.args, "--read-data"], { PLOOPVAULT_PASSWORD: PASSWORD });
        expect(check.code).toBe(1);
        expect(check.stderr).toMatch(new RegExp(`damaged backup [^ ]+: chunk ${id}: authentication failed`));
        expect(check.stderr).toMatch(/check failed: \d damaged backups?: /);
        // restoring a backup that uses it fails with one line naming chunk and backup
        const damaged = [...check.stderr.matchAll(/damaged backup ([^/ ]+)\/([^: ]+):/g)].map((m) => [m[1]!, m[2]!] as const);
        expect(damaged.length).toBeGreaterThan(0);
        const [ct, backup] = damaged.find(([c]) => c === "marker") ?? damaged[0]!;
        const target = join(work, `tampered-${ct}.raw`);
        const r = await cli(["restore", ...repo.args, `${ct}/${backup}`, "--format", "raw", "--target", target], { PLOOPVAULT_PASSWORD: PASSWORD });
        expectOneLineFailure(r, new RegExp(`chunk ${id}: authentication failed.*backup ${ct}/${backup}`), 1);
      } finally {
        await repo.write(key, original);
      }
    },
    HEAVY,
  );

  it(
    "a chunk object swapped with another is detected",
    async () => {
      const [a, b] = await repo.listKeys("chunks/");
      const bodyA = await repo.read(a!);
      const bodyB = await repo.read(b!);
      await repo.write(a!, bodyB);
      try {
        const check = await cli(["check", ...repo.args, "--read-data"], { PLOOPVAULT_PASSWORD: PASSWORD });
        expect(check.code).toBe(1);
        expect(check.stderr).toContain(`${a!.split("/").pop()}: authentication failed`);
      } finally {
        await repo.write(a!, bodyA);
      }
    },
    HEAVY,
  );

  it(
    "a flipped byte in a manifest is detected and reported naming the backup",
    async () => {
      const ct = "101";
      const key = `backups/${ct}/${backups.get(ct)}/manifest`;
      const original = await repo.read(key);
      const bad = Buffer.from(original);
      bad[40]! ^= 0x10;
      await repo.write(key, bad);
      try {
        const check = await cli(["check", ...repo.args], { PLOOPVAULT_PASSWORD: PASSWORD });
        expect(check.code).toBe(1);
        expect(check.stderr).toContain(`damaged backup ${ct}/${backups.get(ct)}: manifest of backup ${ct}/${backups.get(ct)}: authentication failed`);
        // a client without the manifest cached (another node) refuses it too
        const r = await cli(
          ["restore", ...repo.args.slice(0, 2), "--state-dir", join(work, "fresh-state"), ct, "--format", "raw", "--target", join(work, "x.raw")],
          {
            PLOOPVAULT_PASSWORD: PASSWORD,
          },
        );
        expectOneLineFailure(r, new RegExp(`manifest of backup ${ct}/${backups.get(ct)}: authentication failed`), 1);
      } finally {
        await repo.write(key, original);
      }
      // a manifest moved under another backup's name is refused as well
      const other = `backups/marker/${backups.get("marker")}/manifest`;
      const otherBody = await repo.read(other);
      await repo.write(other, original);
      try {
        const check = await cli(["check", ...repo.args, "-q"], { PLOOPVAULT_PASSWORD: PASSWORD });
        expect(check.code).toBe(1);
        expect(check.stderr).toContain(`marker/${backups.get("marker")}`);
      } finally {
        await repo.write(other, otherBody);
      }
    },
    HEAVY,
  );

  it(
    "a modified config is refused once a key opens the repository",
    async () => {
      const original = await repo.read("config");
      const config = JSON.parse(original.toString()) as { chunker: { minSize: number; avgSize: number; maxSize: number } };
      config.chunker = { ...config.chunker, minSize: 4096, avgSize: 16384, maxSize: 65536 };
      await repo.write("config", Buffer.from(JSON.stringify(config)));
      try {
        expectOneLineFailure(await cli(["snapshots", ...repo.args], { PLOOPVAULT_PASSWORD: PASSWORD }), /config: does not match the repository key/, 1);
      } finally {
        await repo.write("config", original);
      }
    },
    HEAVY,
  );

  it(
    "key add / list / passwd / remove: other passwords open the same data; after passwd the old one fails",
    async () => {
      const add = await cli(["key", "add", ...repo.args, "--json"], { PLOOPVAULT_PASSWORD: PASSWORD, PLOOPVAULT_NEW_PASSWORD: "second operator" });
      expect(add.code, add.stderr).toBe(0);
      const added = jsonLines<{ key: string }>(add.stdout)[0]!.key;
      const list = await cli(["key", "list", ...repo.args, "--json"], { PLOOPVAULT_PASSWORD: "second operator" });
      expect(list.code, list.stderr).toBe(0);
      const keys = JSON.parse(list.stdout) as { id: string; current: boolean }[];
      expect(keys).toHaveLength(2);
      expect(keys.find((k) => k.current)!.id).toBe(added);
      const first = keys.find((k) => !k.current)!.id;

      const newPw = join(work, "new-pw");
      await writeFile(newPw, "a brand new password\n");
      const passwd = await cli(["key", "passwd", ...repo.args, "--new-password-file", newPw, "--json"], { PLOOPVAULT_PASSWORD: PASSWORD });
      expect(passwd.code, passwd.stderr).toBe(0);
      expect(jsonLines<{ oldKey: string }>(passwd.stdout)[0]!.oldKey).toBe(first);
      expect(await repo.listKeys("keys/")).not.toContain(`keys/${first}`);
      expectOneLineFailure(await cli(["snapshots", ...repo.args], { PLOOPVAULT_PASSWORD: PASSWORD }), /wrong password/, 5);
      const target = join(work, "after-passwd.raw");
      const r = await cli(["restore", ...repo.args, "marker", "--format", "raw", "--target", target, "--password-file", newPw]);
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(target)).toBe(markerFlatSha);
      await rm(target);

      // the key one unlocks with cannot be removed; another can
      expectOneLineFailure(
        await cli(["key", "remove", ...repo.args, added.slice(0, 8)], { PLOOPVAULT_PASSWORD: "second operator" }),
        /refusing to remove key/,
        1,
      );
      const remove = await cli(["key", "remove", ...repo.args, added.slice(0, 8), "--password-file", newPw]);
      expect(remove.code, remove.stderr).toBe(0);
      expectOneLineFailure(await cli(["snapshots", ...repo.args], { PLOOPVAULT_PASSWORD: "second operator" }), /wrong password/, 5);
      expect(await repo.listKeys("keys/")).toHaveLength(1);
      // no data object was rewritten: nothing but keys/ changed (chunks still verify)
      const verify = await cli(["check", ...repo.args, "--read-data", "-q", "--password-file", newPw]);
      expect(verify.code, verify.stderr).toBe(0);
    },
    HEAVY,
  );
});

describe("unencrypted repositories and usage", () => {
  it("init without --encrypt refuses a given password; key commands need an encrypted repository", async () => {
    const repo = await localRepo();
    try {
      const refused = await runCli(["init", ...repo.args], { env: { PLOOPVAULT_PASSWORD: "x" } });
      expectOneLineFailure(refused, /not --encrypt/, 2);
      expect((await runCli(["init", ...repo.args])).code).toBe(0);
      expectOneLineFailure(await runCli(["key", "list", ...repo.args]), /is not encrypted/, 2);
      const empty = await runCli(["init", "--repo", join(repo.url, "..", "other"), "--encrypt"], { env: { PLOOPVAULT_PASSWORD: "" } });
      expectOneLineFailure(empty, /no new password given/, 2);
    } finally {
      await repo.cleanup();
    }
  });
});
