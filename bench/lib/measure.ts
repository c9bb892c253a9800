/**
 * Running one timed command: wall time, CPU time and peak RSS of the command (GNU time,
 * `/usr/bin/time -f`, Debian package `time`), plus how much CPU the rest of the machine
 * used meanwhile ("other CPU"), so a run disturbed by other jobs on a 2-core box shows it.
 */
import { spawnSync } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";

export const GNU_TIME = "/usr/bin/time";

export interface Measured {
  /** Wall seconds measured around the process (includes its start-up). */
  seconds: number;
  userSeconds: number;
  sysSeconds: number;
  /** Peak resident set size of the command (largest process it waited for), MiB. */
  peakRssMiB: number;
  /**
   * CPU seconds used on the machine during the run by anything but the command and the
   * processes listed in `ownPids` (e.g. the local S3 server): noise from other jobs.
   */
  otherCpuSeconds: number;
  /** CPU seconds of `ownPids` (the S3 server's daemons) during the run. */
  serverCpuSeconds: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Extra processes whose CPU is part of the measured work (S3 server daemons). */
  ownPids?: () => number[];
  /** Text for error messages, e.g. "restic backup". */
  label?: string;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** Busy CPU ticks of the whole machine since boot (all cores). */
async function machineBusyTicks(): Promise<number> {
  const stat = await readFile("/proc/stat", "utf8");
  const fields = stat.split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice are inside user/nice]
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return user + nice + system + irq + softirq + steal;
}

/** utime + stime ticks of a process (all its threads), 0 if it is gone. */
async function processTicks(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime, stime = fields 14, 15
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

async function ticksOf(pids: number[]): Promise<number> {
  let sum = 0;
  for (const pid of pids) sum += await processTicks(pid);
  return sum;
}

/** CPU seconds (user + system, all threads) the processes have used so far. */
export async function cpuSecondsOf(pids: number[]): Promise<number> {
  return (await ticksOf(pids)) / TICKS_PER_SECOND;
}

let timeChecked = false;
export async function requireGnuTime(): Promise<void> {
  if (timeChecked) return;
  const r = await execa(GNU_TIME, ["-f", "%M", "true"], { reject: false });
  if (r.exitCode !== 0) throw new Error(`${GNU_TIME} (GNU time) is needed to measure peak RSS: apt-get install time`);
  timeChecked = true;
}

let seq = 0;

/** Run `cmd args` under GNU time; throws (with the tail of stderr) on a non-zero exit. */
export async function runMeasured(cmd: string, args: string[], tmpDir: string, options: RunOptions = {}): Promise<Measured> {
  await requireGnuTime();
  const timeFile = join(tmpDir, `.time-${process.pid}-${seq++}`);
  const own = options.ownPids?.() ?? [];
  const busy0 = await machineBusyTicks();
  const own0 = await ticksOf(own);
  const started = performance.now();
  const r = await execa(GNU_TIME, ["-f", "%e %U %S %M", "-o", timeFile, cmd, ...args], {
    reject: false,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: { LC_ALL: "C", ...(options.env ?? {}) },
    maxBuffer: 512 * 1024 * 1024,
    stdin: "ignore",
  });
  const seconds = (performance.now() - started) / 1000;
  const busy1 = await machineBusyTicks();
  const own1 = await ticksOf(own);
  let timeLine = "";
  try {
    const lines = (await readFile(timeFile, "utf8")).trim().split("\n");
    timeLine = lines[lines.length - 1] ?? "";
  } finally {
    await rm(timeFile, { force: true });
  }
  const label = options.label ?? `${cmd} ${args.join(" ")}`;
  if (r.exitCode !== 0) {
    const tail = `${r.stderr}`.trim().split("\n").slice(-8).join("\n");
    throw new Error(`${label} exited with ${r.exitCode ?? r.signal ?? "?"}:\n${tail}`);
  }
  const [, user, sys, maxRssKiB] = timeLine.split(" ").map(Number);
  if (user === undefined || sys === undefined || maxRssKiB === undefined || Number.isNaN(maxRssKiB)) {
    throw new Error(`${label}: cannot parse GNU time output "${timeLine}"`);
  }
  const serverCpuSeconds = (own1 - own0) / TICKS_PER_SECOND;
  const otherCpuSeconds = Math.max(0, (busy1 - busy0) / TICKS_PER_SECOND - user - sys - serverCpuSeconds);
  return {
    seconds,
    userSeconds: user,
    sysSeconds: sys,
    peakRssMiB: maxRssKiB / 1024,
    otherCpuSeconds,
    serverCpuSeconds,
    stdout: String(r.stdout),
    stderr: String(r.stderr),
  };
}

/** Several measured runs as one step: seconds and CPU add up, RSS is the maximum. */
export function combine(runs: Measured[]): Measured {
  return {
    seconds: sum(runs.map((r) => r.seconds)),
    userSeconds: sum(runs.map((r) => r.userSeconds)),
    sysSeconds: sum(runs.map((r) => r.sysSeconds)),
    peakRssMiB: Math.max(0, ...runs.map((r) => r.peakRssMiB)),
    otherCpuSeconds: sum(runs.map((r) => r.otherCpuSeconds)),
    serverCpuSeconds: sum(runs.map((r) => r.serverCpuSeconds)),
    stdout: runs.map((r) => r.stdout).join(""),
    stderr: runs.map((r) => r.stderr).join(""),
  };
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Load average of the last minute (shown with the results). */
export async function loadAverage(): Promise<number> {
  return Number((await readFile("/proc/loadavg", "utf8")).split(" ")[0]);
}

/**
 * sync, then drop the page cache, dentries and inodes (needs root: a cron run at night
 * meets a cold cache); false where that is not allowed.
 */
export function dropCaches(): boolean {
  spawnSync("sync");
  const r = spawnSync("sh", ["-c", "echo 3 > /proc/sys/vm/drop_caches"], { stdio: "ignore" });
  return r.status === 0;
}
