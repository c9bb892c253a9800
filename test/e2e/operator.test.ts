/**
 * Issue 17 through the real CLI, as an operator meets it: password sources that name
 * themselves, -q that is silent for every command, backups of several containers where
 * one id is unknown, tags, protection through prune and forget, stats and diff against
 * restored disks, check slices, restore dry runs and terminals, a closed pipe, and the S3
 * endpoint in the repository URL and a wrong secret against the suite's RGW.
 */
import { execa } from "execa";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { copyContainer, corpus, descriptorOf } from "../helpers/corpus.js";
import { makeTestBucket, testS3 } from "../helpers/s3-server.js";

interface Row {
  id: string;
  ct: string;
  host: string;
  protected: boolean;
  tags: string[];
  note: string | null;
  dataBytes: number;
}

describe("an operator's first day (local repository)", () => {
  let repo: RepoTarget;
  let work: string;
  const cli = (args: string[], env: Record<string, string> = {}) => runCli([...args, ...repo.args], { env: { ...repo.env, ...env } });
  const rows = async (extra: string[] = []): Promise<Row[]> => JSON.parse((await cli(["snapshots", "--json", ...extra])).stdout) as Row[];

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-operator-"));
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("refuses URL-like local paths and names where a stray password comes from", async () => {
    const lookalike = await runCli(["init", "--repo", "s3:http:/127.0.0.1:9000/bucket/prefix"], { env: {} });
    expect(lookalike.code).toBe(2);
    expect(lookalike.stderr).toMatch(/looks like a URL/);
    expect(await stat("s3:http:").catch(() => null)).toBeNull();

    expect((await cli(["init", "-q"])).code).toBe(0);
    // the example config's password-file with the quick start's unencrypted repository
    const conf = join(work, "ploopvault.conf");
    await writeFile(conf, "# test\npassword-file = /etc/ploopvault/password\n");
    const fromConfig = await cli(["snapshots", "--config", conf]);
    expect(fromConfig.code).toBe(2);
    expect(fromConfig.stderr).toContain(`password-file = /etc/ploopvault/password in config file ${conf}, line 2`);
    // a misspelled, empty section
    await writeFile(conf, "[snapshot]\n");
    const section = await cli(["snapshots", "--config", conf]);
    expect(section.code).toBe(2);
    expect(section.stderr).toContain(`config file ${conf}, line 1: unknown section [snapshot]`);
  });

  it("backs up several disks with tags and a note, is silent with -q, and explains a missing disk", async () => {
    const a = await cli([
      "backup",
      "--disk",
      descriptorOf("101"),
      "--disk",
      descriptorOf("102"),
      "--tag",
      "first",
      "--tag",
      "pre-upgrade",
      "--note",
      "before PHP 8.3",
      "--lock-wait",
      "10m",
      "--hook-timeout",
      "5m",
      "-q",
    ]);
    expect(a).toMatchObject({ code: 0, stdout: "", stderr: "" });
    const b = await cli(["backup", "--disk", descriptorOf("101"), "--tag", "second", "-q"]);
    expect(b).toMatchObject({ code: 0, stdout: "", stderr: "" });
    const list = await rows();
    expect(list.map((r) => [r.ct, r.tags, r.note])).toEqual([
      ["101", ["first", "pre-upgrade"], "before PHP 8.3"],
      ["102", ["first", "pre-upgrade"], "before PHP 8.3"],
      ["101", ["second"], null],
    ]);
    expect((await rows(["--tag", "second"])).map((r) => r.ct)).toEqual(["101"]);
    const missing = await cli(["backup", "--disk", "/nonexistent/DiskDescriptor.xml"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe("ploopvault: --disk /nonexistent/DiskDescriptor.xml: no such file\n");
  });

  it("keeps protected backups through prune, refuses to forget them, forgets by id prefix", async () => {
    const [first101] = (await rows()).filter((r) => r.ct === "101");
    const protect = await cli(["protect", `101/${first101!.id.slice(0, 20)}`, "-q"]);
    expect(protect).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect((await rows()).find((r) => r.id === first101!.id)!.protected).toBe(true);
    // keep-last 1 would forget the older backup of 101: it is protected
    const prune = await cli(["prune", "--keep-last", "1", "--grace", "0", "-q"]);
    expect(prune).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect((await rows()).map((r) => r.id)).toContain(first101!.id);
    const refused = await cli(["forget", first101!.id]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("is protected");
    const latest = await cli(["forget", "101:latest"]);
    expect(latest.code).toBe(2);
    expect(latest.stderr).toMatch(/newest backup of container 101: give the backup's id/);
    expect(await cli(["unprotect", first101!.id, "-q"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    const dry = await cli(["forget", first101!.id.slice(0, 20), "--dry-run", "-q"]);
    expect(dry.stdout).toContain(`would forget 101/${first101!.id}`);
    expect((await rows()).map((r) => r.id)).toContain(first101!.id);
    expect(await cli(["forget", first101!.id.slice(0, 20), "-q"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect((await rows()).map((r) => r.id)).not.toContain(first101!.id);
    // its manifest and side files are gone, its chunks stay until the next prune
    expect(await repo.listKeys(`backups/101/${first101!.id}/`)).toEqual([]);
  });

  it("stats adds up the backups; diff's ranges hold every byte that differs between restored disks", async () => {
    expect((await cli(["backup", "--disk", descriptorOf("101"), "-q"])).code).toBe(0);
    const list = await rows();
    const stats = JSON.parse((await cli(["stats", "--json"])).stdout) as {
      total: { backups: number; dataBytes: number; uniqueBytes: number; storedBytes: number; dedupRatio: number };
      groups: { ct: string; backups: number }[];
    };
    expect(stats.total.backups).toBe(list.length);
    expect(stats.total.dataBytes).toBe(list.reduce((s, r) => s + r.dataBytes, 0));
    expect(stats.total.dedupRatio).toBeGreaterThan(1.5); // 101 twice
    const stored = await Promise.all((await repo.listKeys("chunks/")).map(async (k) => (await repo.read(k)).length));
    expect(stats.total.storedBytes).toBe(stored.reduce((s, n) => s + n, 0));
    expect(stats.groups.map((g) => [g.ct, g.backups])).toEqual([
      ["101", 2],
      ["102", 1],
    ]);

    const same = JSON.parse((await cli(["diff", `101/${list.find((r) => r.ct === "101")!.id}`, "101:latest", "--json"])).stdout) as { changedBytes: number };
    expect(same.changedBytes).toBe(0);
    const d = JSON.parse((await cli(["diff", "101:latest", "102:latest", "--json"])).stdout) as {
      ranges: { offset: number; length: number }[];
      fromBytes: number;
      toBytes: number;
    };
    const rawA = join(work, "a.raw");
    const rawB = join(work, "b.raw");
    expect((await cli(["restore", "101:latest", "--format", "raw", "--target", rawA, "-q"])).code).toBe(0);
    expect((await cli(["restore", "102:latest", "--format", "raw", "--target", rawB, "-q"])).code).toBe(0);
    const [A, B] = [await readFile(rawA), await readFile(rawB)];
    // every byte outside the reported ranges is equal (compared gap by gap: a byte loop over 256 MiB takes minutes)
    const end = Math.max(A.length, B.length);
    let pos = 0;
    for (const range of [...d.ranges, { offset: end, length: 0 }]) {
      expect(range.offset, "ranges sorted and disjoint").toBeGreaterThanOrEqual(pos);
      expect(A.subarray(pos, range.offset).equals(B.subarray(pos, range.offset)), `bytes ${pos}..${range.offset} differ outside the reported ranges`).toBe(
        true,
      );
      pos = range.offset + range.length;
    }
    await rm(rawA);
    await rm(rawB);
  });

  it("checks slices that add up to the whole, and one container", async () => {
    const whole = JSON.parse((await cli(["check", "--read-data", "--json"])).stdout) as { chunksRead: number; backups: number };
    let read = 0;
    for (const n of [1, 2, 3]) {
      const r = await cli(["check", "--read-data-subset", `${n}/3`, "--json", "-q"]);
      expect(r.code, r.stderr).toBe(0);
      read += (JSON.parse(r.stdout) as { chunksRead: number }).chunksRead;
    }
    expect(read).toBe(whole.chunksRead);
    const one = JSON.parse((await cli(["check", "--ct", "102", "--json"])).stdout) as { backups: number };
    expect(one.backups).toBe(1);
    const none = JSON.parse((await cli(["check", "--host", "no-such-host", "--json"])).stdout) as { backups: number };
    expect(none.backups).toBe(0);
    // check --fs narrows the same way: the newest backup of 102 only, nothing from another host
    const fsOne = await cli(["check", "--fs", "--ct", "102", "--json"]);
    expect(fsOne.code, fsOne.stderr).toBe(0);
    expect((JSON.parse(fsOne.stdout) as { filesystems: { ct: string; status: string }[] }).filesystems.map((f) => [f.ct, f.status])).toEqual([["102", "ok"]]);
    const fsNone = await cli(["check", "--fs", "--host", "no-such-host", "--json"]);
    expect((JSON.parse(fsNone.stdout) as { filesystems: unknown[] }).filesystems).toEqual([]);
    const both = await cli(["check", "--fs", "102:latest", "--ct", "102"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("give backups to check or --ct, not both");
  });

  it("restore: --dry-run writes nothing; a terminal is refused as a stream target; a closed pipe ends quietly", async () => {
    const target = join(work, "dry", "201");
    const dry = await cli(["restore", "101:latest", "--target", target, "--dry-run", "-q"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`${target}/root.hdd`);
    expect(await readdir(work)).not.toContain("dry");
    // `script` gives the command a terminal as stdout
    const command = [process.execPath, CLI, "restore", "101:latest", "--target", "-", ...repo.args].map((a) => `'${a}'`).join(" ");
    const tty = await execa("script", ["-qec", command, "/dev/null"], { reject: false, env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER } });
    expect(tty.exitCode).toBe(2);
    expect(String(tty.stdout)).toContain("stdout is a terminal; refusing");
    // the reader is gone before the listing is written
    const piped = await execa(
      "bash",
      ["-c", `set -o pipefail; '${process.execPath}' '${CLI}' snapshots -q ${repo.args.map((a) => `'${a}'`).join(" ")} | true`],
      { reject: false },
    );
    expect(String(piped.stderr)).toBe("");
    expect([0, 141]).toContain(piped.exitCode);
  });

  it("backs up the known containers of `backup 101 999` and exits 3", async () => {
    const root = await copyContainer("101");
    const privateRoot = join(root, "..");
    const r = await cli([
      "backup",
      "101",
      "999",
      "--private-root",
      privateRoot,
      "--vzlist-bin",
      "/nonexistent",
      "--ploop-bin",
      PLOOP_WRAPPER,
      "--json",
      "--no-incremental",
    ]);
    expect(r.code, r.stderr).toBe(3);
    const results = jsonLines<{ ct: string; status: string; error?: string }>(r.stdout);
    expect(results.map((x) => [x.ct, x.status])).toEqual([
      ["999", "error"],
      ["101", "ok"],
    ]);
    expect(r.stderr).toMatch(/1 of 2 backups failed: 999: unknown container 999/);
    await rm(privateRoot, { recursive: true, force: true });
  });
});

describe("passwords (encrypted repository)", () => {
  it("says an empty password file is empty, and takes --password-command", async () => {
    const repo = await localRepo();
    try {
      const init = await runCli(["init", ...repo.args, "--encrypt", "-q"], { env: { PLOOPVAULT_PASSWORD: "pw" } });
      expect(init.code, init.stderr).toBe(0);
      const empty = join(repo.stateDir, "..", "empty-pass");
      await writeFile(empty, "", { mode: 0o600 }); // owner-only, as the docs say (else a warning comes first)
      const r = await runCli(["snapshots", ...repo.args, "--password-file", empty]);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(`ploopvault: --password-file ${empty}: the file is empty (it must hold the password)\n`);
      const ok = await runCli(["snapshots", ...repo.args, "--password-command", "printf pw"]);
      expect(ok.code, ok.stderr).toBe(0);
      const wrong = await runCli(["snapshots", ...repo.args, "--password-command", "echo nope"]);
      expect(wrong.code).toBe(5);
      const failing = await runCli(["snapshots", ...repo.args, "--password-command", "echo no vault >&2; exit 3"]);
      expect(failing.code).toBe(1);
      expect(failing.stderr).toContain('--password-command "echo no vault >&2; exit 3": exited with 3: no vault');
    } finally {
      await repo.cleanup();
    }
  });
});

describe("S3 repositories as operators write them (RGW)", () => {
  it("keeps the endpoint in an s3:http:// URL, and says what a wrong secret is", async () => {
    const s3 = testS3();
    const bucket = await makeTestBucket("ops");
    const url = `s3:${s3.endpoint}/${bucket}/node1`;
    const state = await mkdtemp(join(tmpdir(), "pv-ops-s3-"));
    // no AWS_ENDPOINT_URL, no --endpoint: the URL carries it
    const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region };
    try {
      for (const args of [["init"], ["backup", "--disk", descriptorOf(corpus().cts[0]!)], ["snapshots", "--json"]]) {
        const r = await runCli([...args, "--repo", url, "--state-dir", state, "-q"], { env });
        expect(r.code, `${args[0]}: ${r.stderr}`).toBe(0);
      }
      const conflict = await runCli(["snapshots", "--repo", url, "--endpoint", "http://127.0.0.1:1"], { env });
      expect(conflict.code).toBe(2);
      expect(conflict.stderr).toMatch(/names the endpoint .* but --endpoint \/ AWS_ENDPOINT_URL says/);
      const wrong = await runCli(["snapshots", "--repo", url, "--state-dir", state], {
        env: { ...env, AWS_SECRET_ACCESS_KEY: "wrong", AWS_MAX_ATTEMPTS: "1" },
      });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).not.toMatch(/UnknownError/);
      expect(wrong.stderr).toMatch(/secret key does not match|wrong credentials/);
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });
});
