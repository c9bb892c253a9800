/**
 * The config file: flag > environment > file > default, [command] sections, typed values
 * checked like flags, secrets refused, typos reported with file and line.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";

describe("config file", () => {
  let dir: string;
  // Repositories that do not exist: the error names the one that was chosen.
  const repoOf = (stderr: string): string | undefined => /repository directory (\S+) does not exist/.exec(stderr)?.[1];
  const conf = async (name: string, text: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "pv-ops-config-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("takes the flag over the environment over the file", async () => {
    const file = await conf("precedence.conf", `# ploopvault\nrepo = ${dir}/from-file   # trailing comment\n`);
    const fileOnly = await runCli(["snapshots", "--config", file], { env: { PLOOPVAULT_CONFIG: "" } });
    expect(fileOnly.code).toBe(1);
    expect(repoOf(fileOnly.stderr)).toBe(`${dir}/from-file`);

    const envWins = await runCli(["snapshots", "--config", file], { env: { PLOOPVAULT_REPO: `${dir}/from-env` } });
    expect(repoOf(envWins.stderr), envWins.stderr).toBe(`${dir}/from-env`);

    const flagWins = await runCli(["snapshots", "--config", file, "--repo", `${dir}/from-flag`], { env: { PLOOPVAULT_REPO: `${dir}/from-env` } });
    expect(repoOf(flagWins.stderr), flagWins.stderr).toBe(`${dir}/from-flag`);
  });

  it("finds the file through PLOOPVAULT_CONFIG; --config wins over it; empty means none", async () => {
    const a = await conf("a.conf", `repo = "${dir}/repo a"\n`);
    const b = await conf("b.conf", `repo = '${dir}/repo-b'\n`);
    const viaEnv = await runCli(["snapshots"], { env: { PLOOPVAULT_CONFIG: a } });
    expect(repoOf(viaEnv.stderr.replace("repo a", "repo_a"))).toBe(`${dir}/repo_a`);
    const flag = await runCli(["snapshots", "--config", b], { env: { PLOOPVAULT_CONFIG: a } });
    expect(repoOf(flag.stderr)).toBe(`${dir}/repo-b`);
    const none = await runCli(["snapshots", "--config", ""], { env: { PLOOPVAULT_CONFIG: a } });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no repository given/);
  });

  it("applies a [command] section over the top part, only to that command", async () => {
    const file = await conf("sections.conf", `repo = ${dir}/top\n\n[snapshots]\nrepo = ${dir}/snapshots-only\n\n[backup]\nparallel = 3\n`);
    const snap = await runCli(["snapshots", "--config", file]);
    expect(repoOf(snap.stderr)).toBe(`${dir}/snapshots-only`);
    const check = await runCli(["check", "--config", file]);
    expect(repoOf(check.stderr)).toBe(`${dir}/top`);
  });

  it("fills options of any kind: a log file, a switch, a rate", async () => {
    const log = join(dir, "logs", "pv.log");
    const file = await conf("kinds.conf", `log-file = ${log}\nprogress = false\nlimit-download = 1.5M\nrepo = ${dir}/nothing\n`);
    const r = await runCli(["snapshots", "--config", file, "-v"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`config ${file}:1: log-file`);
    expect(r.stderr).toContain(`config ${file}:3: limit-download`);
    const text = await readFile(log, "utf8");
    expect(text).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO {2}snapshots\[\d+\] ploopvault .*snapshots started/m);
    expect(text).toMatch(/ERROR snapshots\[\d+\] repository directory .*nothing does not exist/);
  });

  it("refuses secrets, naming the file and line and where secrets go instead", async () => {
    const keys = ["password", "aws_secret_access_key", "AWS-ACCESS-KEY-ID", "session-token", "repository-password"];
    const runs = await Promise.all(
      keys.map(async (key) => {
        const file = await conf(`secret-${key}.conf`, `repo = /srv/backup\n${key} = hunter2\n`);
        return { key, file, r: await runCli(["snapshots", "--config", file]) };
      }),
    );
    for (const { key, file, r } of runs) {
      expect(r.code, key).toBe(2);
      expect(r.stderr).toContain(`config file ${file}, line 2:`);
      expect(r.stderr).toMatch(/secrets are never read from the config file; use the environment/);
      expect(r.stderr).not.toContain("hunter2");
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
    // a password *file* is a path, not a secret
    const ok = await conf("password-file.conf", `repo = ${dir}/pwf\npassword-file = /etc/ploopvault/password\n`);
    const r = await runCli(["snapshots", "--config", ok]);
    expect(repoOf(r.stderr)).toBe(`${dir}/pwf`);
  });

  it("reports typos and bad values with file and line (exit 2)", async () => {
    const cases: [string, RegExp][] = [
      ["repo = /x\nrepos = /y\n", /line 2: unknown key "repos"/],
      ["limit-upload = fast\n", /line 1 \(limit-upload\): --limit-upload: cannot parse rate "fast"/],
      ["[backup]\nparallel = 0\n", /line 2 \(parallel\): --parallel must be a positive integer/],
      ["[snapshots]\nparallel = 2\n", /line 2: command snapshots has no option --parallel/],
      ["[bakcup]\nparallel = 2\n", /line 1: unknown section \[bakcup\]/],
      ["log-format = xml\n", /line 1 \(log-format\): .*text, json/],
      ["progress = maybe\n", /line 1 \(progress\): expected true or false/],
      ["repo = /a\nrepo = /b\n", /line 2: "repo" is set twice/],
      ["json = true\n", /line 1: "json" can only be given on the command line/],
      ["just some words\n", /line 1: expected "key = value"/],
    ];
    // CLI start-up dominates: run the cases side by side
    const runs = await Promise.all(
      cases.map(async ([text], i) => {
        const file = await conf(`bad-${i}.conf`, text);
        return runCli(["backup", "--config", file, "--all"]);
      }),
    );
    cases.forEach(([text, expected], i) => {
      expect(runs[i]!.code, text).toBe(2);
      expect(runs[i]!.stderr, text).toMatch(expected);
    });
    const missing = await runCli(["snapshots", "--config", join(dir, "missing.conf")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`config file ${join(dir, "missing.conf")}: cannot read (ENOENT)`);
  });
});
