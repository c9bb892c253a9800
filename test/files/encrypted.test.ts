/**
 * File restore from an encrypted repository (on the S3 server) works the same: ls, dump
 * (tar) and restore --include of the ext3 and inline-data disks agree with debugfs, and
 * check --fs passes; a wrong password is refused with exit 5 before anything is read.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { compareTree, debugfsTree, expectSamePaths, type OracleEntry } from "../helpers/debugfs-oracle.js";
import { diskOf, fsCorpus } from "../helpers/fs-corpus.js";

const CTS = ["202", "203"] as const;
const PASSWORD = "file restore password";

let repo: RepoTarget;
let work: string;
let env: Record<string, string>;
const oracles = new Map<string, { entries: Map<string, OracleEntry>; cleanup: () => Promise<void> }>();

beforeAll(async () => {
  const corpus = await fsCorpus();
  repo = await s3Repo("fsenc");
  work = await mkdtemp(join(tmpdir(), "pv-fs-enc-"));
  env = { ...repo.env, PLOOPVAULT_PASSWORD: PASSWORD };
  const init = await runCli(["init", ...repo.args, "--encrypt", "-q"], { env });
  expect(init.code, init.stderr).toBe(0);
  for (const ct of CTS) {
    const r = await runCli(["backup", ...repo.args, "--disk", diskOf(corpus, ct).descriptorPath, "-q"], { env });
    expect(r.code, r.stderr).toBe(0);
    oracles.set(ct, await debugfsTree(corpus.flat[ct]!, diskOf(corpus, ct).fsOffset));
  }
}, 600_000);

afterAll(async () => {
  for (const o of oracles.values()) await o.cleanup();
  await repo?.cleanup();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe.each(CTS)("encrypted repository on S3, disk %s", (ct) => {
  it("ls, dump and restore --include agree with debugfs; check --fs passes", async () => {
    const oracle = oracles.get(ct)!.entries;
    const ls = await runCli(["ls", ...repo.args, `${ct}:latest`, "/", "-R", "--json"], { env });
    expect(ls.code, ls.stderr).toBe(0);
    const lines = jsonLines<{ struct_type: string; path: string; bytesFetched?: number }>(ls.stdout);
    expectSamePaths(
      lines.filter((l) => l.struct_type === "node").map((l) => l.path),
      [...oracle.keys()],
    );
    expect(lines.find((l) => l.struct_type === "summary")!.bytesFetched).toBeGreaterThan(0);

    const tar = join(work, `${ct}.tar`);
    const dump = await runCli(["dump", ...repo.args, ct, "/", "--target", tar, "-q"], { env });
    expect(dump.code, dump.stderr).toBe(0);
    const extracted = join(work, `${ct}-tar`);
    await execa("mkdir", [extracted]);
    await execa("tar", ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tar, "-C", extracted]);
    await compareTree(extracted, oracle, { mtimeToleranceNs: 0n });

    const restored = join(work, `${ct}-restored`);
    const r = await runCli(["restore", ...repo.args, ct, "--include", "/", "--target", restored, "-q"], { env });
    expect(r.code, r.stderr).toBe(0);
    await compareTree(restored, oracle, { mtimeToleranceNs: 1000n });

    const check = await runCli(["check", ...repo.args, "--fs", ct, "--json"], { env });
    expect(check.code, check.stderr).toBe(0);
    expect(jsonLines<{ status: string }>(check.stdout)[0]!.status).toBe("ok");
  }, 300_000);
});

it("a wrong password is refused with exit 5", async () => {
  const r = await runCli(["ls", ...repo.args, "203", "/"], { env: { ...env, PLOOPVAULT_PASSWORD: "wrong" } });
  expect(r.code).toBe(5);
  expect(r.stdout).toBe("");
});
