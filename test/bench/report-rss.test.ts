/**
 * The bench report's memory target is "peak RSS <= 256 MiB in every run": with --repeat
 * the steps shown are the median runs, so the target row must take the highest peak of
 * every run of every repetition (and the seeded restores), not the median run's.
 */
import { describe, expect, it } from "vitest";
import { peakRssOfRun, renderReport, type BenchReport, type TargetResult } from "../../bench/lib/report.js";
import type { Measured } from "../../bench/lib/measure.js";
import type { RestoreStep } from "../../bench/lib/tools.js";

const measured = (seconds: number, peakRssMiB: number): Measured => ({
  seconds,
  userSeconds: seconds,
  sysSeconds: 0,
  peakRssMiB,
  otherCpuSeconds: 0,
  serverCpuSeconds: 0,
  stdout: "",
  stderr: "",
});
const restoreStep = (peakRssMiB: number): RestoreStep => ({ measured: measured(1, peakRssMiB), syncSeconds: 0, file: "/x.raw" });

function ploopvaultRun(firstRss: number, seededRss: number): TargetResult {
  return {
    tool: "ploopvault",
    input: "ploop",
    store: "local",
    label: "ploopvault (local)",
    first: { measured: measured(3, firstRss), addedBytes: 1, newChunks: 1 },
    restore: restoreStep(120),
    restoreVerified: true,
    seeded: {
      unseeded: restoreStep(130),
      seeded: restoreStep(seededRss),
      changedClusters: 3,
      allocatedClusters: 310,
      chunks: 1030,
      fetchedUnseeded: 1030,
      fetchedSeeded: 13,
      verified: true,
    },
  };
}

function report(ploopvault: TargetResult): BenchReport {
  return {
    date: "2026-12-04T20:00:00Z",
    command: "node dist/bench/run.js --repeat 3",
    nice: null,
    machine: { cpu: "test", cores: 2, memGiB: 24, kernel: "6", node: "v24" },
    versions: {},
    notes: [],
    corpus: { dir: "/c", scale: null, disks: [] },
    restoreCt: "101",
    local: [ploopvault],
    s3: [],
    ceiling: null,
    large: [],
    loadBefore: 0,
    loadAfter: 0,
    seconds: 60,
    repeat: 3,
  };
}

const rssRow = (markdown: string): string => markdown.split("\n").find((l) => l.startsWith("| peak RSS, MiB"))!;

describe("the bench report's peak RSS target", () => {
  it("counts the seeded restores of a run", () => {
    expect(peakRssOfRun(ploopvaultRun(240, 270))).toBe(270);
  });

  it("takes the highest run of every repetition, not the median run shown in the steps", () => {
    const median = ploopvaultRun(240, 200);
    const row = rssRow(renderReport(report({ ...median, peakRssMiBAllRuns: 299 })));
    expect(row).toContain("| 299 |");
    expect(row).toContain("**no**");
    expect(rssRow(renderReport(report(median)))).toMatch(/\| 240 \|.*\| yes \|/);
  });
});
