/**
 * backup --skip-free on an aged disk (issue 15 item 5): stored bytes and backup time with
 * and without the flag, against restic backing up the same disk as a raw file.
 *
 *   npm run build && node dist/bench/skip-free.js [--size-mib 1024] [--rounds 2] [--work DIR] [--keep]
 *
 * 1. The aged disk (scripts/aged-disk.ts): GPT + ext4 at 1 MiB, 60 % of it written with
 *    files by debugfs, two of every three deleted, a third of the deleted bytes written
 *    again; made into a ploop v2 image (1 MiB clusters, zero clusters unallocated).
 * 2. Each round, in turn, into fresh repositories: ploopvault backup --disk (default),
 *    ploopvault backup --disk --skip-free, restic backup of the raw disk (sparse file).
 *    Page cache warm (the disk was just written); medians over rounds.
 * 3. The --skip-free backup is restored as raw; e2fsck -fn of its partition must be clean.
 */
import { mkdir, rm, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { buildAgedDisk, e2fsckClean, type AgedDisk } from "../scripts/aged-disk.js";
import { writeDescriptorFile, writeImageFromRaw } from "../src/ploop/writer.js";
import { MB, treeSize } from "./lib/files.js";
import { requireGnuTime, runMeasured, type Measured } from "./lib/measure.js";

const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = join(PROJECT_ROOT, "dist/src/cli.js");

interface Args {
  sizeMiB: number;
  rounds: number;
  work: string;
  keep: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { sizeMiB: 1024, rounds: 2, work: join(PROJECT_ROOT, ".tmp/bench-skip-free"), keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === "--size-mib") args.sizeMiB = num();
    else if (a === "--rounds") args.rounds = num();
    else if (a === "--work") args.work = resolve(argv[++i] ?? "");
    else if (a === "--keep") args.keep = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return args;
}

interface Row {
  label: string;
  runs: Measured[];
  readBytes: number[];
  storedBytes: number[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  await requireGnuTime();
  await rm(args.work, { recursive: true, force: true });
  await mkdir(args.work, { recursive: true });
  const log = (line: string): void => console.error(`[skip-free] ${line}`);

  log(`building the aged disk (${args.sizeMiB} MiB)`);
  const aged: AgedDisk = await buildAgedDisk(args.work, "aged", { sizeMiB: args.sizeMiB });
  await rm(join(args.work, "aged-src"), { recursive: true, force: true });
  const hdd = join(args.work, "ct", "root.hdd");
  await mkdir(hdd, { recursive: true });
  const image = await writeImageFromRaw(aged.raw, join(hdd, "root.hds"), { version: 2, clusterBytes: 1 << 20, skipZeroClusters: true });
  const dd = await writeDescriptorFile(hdd, { imageFile: "root.hds", sizeBytes: image.sizeBytes, clusterBytes: 1 << 20 });
  const allocated = (await stat(join(hdd, "root.hds"))).blocks * 512;
  const df = (await execa("dumpe2fs", ["-h", `${aged.raw}?offset=${aged.fsOffset}`])).stdout;
  const blocks = Number(/Block count:\s+(\d+)/.exec(df)![1]);
  const freeBlocks = Number(/Free blocks:\s+(\d+)/.exec(df)![1]);
  log(`ploop image: ${(allocated / MB).toFixed(1)} MB allocated; ext4: ${(((blocks - freeBlocks) * 4096) / MB).toFixed(1)} MB in use`);

  const rows: Row[] = [
    { label: "ploopvault backup --disk", runs: [], readBytes: [], storedBytes: [] },
    { label: "ploopvault backup --disk --skip-free", runs: [], readBytes: [], storedBytes: [] },
    { label: "restic backup (raw disk)", runs: [], readBytes: [], storedBytes: [] },
  ];
  let skippedFree = 0;
  let lastFreeRepo = "";
  for (let round = 0; round < args.rounds; round++) {
    for (const [i, row] of rows.entries()) {
      const repo = join(args.work, `repo-${round}-${i}`);
      if (i < 2) {
        const state = join(args.work, `state-${round}-${i}`);
        await runMeasured(process.execPath, [CLI, "init", "--repo", repo, "--state-dir", state], args.work, { label: "ploopvault init" });
        const m = await runMeasured(
          process.execPath,
          [CLI, "backup", "--repo", repo, "--state-dir", state, "--disk", dd, "--name", "aged", "--json", ...(i === 1 ? ["--skip-free"] : [])],
          args.work,
          { label: row.label },
        );
        const result = JSON.parse(m.stdout.trim().split("\n").pop()!) as { readBytes: number; skippedFreeBytes?: number };
        row.runs.push(m);
        row.readBytes.push(result.readBytes);
        if (i === 1) {
          skippedFree = result.skippedFreeBytes ?? 0;
          lastFreeRepo = repo;
        }
      } else {
        const env = { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: "ploopvault-bench", RESTIC_CACHE_DIR: join(args.work, `restic-cache-${round}`) };
        await runMeasured("restic", ["init", "--repository-version", "2"], args.work, { env, label: "restic init" });
        const m = await runMeasured("restic", ["backup", "--host", "bench", "--compression", "auto", "--json", aged.raw], args.work, { env, label: row.label });
        row.runs.push(m);
        row.readBytes.push(args.sizeMiB * (1 << 20));
      }
      row.storedBytes.push((await treeSize(repo)).bytes);
      log(
        `round ${round + 1}: ${row.label}: ${row.runs[row.runs.length - 1]!.seconds.toFixed(2)} s, ${(row.storedBytes[row.storedBytes.length - 1]! / MB).toFixed(1)} MB stored`,
      );
    }
  }

  // the --skip-free backup must restore to a clean filesystem
  const restored = join(args.work, "restored.raw");
  await execa(process.execPath, [
    CLI,
    "restore",
    "--repo",
    lastFreeRepo,
    "--state-dir",
    join(args.work, "state-restore"),
    "aged",
    "--format",
    "raw",
    "--target",
    restored,
  ]);
  const fsck = await e2fsckClean(restored, aged.fsOffset);
  if (fsck.code !== 0) throw new Error(`e2fsck -fn of the restored --skip-free backup failed:\n${fsck.output}`);

  const restic = rows[2]!;
  const resticWall = median(restic.runs.map((r) => r.seconds));
  const resticStored = median(restic.storedBytes);
  const resticCpu = median(restic.runs.map((r) => r.userSeconds + r.sysSeconds));
  const lines = [
    `Aged disk: ${args.sizeMiB} MiB, GPT + ext4 at 1 MiB; ploop image ${(allocated / MB).toFixed(1)} MB allocated, ext4 ${(((blocks - freeBlocks) * 4096) / MB).toFixed(1)} MB in use; --skip-free skipped ${(skippedFree / MB).toFixed(1)} MB (${((100 * skippedFree) / allocated).toFixed(0)} % of the allocated clusters). Medians of ${args.rounds} rounds, page cache warm, local repositories.`,
    "",
    "| backup | wall s | CPU s | other CPU s (noise) | peak RSS MiB | read MB | stored MB | wall / restic | CPU / restic | stored / restic |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((row) => {
      const wall = median(row.runs.map((r) => r.seconds));
      const cpu = median(row.runs.map((r) => r.userSeconds + r.sysSeconds));
      const rss = Math.max(...row.runs.map((r) => r.peakRssMiB));
      const stored = median(row.storedBytes);
      const other = median(row.runs.map((r) => r.otherCpuSeconds));
      return `| ${row.label} | ${wall.toFixed(2)} | ${cpu.toFixed(2)} | ${other.toFixed(1)} | ${rss.toFixed(0)} | ${(median(row.readBytes) / MB).toFixed(1)} | ${(stored / MB).toFixed(1)} | ${(wall / resticWall).toFixed(2)}x | ${(cpu / resticCpu).toFixed(2)}x | ${(stored / resticStored).toFixed(2)}x |`;
    }),
    "",
    "The --skip-free backup restored as raw: e2fsck -fn clean.",
  ];
  console.log(lines.join("\n"));
  if (!args.keep) await rm(args.work, { recursive: true, force: true });
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
