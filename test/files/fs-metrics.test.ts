/** check --fs in the metrics file: per container and backup host, kept across a failed run. */
import { describe, expect, it } from "vitest";
import { parseMetrics, renderMetrics, type RunSummary } from "../../src/ops/metrics.js";

function run(at: number, exitCode: number, fsChecks: RunSummary["fsChecks"]): RunSummary {
  return {
    command: "check",
    host: "checker",
    startedAt: new Date(at * 1000 - 5000),
    finishedAt: new Date(at * 1000),
    exitCode,
    status: exitCode === 0 ? "success" : "failure",
    error: null,
    results: [],
    ...(fsChecks === undefined ? {} : { fsChecks }),
  };
}

const value = (text: string, name: string, labels: Record<string, string>): number | undefined =>
  parseMetrics(text).find((s) => s.name === `ploopvault_check_${name}` && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

describe("check --fs metrics", () => {
  it("one series per container and backup host; a failed run keeps them as not ok with their last ok time", () => {
    const first = renderMetrics(
      run(1_800_000_000, 0, [
        {
          ct: "101",
          backupHost: "node1",
          ok: true,
          errors: 0,
          files: 1200,
          directories: 80,
          bytesFetched: 5 << 20,
          seconds: 3.5,
          backupTime: "2027-01-15T02:00:00.000Z",
        },
        {
          ct: "101",
          backupHost: "node2",
          ok: true,
          errors: 0,
          files: 7,
          directories: 2,
          bytesFetched: 1 << 20,
          seconds: 0.5,
          backupTime: "2027-01-15T03:00:00.000Z",
        },
      ]),
      null,
    );
    expect(value(first, "fs_ok", { ct: "101", backup_host: "node1", host: "checker" })).toBe(1);
    expect(value(first, "fs_files", { ct: "101", backup_host: "node2" })).toBe(7);
    expect(value(first, "fs_backup_timestamp_seconds", { ct: "101", backup_host: "node1" })).toBe(Date.parse("2027-01-15T02:00:00.000Z") / 1000);
    expect(value(first, "fs_last_ok_timestamp_seconds", { ct: "101", backup_host: "node2" })).toBe(1_800_000_000);

    const damaged = renderMetrics(
      run(1_800_086_400, 1, [
        {
          ct: "101",
          backupHost: "node1",
          ok: false,
          errors: 3,
          files: 1100,
          directories: 80,
          bytesFetched: 5 << 20,
          seconds: 3.1,
          backupTime: "2027-01-16T02:00:00.000Z",
        },
      ]),
      first,
    );
    expect(value(damaged, "fs_ok", { ct: "101", backup_host: "node1" })).toBe(0);
    expect(value(damaged, "fs_errors", { ct: "101", backup_host: "node1" })).toBe(3);
    expect(value(damaged, "fs_last_ok_timestamp_seconds", { ct: "101", backup_host: "node1" })).toBe(1_800_000_000);
    // node2's container was not reached in the failed run: not ok, last ok time and figures kept
    expect(value(damaged, "fs_ok", { ct: "101", backup_host: "node2" })).toBe(0);
    expect(value(damaged, "fs_files", { ct: "101", backup_host: "node2" })).toBe(7);
    expect(value(damaged, "fs_last_ok_timestamp_seconds", { ct: "101", backup_host: "node2" })).toBe(1_800_000_000);
  });
});
