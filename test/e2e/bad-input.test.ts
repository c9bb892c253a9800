/**
 * Bad input gives one clear line on stderr, exit 1 (2 for usage), no manifest, and no
 * restore target that looks complete.
 */
import { mkdir, mkdtemp, open, readdir, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, localRepo, runCli, s3Repo, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopInit } from "../helpers/ploop-tool.js";
import { freePort, testS3 } from "../helpers/s3-server.js";
import { pattern } from "../ploop/fixtures.js";

function expectOneLineFailure(r: CliResult, pattern: RegExp, code = 1): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

async function makeDisk(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const dd = await ploopInit(join(dir, "root.hds"), { size: "16M", version: 2 });
  for (const c of [0, 4, 9]) await writeClusterToTop(dd, c, pattern(7, c, 1 << 20));
  return dd;
}

describe("bad input", () => {
  let repo: RepoTarget;
  let work: string;

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-bad-"));
    expect((await runCli(["init", ...repo.args])).code).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  const damage: [string, (img: string, dd: string) => Promise<void>, RegExp][] = [
    ["truncated image", (img) => truncate(img, 1 << 20), /root\.hds: .*(beyond|truncated|end of file|EOF)/i],
    [
      "wrong signature",
      async (img) => {
        const fh = await open(img, "r+");
        await fh.write(Buffer.from("NotAPloopImage!!"), 0, 16, 0);
        await fh.close();
      },
      /root\.hds: .*signature/i,
    ],
    [
      "BAT entry beyond EOF",
      async (img) => {
        const fh = await open(img, "r+");
        const entry = Buffer.alloc(4);
        entry.writeUInt32LE(100_000, 0);
        await fh.write(entry, 0, 4, 64 + 4 * 4);
        await fh.close();
      },
      /root\.hds: .*(beyond|EOF|end of file)/i,
    ],
    ["malformed XML", (_img, dd) => writeFile(dd, "<Parallels_disk_image><Disk_Parameters>"), /DiskDescriptor\.xml: .*(XML|malformed)/i],
    ["missing image file", (img) => unlink(img), /root\.hds: .*missing/i],
  ];

  it.each(damage)("backup of a disk with a %s fails cleanly without a manifest", async (name, apply, message) => {
    const dir = join(work, name.replace(/\W+/g, "-"), "root.hdd");
    const dd = await makeDisk(dir);
    await apply(join(dir, "root.hds"), dd);
    const r = await runCli(["backup", ...repo.args, "--disk", dd, "--name", "bad"]);
    expectOneLineFailure(r, message);
    expect(await repo.listKeys("backups/")).toEqual([]);
  });

  it("a corrupted chunk fails the restore, naming chunk and backup, leaving no target", async () => {
    const dd = await makeDisk(join(work, "good", "root.hdd"));
    const b = await runCli(["backup", ...repo.args, "--disk", dd, "--name", "good", "--json"]);
    expect(b.code, b.stderr).toBe(0);
    const [{ backup }] = jsonLines<{ backup: string }>(b.stdout) as [{ backup: string }];
    const [chunk] = await repo.listKeys("chunks/");
    const body = await repo.read(chunk!);
    body[body.length - 5] ^= 0xff;
    await repo.write(chunk!, body);
    const out = join(work, "restore-out");
    await mkdir(out);
    for (const format of ["raw", "ploop"]) {
      const target = join(out, `t-${format}`);
      const r = await runCli(["restore", ...repo.args, "good", "--format", format, "--target", target]);
      expectOneLineFailure(r, new RegExp(`chunk ${chunk!.split("/").pop()}.*good/${backup}`));
      expect(await readdir(out)).toEqual([]);
    }
    const check = await runCli(["check", ...repo.args, "--read-data"]);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain(`good/${backup}`);
  });

  it("an unknown backup id fails with exit 1", async () => {
    const r = await runCli(["restore", ...repo.args, "nosuchbackup", "--target", join(work, "x")]);
    expectOneLineFailure(r, /nosuchbackup/);
  });

  it("usage errors exit 2", async () => {
    expect((await runCli(["backup", ...repo.args, "--no-such-option"])).code).toBe(2);
    expect((await runCli(["restore", ...repo.args])).code).toBe(2);
    expectOneLineFailure(await runCli(["snapshots"], { env: { PLOOPVAULT_REPO: "" } }), /--repo/, 2);
  });

  it("init refuses an existing repository", async () => {
    expectOneLineFailure(await runCli(["init", ...repo.args]), /already exists/);
  });

  it("a repository that is not there is named", async () => {
    expectOneLineFailure(await runCli(["snapshots", "--repo", join(work, "nothing-here"), "--state-dir", join(work, "st")]), /nothing-here/);
  });
});

describe("bad S3 endpoints and credentials", () => {
  let repo: RepoTarget;
  beforeAll(async () => {
    repo = await s3Repo("bad");
    expect((await runCli(["init", ...repo.args], { env: repo.env })).code).toBe(0);
  });
  afterAll(() => repo.cleanup());

  it("an unreachable endpoint fails quickly with one line naming it", async () => {
    const port = await freePort();
    const started = Date.now();
    const r = await runCli(["snapshots", ...repo.args], { env: { ...repo.env, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` } });
    expectOneLineFailure(r, new RegExp(`127\\.0\\.0\\.1:${port}`));
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it("wrong credentials fail with one line", async () => {
    const r = await runCli(["snapshots", ...repo.args], { env: { ...repo.env, AWS_SECRET_ACCESS_KEY: "wrong-secret" } });
    expectOneLineFailure(r, /(credential|access denied|signature|auth)/i);
  });

  it("a missing bucket is named", async () => {
    const s3 = testS3();
    const r = await runCli(["snapshots", "--repo", "s3://no-such-bucket-pv/x", "--state-dir", repo.stateDir], { env: repo.env });
    expectOneLineFailure(r, /no-such-bucket-pv/);
    expect(s3.endpoint).toBeTruthy();
  });
});
