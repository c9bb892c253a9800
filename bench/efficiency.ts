/**
 * Pipeline efficiency of a first backup (issue: CPU per byte close to the stages' own
 * cost): the CPU the stages need alone for the disk's bytes (gear scan, SHA-256 of every
 * chunk, zstd of the distinct chunks at the repository's level; measured here on the
 * same data, as bench/stages.ts does) divided by cores x wall of a real `backup --disk`
 * into a fresh local repository. 1.0 would be every core busy with nothing but the stages.
 *
 *   node dist/bench/efficiency.js [DISK_DESCRIPTOR] [--rounds N]
 * Default disk: 101 of the bench corpus in .tmp/bench/corpus (built first if missing).
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildCorpus } from "../scripts/corpus.js";
import { chunkerParamsForAverage, StreamChunker } from "../src/chunker/index.js";
import { candidateCuts } from "../src/chunker/stitch.js";
import { openLogicalDisk } from "../src/ploop/disk.js";
import { zstdCompress } from "../src/util/zstd.js";
import { PLOOPVAULT_CLI, withBenchNode } from "./lib/ploopvault-command.js";

const ROOT = resolve(fileURLToPath(import.meta.url), "..", "..", "..");
const BLOCK = 8 << 20;

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function allocatedData(descriptor: string): Promise<Buffer[]> {
  const disk = await openLogicalDisk(descriptor);
  const runs: Buffer[] = [];
  try {
    for (const run of disk.allocatedRuns()) {
      const data = Buffer.allocUnsafe(run.length);
      for (let at = 0; at < run.length; at += BLOCK) await disk.read(run.offset + at, data.subarray(at, Math.min(run.length, at + BLOCK)));
      runs.push(data);
    }
  } finally {
    await disk.close();
  }
  return runs;
}

function stagesAlone(runs: Buffer[], level: number): { gear: number; sha256: number; zstd: number; bytes: number } {
  const params = chunkerParamsForAverage(256 << 10);
  let t = cpuSeconds();
  for (const run of runs) for (let at = 0; at < run.length; at += BLOCK) candidateCuts(run.subarray(at, Math.min(run.length, at + BLOCK)), params);
  const gear = cpuSeconds() - t;
  const chunks: Buffer[] = [];
  for (const run of runs) {
    const chunker = new StreamChunker(params);
    for (const c of chunker.push(run)) chunks.push(Buffer.from(c));
    const last = chunker.finish();
    if (last) chunks.push(Buffer.from(last));
  }
  t = cpuSeconds();
  const distinct = new Map<string, Buffer>();
  for (const c of chunks) distinct.set(createHash("sha256").update(c).digest("hex"), c);
  const sha256 = cpuSeconds() - t;
  t = cpuSeconds();
  for (const c of distinct.values()) zstdCompress(c, level);
  const zstd = cpuSeconds() - t;
  return { gear, sha256, zstd, bytes: runs.reduce((s, r) => s + r.length, 0) };
}

function timedBackup(descriptor: string, work: string, round: number): { wall: number; cpu: number } {
  const repo = join(work, `repo-${round}`);
  const state = join(work, `state-${round}`);
  const common = ["--repo", repo, "--state-dir", state];
  const env = { ...process.env, ...withBenchNode() };
  const init = spawnSync(PLOOPVAULT_CLI, ["init", ...common, "-q"], { env });
  if (init.status !== 0) throw new Error(`init: ${init.stderr}`);
  const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S", PLOOPVAULT_CLI, "backup", ...common, "--disk", descriptor, "--name", "101", "-q"], {
    encoding: "utf8",
    env,
  });
  if (r.status !== 0) throw new Error(`backup: ${r.stderr}`);
  const [wall, user, system] = r.stderr.trim().split("\n").pop()!.split(" ").map(Number);
  return { wall: wall!, cpu: user! + system! };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const roundsAt = argv.indexOf("--rounds");
  const rounds = roundsAt < 0 ? 3 : Number(argv[roundsAt + 1]);
  let descriptor = argv.find((a, i) => !a.startsWith("--") && argv[i - 1] !== "--rounds");
  if (descriptor === undefined) {
    const corpus = join(ROOT, ".tmp", "bench", "corpus");
    descriptor = join(corpus, "101", "root.hdd", "DiskDescriptor.xml");
    if (!existsSync(descriptor)) {
      process.stdout.write(`building the bench corpus in ${corpus} ...\n`);
      await buildCorpus(corpus, { scale: "bench" });
    }
  }
  const work = await mkdtemp(join(tmpdir(), "pv-efficiency-"));
  try {
    const runs = await allocatedData(descriptor);
    const cores = availableParallelism();
    const rows: string[] = [];
    const effs: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const stages = stagesAlone(runs, 3);
      const need = stages.gear + stages.sha256 + stages.zstd;
      const backup = timedBackup(descriptor, work, round);
      const efficiency = need / (cores * backup.wall);
      effs.push(efficiency);
      rows.push(
        `| ${round + 1} | ${(stages.bytes / 1e6).toFixed(0)} | ${stages.gear.toFixed(2)} | ${stages.sha256.toFixed(2)} | ${stages.zstd.toFixed(2)} | ${need.toFixed(2)} | ${backup.wall.toFixed(2)} | ${backup.cpu.toFixed(2)} | ${(backup.cpu / need).toFixed(2)} | ${efficiency.toFixed(2)} |`,
      );
    }
    effs.sort((a, b) => a - b);
    process.stdout.write(
      [
        `disk ${descriptor}, ${cores} cores`,
        "| round | MB | gear s | sha256 s | zstd -3 s | stages alone, CPU s | backup wall s | backup CPU s | CPU / stages | efficiency |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ...rows,
        `pipeline efficiency (median): ${effs[Math.floor(effs.length / 2)]!.toFixed(2)}   (stages' CPU alone / (cores x wall); target >= 0.6)`,
        "",
      ].join("\n"),
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
