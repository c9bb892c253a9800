/**
 * Fixed cost per run (issue: a cron run at night meets a cold page cache): wall time of
 * runs that do (almost) nothing, warm and with the page cache dropped, with V8's compile
 * cache (src/util/compile-cache.ts) and without it (NODE_DISABLE_COMPILE_CACHE=1):
 *   node -e 0                       the runtime alone (the floor)
 *   ploopvault --version            module loading
 *   snapshots                       + config, local repository, listing
 *   backup --all, N unchanged cts   + host lock, journal, ploop snapshot/merge per container
 * Per-container cost = (4 containers - 1 container) / 3.
 *   node dist/bench/startup.js [--rounds N] [--cold-rounds N]
 * Cold runs need root (echo 3 > /proc/sys/vm/drop_caches); without it they are skipped.
 * Every run is timed by bench/lib/measure.ts (GNU time), which also counts the CPU the rest
 * of the machine used meanwhile: printed under the table, as a sign of a disturbed run.
 *
 * --per-container: only the unchanged container-mode re-backups (incremental from the kept
 * delta, docs/incremental.md), warm, for --containers N,M (default 1,8; containers past the
 * four of the corpus are copies of them): seconds per run, per container
 * ((t(M) - t(N)) / (M - N)) and the ploop invocations per container, counted by a wrapper
 * around scripts/ploop-offline (one `sh` start per call on top of ploop's own cost).
 *   node dist/bench/startup.js --per-container [--containers 1,8] [--rounds N] [--running]
 * The corpus's containers are stopped (nothing mounts them), so an unchanged one is backed
 * up from its kept snapshot again without any ploop call (docs/incremental.md); --running
 * passes a vzlist that says every container runs, which takes the snapshot path a running
 * container takes (snapshot, then the merge of the previous kept snapshot).
 */
import { chmod, cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildCorpus } from "../scripts/corpus.js";
import { dropCaches, loadAverage, runMeasured, type Measured } from "./lib/measure.js";
import { containerBackupArgs } from "./lib/tools.js";
import { PLOOPVAULT_CLI, withBenchNode } from "./lib/ploopvault-command.js";

const ROOT = resolve(fileURLToPath(import.meta.url), "..", "..", "..");
const PLOOP_OFFLINE = join(ROOT, "scripts", "ploop-offline");

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at < 0 ? fallback : Number(process.argv[at + 1]);
}

/** CPU seconds other jobs used during the timed runs (runMeasured's "other CPU"), summed. */
let otherCpuSeconds = 0;

/** One run of `argv`, measured (throws on a non-zero exit, with the end of its stderr). */
async function measured(argv: string[], env: Record<string, string>, tmpDir: string, label = argv.slice(1).join(" ")): Promise<Measured> {
  const m = await runMeasured(argv[0]!, argv.slice(1), tmpDir, { env: withBenchNode(env), label });
  otherCpuSeconds += m.otherCpuSeconds;
  return m;
}

/** Wall seconds of one run. */
async function timed(argv: string[], env: Record<string, string>, tmpDir: string): Promise<number> {
  return (await measured(argv, env, tmpDir)).seconds;
}

function otherCpuLine(): string {
  return `(other jobs used ${otherCpuSeconds.toFixed(1)} CPU s during the timed runs)\n`;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A ploop that appends its subcommand to `logPath`, then runs the offline ploop. */
async function countingPloop(dir: string, logPath: string): Promise<string> {
  const path = join(dir, "ploop-counting");
  await writeFile(path, `#!/bin/sh\necho "$1" >> '${logPath}'\nexec '${PLOOP_OFFLINE}' "$@"\n`);
  await chmod(path, 0o700);
  return path;
}

/** Subcommand -> calls, from a countingPloop log. */
async function ploopCalls(logPath: string): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  let text = "";
  try {
    text = await readFile(logPath, "utf8");
  } catch {
    return calls;
  }
  for (const sub of text.split("\n").filter((l) => l !== "")) calls.set(sub, (calls.get(sub) ?? 0) + 1);
  return calls;
}

/** Unchanged container-mode re-backups of N and M containers: per run, per container, ploop calls per container. */
async function perContainer(work: string, counts: number[], rounds: number, running: boolean): Promise<void> {
  process.stdout.write(`building 4 small containers in ${work} ...\n`);
  const privateRoot = join(work, "private");
  const corpus = await buildCorpus(privateRoot, { scale: "small" });
  const most = Math.max(...counts);
  const all = corpus.map((c) => c.ctid);
  for (let k = all.length; k < most; k++) {
    const ct = String(101 + k);
    await cp(join(privateRoot, all[k % corpus.length]!), join(privateRoot, ct), { recursive: true });
    all.push(ct);
  }
  const repo = join(work, "repo");
  const state = join(work, "state");
  const log = join(work, "ploop-calls.log");
  const ploop = await countingPloop(work, log);
  const env: Record<string, string> = { PLOOPVAULT_STATE: state };
  const common = ["--repo", repo, "--state-dir", state];
  let vzlistBin: string | undefined;
  if (running) {
    vzlistBin = join(work, "vzlist-running");
    await writeFile(vzlistBin, `#!/bin/sh\n${all.map((ct) => `echo '${ct} ${join(privateRoot, ct)} running'`).join("\n")}\n`);
    await chmod(vzlistBin, 0o700);
  }
  const backup = (cts: string[]): string[] => [
    PLOOPVAULT_CLI,
    ...containerBackupArgs({ cts, repo, stateDir: state, privateRoot, ploopBin: ploop, ...(vzlistBin ? { vzlistBin } : {}) }),
  ];
  await timed([PLOOPVAULT_CLI, "init", ...common], env, work);
  await timed(backup(all.slice(0, most)), env, work); // first backups (whole disks), and the kept snapshots
  const rows: { n: number; seconds: number; cpuSeconds: number; calls: Map<string, number> }[] = [];
  const load = await loadAverage();
  for (const n of counts) {
    const argv = backup(all.slice(0, n));
    const run = () => measured(argv, env, work, `backup of ${n} containers`);
    await run(); // warm-up
    const times: number[] = [];
    const cpu: number[] = [];
    let calls = new Map<string, number>();
    for (let i = 0; i < rounds; i++) {
      await rm(log, { force: true });
      const m = await run();
      times.push(m.seconds);
      cpu.push(m.userSeconds + m.sysSeconds);
      calls = await ploopCalls(log);
    }
    rows.push({ n, seconds: median(times), cpuSeconds: median(cpu), calls });
  }
  const lines = [
    `| unchanged re-backup, container mode, ${running ? "running (vzlist stub)" : "stopped"} containers (median of ${rounds} warm runs; load ${load.toFixed(1)}) | wall s per run | CPU s per run (with ploop) | ploop calls per container |`,
    "|---|---:|---:|---|",
  ];
  for (const r of rows) {
    const total = [...r.calls.values()].reduce((a, b) => a + b, 0);
    const bySub = [...r.calls].map(([sub, c]) => `${sub} ${(c / r.n).toFixed(1)}`).join(", ");
    lines.push(`| ${r.n} container${r.n === 1 ? "" : "s"} | ${r.seconds.toFixed(3)} | ${r.cpuSeconds.toFixed(3)} | ${(total / r.n).toFixed(1)} (${bySub}) |`);
  }
  for (let k = 1; k < rows.length; k++) {
    const a = rows[k - 1]!;
    const b = rows[k]!;
    const per = (x: number, y: number): string => ((y - x) / (b.n - a.n)).toFixed(3);
    lines.push(`| per container ((${b.n} - ${a.n} containers) / ${b.n - a.n}) | ${per(a.seconds, b.seconds)} | ${per(a.cpuSeconds, b.cpuSeconds)} | |`);
  }
  process.stdout.write(`\n${lines.join("\n")}\n${otherCpuLine()}`);
}

async function main(): Promise<void> {
  const rounds = option("--rounds", 7);
  const coldRounds = option("--cold-rounds", 3);
  const work = await mkdtemp(join(tmpdir(), "pv-startup-"));
  if (process.argv.includes("--per-container")) {
    const at = process.argv.indexOf("--containers");
    const counts = (at < 0 ? "1,8" : (process.argv[at + 1] ?? "")).split(",").map(Number);
    if (counts.length < 2 || counts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error("--containers wants N,M,... (at least two counts)");
    try {
      await perContainer(work, counts, option("--rounds", 5), process.argv.includes("--running"));
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    return;
  }
  try {
    process.stdout.write(`building 4 small containers in ${work} ...\n`);
    const privateRoot = join(work, "private");
    const containers = await buildCorpus(privateRoot, { scale: "small" });
    const repo = join(work, "repo");
    const state = join(work, "state");
    const env: Record<string, string> = { PLOOPVAULT_STATE: state, PLOOPVAULT_PLOOP: PLOOP_OFFLINE };
    const common = ["--repo", repo, "--state-dir", state];
    const backup = (cts: string[]): string[] => [PLOOPVAULT_CLI, ...containerBackupArgs({ cts, repo, stateDir: state, privateRoot, ploopBin: PLOOP_OFFLINE })];
    await writeFile(join(work, "empty.js"), "");
    await timed([PLOOPVAULT_CLI, "init", ...common], env, work);
    const all = containers.map((c) => c.ctid);
    await timed(backup(all), env, work); // first backups (whole disks), and the kept snapshots
    const cases: [string, string[]][] = [
      ["node -e 0 (runtime alone)", [process.execPath, "-e", "0"]],
      ["ploopvault --version", [PLOOPVAULT_CLI, "--version"]],
      ["snapshots (local repository)", [PLOOPVAULT_CLI, "snapshots", ...common]],
      ["backup, 1 unchanged container", backup(all.slice(0, 1))],
      [`backup, ${all.length} unchanged containers`, backup(all)],
    ];
    const results = new Map<string, Record<string, number>>();
    const canDrop = dropCaches();
    for (const [name] of cases) results.set(name, {});
    for (const cache of ["on", "off"] as const) {
      const caseEnv = cache === "on" ? env : { ...env, NODE_DISABLE_COMPILE_CACHE: "1" };
      for (const [name, argv] of cases) {
        await timed(argv, caseEnv, work); // fills the compile cache
        const warm: number[] = [];
        for (let i = 0; i < rounds; i++) warm.push(await timed(argv, caseEnv, work));
        const cold: number[] = [];
        for (let i = 0; canDrop && i < coldRounds; i++) {
          dropCaches();
          cold.push(await timed(argv, caseEnv, work));
        }
        const row = results.get(name)!;
        row[`warm, cache ${cache}`] = median(warm);
        if (cold.length > 0) row[`cold, cache ${cache}`] = median(cold);
      }
    }
    const columns = [...new Set([...results.values()].flatMap((r) => Object.keys(r)))];
    const lines = [
      `| run (median seconds; ${rounds} warm, ${canDrop ? coldRounds : 0} cold rounds) | ${columns.join(" | ")} |`,
      `|---|${columns.map(() => "---:").join("|")}|`,
    ];
    for (const [name, row] of results) lines.push(`| ${name} | ${columns.map((c) => (row[c] === undefined ? "" : row[c]!.toFixed(3))).join(" | ")} |`);
    const one = results.get("backup, 1 unchanged container")!;
    const four = results.get(`backup, ${all.length} unchanged containers`)!;
    for (const c of columns) {
      if (one[c] !== undefined && four[c] !== undefined) lines.push(`| per container (${c}) | ${((four[c]! - one[c]!) / (all.length - 1)).toFixed(3)} |`);
    }
    process.stdout.write(`\n${lines.join("\n")}\n(load average ${(await loadAverage()).toFixed(1)}) ${otherCpuLine()}`);
    if (!canDrop) process.stdout.write("(cold runs skipped: dropping the page cache needs root)\n");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
