/**
 * Live progress: drawn on a terminal (a pseudo-TTY from util-linux `script`), one line per
 * container plus a total while several run in parallel, erased at the end; never in a
 * pipe, never with -q; --json results on stdout stay clean while stderr shows progress.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { ANSI, NO_CONFIG, privateRootWith, runCliInPty } from "./util.js";

describe("progress display", () => {
  let repo: RepoTarget;
  let priv: { root: string; cleanup: () => Promise<void> };
  let work: string;

  beforeAll(async () => {
    repo = await localRepo();
    priv = await privateRootWith(["101", "102"]);
    work = await mkdtemp(join(tmpdir(), "pv-ops-progress-"));
    const init = await runCli(["init", ...repo.args], { env: NO_CONFIG });
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await priv.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("draws a live line per container and a total on a terminal, then erases it", async () => {
    // --limit-read stretches the 130 MiB of reads over ~3 s so several redraws happen.
    const r = await runCliInPty(["backup", ...repo.args, "--all", "--private-root", priv.root, "--vzlist-bin", "/nonexistent/vzlist", "--ploop-bin", PLOOP_WRAPPER, "--parallel", "2", "--limit-read", "40M"]);
    expect(r.code, r.stdout).toBe(0);
    const out = r.stdout;
    expect(out).toMatch(ANSI);
    expect(out).toMatch(/CT 101 .*\d+%.*MiB \/ .*MiB.*\/s.*new .*ETA \d+:\d\d/);
    expect(out).toMatch(/CT 102 .*ETA/);
    expect(out).toMatch(/total \(2 running\)/);
    // cursor-up + erase sequences: the block is redrawn in place, not scrolled
    expect((out.match(/\u001b\[\d+A\r\u001b\[J/g) ?? []).length).toBeGreaterThan(3);
    // the result lines are there, and after the last erase no progress line is left
    expect(out).toMatch(/backup 101\/\S+: /);
    expect(out).toMatch(/backup 102\/\S+: /);
    const afterLastErase = out.slice(out.lastIndexOf("\u001b[J"));
    expect(afterLastErase).not.toMatch(/ETA/);
    // progress and log lines never share a line: every line with "backup 10x/" starts clean
    for (const line of out.split("\r\n").filter((l) => l.includes("backup 10"))) expect(line).not.toMatch(/ETA/);
  });

  it("prints no progress into a pipe (cron mail, log collectors)", async () => {
    const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf("101"), "--limit-read", "200M"], { env: NO_CONFIG });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/backup 101\/\S+: /);
    expect(r.stderr).not.toMatch(ANSI);
    expect(r.stderr).not.toMatch(/ETA|\r/);
  });

  it("is silent with -q on a terminal", async () => {
    const r = await runCliInPty(["backup", ...repo.args, "--disk", descriptorOf("101"), "-q", "--limit-read", "100M"]);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toBe("");
  });

  it("is off with --no-progress and with --log-format json", async () => {
    for (const flag of ["--no-progress", "--log-format=json"]) {
      const r = await runCliInPty(["backup", ...repo.args, "--disk", descriptorOf("101"), flag, "--limit-read", "100M"]);
      expect(r.code, r.stdout).toBe(0);
      expect(r.stdout, flag).not.toMatch(/ETA/);
    }
  });

  it("keeps --json results on stdout clean while stderr shows progress", async () => {
    const outFile = join(work, "out.json");
    const r = await runCliInPty(["backup", ...repo.args, "--disk", descriptorOf("102"), "--json", "--limit-read", "60M"], { redirect: `> ${outFile}` });
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/CT 102 .*ETA/); // the terminal (stderr) got progress
    const results = jsonLines<{ ct: string; status: string }>(await readFile(outFile, "utf8"));
    expect(results).toEqual([expect.objectContaining({ ct: "102", status: "ok" })]);
  });
});
