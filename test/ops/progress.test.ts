/**
 * Live progress: drawn on a terminal (a pseudo-TTY from util-linux `script`), one line per
 * container plus a total while several run in parallel, erased at the end; never in a
 * pipe, never with -q; --json results on stdout stay clean while stderr shows progress.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProgressDisplay } from "../../src/ops/progress.js";
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
    const r = await runCliInPty([
      "backup",
      ...repo.args,
      "--all",
      "--private-root",
      priv.root,
      "--vzlist-bin",
      "/nonexistent/vzlist",
      "--ploop-bin",
      PLOOP_WRAPPER,
      "--parallel",
      "2",
      "--limit-read",
      "40M",
    ]);
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

describe("progress block rendering", () => {
  const fake = (columns: number): { stream: { write: (t: string) => void; columns: number; isTTY: boolean }; writes: string[] } => {
    const writes: string[] = [];
    return { stream: { write: (t) => void writes.push(t), columns, isTTY: true }, writes };
  };

  it("redraws at most once per interval, keeps lines inside the terminal, prints log lines above the block", () => {
    let now = 0;
    const { stream, writes } = fake(60);
    const display = new ProgressDisplay(stream, 250, () => now);
    display.update("a", "CT 101", { done: 1 << 20, total: 100 << 20, newBytes: 0 });
    for (now = 50; now < 250; now += 50) display.update("a", "CT 101", { done: (now / 10) << 20, total: 100 << 20, newBytes: 0 });
    expect(writes).toHaveLength(1); // the first update draws, the next ones within 250 ms do not
    now = 1000;
    display.update("a", "CT 101", { done: 50 << 20, total: 100 << 20, newBytes: 3 << 20 });
    display.update("b", "CT 102", { done: 1 << 20, total: 10 << 20 });
    expect(writes).toHaveLength(2);
    const lines = display.lines();
    expect(lines).toHaveLength(3); // two containers and the total
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(59);
    expect(lines[0]).toMatch(/^CT 101 .*50%/);
    display.printAbove("a log line\n");
    // the block on screen had one line (CT 102 arrived within the interval): erase it,
    // print the log line, redraw all three lines below it
    const last = writes[writes.length - 1]!;
    expect(last.startsWith("\u001b[1A\r\u001b[Ja log line\n")).toBe(true);
    expect(display.lineCount).toBe(3);
    display.close();
    expect(writes[writes.length - 1]).toBe("\u001b[3A\r\u001b[J");
    const count = writes.length;
    display.update("a", "CT 101", { done: 60 << 20, total: 100 << 20 });
    expect(writes).toHaveLength(count); // closed: nothing more
  });

  it("shows rate and ETA once two samples exist", () => {
    let now = 0;
    const { stream } = fake(120);
    const display = new ProgressDisplay(stream, 250, () => now);
    display.update("a", "CT 101", { done: 0, total: 100 << 20 });
    expect(display.lines()[0]).toMatch(/--\/s .*ETA --:--/);
    now = 2000;
    display.update("a", "CT 101", { done: 20 << 20, total: 100 << 20 });
    expect(display.lines()[0]).toMatch(/10\.0 MiB\/s .*ETA 0:08/);
    display.close();
  });
});
