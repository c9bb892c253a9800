/**
 * Issue 5's bench row: an incremental container backup (ploopvault reads only the
 * clusters written since the snapshot it kept) against restic re-backing up the same
 * change from the flattened raw disk.
 *
 *   npm run build && node dist/bench/incremental-backup.js [--size-gib 4] [--data-gib 1.5]
 *        [--change 0.01] [--work DIR] [--nice N] [--keep]
 *
 * 1. A container private area <work>/private/201 with a ploop v2 disk (1 MiB clusters) of
 *    --size-gib, holding --data-gib of data in runs of 8-64 clusters (a filesystem's
 *    extents): half text-like, a quarter incompressible, a quarter repeated blocks.
 * 2. ploopvault init + first backup in container mode (the real ploop through
 *    scripts/ploop-offline takes a snapshot and keeps it); restic backs up the disk
 *    flattened to a sparse raw file (flattening is not timed).
 * 3. One "day": --change of the data is rewritten as extents of 64 KiB-1 MiB at seeded
 *    random places, the way the kernel does it: whole clusters copied into the top delta.
 * 4. Second backups, timed: ploopvault (incremental) and restic of the re-flattened raw
 *    disk (same path). Target: ploopvault <= 0.05x restic's wall time.
 * 5. The incremental backup is restored as raw and compared with the flattened disk.
 * 6. As root: a second day of writes, backed up by both with the page cache dropped
 *    before each (a cron run at night), the same target.
 */
import { createCipheriv, createHash } from "node:crypto";
import { mkdir, open, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, setPriority } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { openLogicalDisk } from "../src/ploop/disk.js";
import { createPloopImageWriter, writeDescriptorFile } from "../src/ploop/writer.js";
import { sha256File } from "./lib/files.js";
import { TopDeltaWriter, topImagePath } from "./lib/delta-writes.js";
import { dropCaches, requireGnuTime, runMeasured, type Measured } from "./lib/measure.js";
import { containerBackupArgs } from "./lib/tools.js";
import { PLOOPVAULT_CLI, withBenchNode } from "./lib/ploopvault-command.js";

const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const PLOOP_OFFLINE = join(PROJECT_ROOT, "scripts/ploop-offline");
const MIB = 1 << 20;
const CLUSTER = MIB;
const CT = "201";
const ALPHABET = Buffer.from("etaoinshrdlu \n.,");

interface Args {
  sizeGiB: number;
  dataGiB: number;
  change: number;
  work: string;
  nice: number | null;
  keep: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { sizeGiB: 4, dataGiB: 1.5, change: 0.01, work: join(PROJECT_ROOT, ".tmp/bench-incremental"), nice: null, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v)) throw new Error(`${a} needs a number`);
      return v;
    };
    if (a === "--size-gib") args.sizeGiB = num();
    else if (a === "--data-gib") args.dataGiB = num();
    else if (a === "--change") args.change = num();
    else if (a === "--nice") args.nice = num();
    else if (a === "--work") args.work = resolve(argv[++i] ?? "");
    else if (a === "--keep") args.keep = true;
    else throw new Error(`unknown argument ${a} (see the header of bench/incremental-backup.ts)`);
  }
  if (args.dataGiB >= args.sizeGiB * 0.9) throw new Error("--data-gib must be well below --size-gib");
  if (!(args.change > 0 && args.change < 0.5)) throw new Error("--change must be between 0 and 0.5");
  return args;
}

/** Deterministic pseudo-random numbers (mulberry32). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function keystream(label: string, counter: number, into: Buffer): void {
  const key = createHash("sha256").update(`ploopvault incremental bench ${label}`).digest();
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(counter, 12);
  createCipheriv("aes-256-ctr", key, iv).update(Buffer.alloc(into.length)).copy(into);
}

/** Cluster content: half text-like, a quarter random, a quarter one of 64 repeated blocks. */
function clusterContent(cluster: number, into: Buffer): void {
  const kind = cluster % 4;
  keystream("data", kind === 3 ? 1_000_000 + (cluster % 64) : cluster, into);
  if (kind <= 1) for (let i = 0; i < into.length; i++) into[i] = ALPHABET[into[i]! & 15]!;
}

/** Allocated clusters: runs of 8-64 clusters with gaps, spread over the disk. */
function allocation(sizeBytes: number, dataBytes: number): number[] {
  const clusters = sizeBytes / CLUSTER;
  const wanted = Math.round(dataBytes / CLUSTER);
  const gapMean = Math.max(1, ((clusters - wanted) / wanted) * 36 * 0.85); // leaves room at the end
  const rnd = prng(201);
  const out: number[] = [];
  let c = Math.floor(rnd() * gapMean);
  while (out.length < wanted && c < clusters) {
    const run = 8 + Math.floor(rnd() * 57);
    for (let k = 0; k < run && out.length < wanted && c < clusters; k++) out.push(c++);
    c += 1 + Math.floor(rnd() * 2 * gapMean);
  }
  if (out.length < wanted) throw new Error("disk too small for the data");
  return out;
}

async function buildDisk(privateDir: string, sizeBytes: number, allocated: number[]): Promise<string> {
  const dir = join(privateDir, "root.hdd");
  await mkdir(dir, { recursive: true });
  const writer = await createPloopImageWriter(join(dir, "root.hds"), { sizeBytes, clusterBytes: CLUSTER, allocatedClusters: allocated });
  const buf = Buffer.allocUnsafe(CLUSTER);
  try {
    for (const c of allocated) {
      clusterContent(c, buf);
      await writer.write(c * CLUSTER, buf);
    }
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writeDescriptorFile(dir, { imageFile: "root.hds", sizeBytes, clusterBytes: CLUSTER });
  await writeFile(join(privateDir, "ve.conf"), `# bench container\nDISKSPACE="${sizeBytes / 1024}:${sizeBytes / 1024}"\nVE_LAYOUT="ploop"\n`);
  return join(dir, "DiskDescriptor.xml");
}

/** The logical disk as a sparse raw file (data at its offsets, holes left as holes). */
async function flatten(descriptorPath: string, out: string): Promise<void> {
  const disk = await openLogicalDisk(descriptorPath);
  await rm(out, { force: true });
  const fh = await open(out, "w");
  try {
    await fh.truncate(disk.sizeBytes);
    const buf = Buffer.allocUnsafe(8 * MIB);
    for (const run of disk.allocatedRuns()) {
      for (let at = run.offset; at < run.offset + run.length; at += buf.length) {
        const view = buf.subarray(0, Math.min(buf.length, run.offset + run.length - at));
        await disk.read(at, view);
        await fh.write(view, 0, view.length, at);
      }
    }
    await fh.sync();
  } finally {
    await fh.close();
    await disk.close();
  }
}

/** Day `dayNumber`'s writes: `changeBytes` in extents of 64 KiB-1 MiB inside allocated data. */
async function dayOfWrites(descriptorPath: string, allocated: number[], changeBytes: number, dayNumber: number): Promise<{ clusters: number; bytes: number }> {
  const rnd = prng(7 + dayNumber);
  const extents = new Map<number, { from: number; to: number }[]>();
  let bytes = 0;
  while (bytes < changeBytes) {
    const length = Math.min(changeBytes - bytes, 64 * 1024 + Math.floor(rnd() * (CLUSTER - 64 * 1024)));
    const start = allocated[Math.floor(rnd() * allocated.length)]! * CLUSTER + Math.floor(rnd() * CLUSTER);
    for (let at = start; at < start + length; ) {
      const c = Math.floor(at / CLUSTER);
      const end = Math.min(start + length, (c + 1) * CLUSTER);
      if (!extents.has(c)) extents.set(c, []);
      extents.get(c)!.push({ from: at - c * CLUSTER, to: end - c * CLUSTER });
      at = end;
    }
    bytes += length;
  }
  const disk = await openLogicalDisk(descriptorPath);
  const writer = await TopDeltaWriter.open(await topImagePath(descriptorPath));
  const cluster = Buffer.allocUnsafe(CLUSTER);
  const fresh = Buffer.allocUnsafe(CLUSTER);
  try {
    let n = 0;
    for (const [c, parts] of [...extents].sort((a, b) => a[0] - b[0])) {
      await disk.read(c * CLUSTER, cluster); // copy-on-write: the whole cluster goes up
      keystream(`day ${dayNumber}`, n++, fresh);
      for (const p of parts) fresh.copy(cluster, p.from, p.from, p.to);
      await writer.writeCluster(c, cluster);
    }
  } finally {
    await writer.close();
    await disk.close();
  }
  return { clusters: extents.size, bytes };
}

interface PvResult {
  measured: Measured;
  mode: string;
  readBytes: number;
  newBytesStored: number;
}

function pvResult(m: Measured): PvResult {
  const line = m.stdout.split("\n").find((l) => l.startsWith("{"));
  if (line === undefined) throw new Error(`ploopvault backup printed no JSON result:\n${m.stdout}\n${m.stderr}`);
  const r = JSON.parse(line) as { status?: string; error?: string; mode?: string; readBytes?: number; newBytesStored?: number };
  if (r.status !== undefined && r.status !== "ok") throw new Error(`ploopvault backup of ${CT} failed: ${r.error ?? line}`);
  return { measured: m, mode: r.mode ?? "?", readBytes: r.readBytes ?? 0, newBytesStored: r.newBytesStored ?? 0 };
}

function resticAdded(m: Measured): number | null {
  for (const line of m.stdout.split("\n")) {
    if (!line.includes('"summary"')) continue;
    const s = JSON.parse(line) as { message_type?: string; data_added?: number };
    if (s.message_type === "summary") return s.data_added ?? null;
  }
  return null;
}

const mb = (bytes: number | null): string => (bytes === null ? "-" : (bytes / 1e6).toFixed(1));
const secs = (m: Measured): string => m.seconds.toFixed(2);

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  await requireGnuTime();
  if (args.nice !== null) setPriority(0, args.nice);
  const log = (line: string): void => console.error(`[incremental] ${line}`);
  const work = args.work;
  await rm(work, { recursive: true, force: true });
  const privateRoot = join(work, "private");
  const repo = join(work, "repo");
  const state = join(work, "state");
  const raw = join(work, "disk.raw");
  const sizeBytes = Math.round((args.sizeGiB * 1024) / 1) * MIB;
  const allocated = allocation(sizeBytes, args.dataGiB * 1024 * MIB);
  const dataBytes = allocated.length * CLUSTER;

  let t = performance.now();
  const descriptor = await buildDisk(join(privateRoot, CT), sizeBytes, allocated);
  log(`built a ${args.sizeGiB} GiB disk with ${(dataBytes / MIB).toFixed(0)} MiB of data in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const pv = (cmdArgs: string[], label: string): Promise<Measured> => runMeasured(PLOOPVAULT_CLI, cmdArgs, work, { env: withBenchNode(), label });
  const backupArgs = containerBackupArgs({ cts: [CT], repo, stateDir: state, privateRoot, ploopBin: PLOOP_OFFLINE, json: true });
  const resticEnv = { RESTIC_REPOSITORY: join(work, "restic-repo"), RESTIC_PASSWORD: "ploopvault-bench", RESTIC_CACHE_DIR: join(work, "restic-cache") };
  const restic = (cmdArgs: string[], label: string): Promise<Measured> => runMeasured("restic", cmdArgs, work, { env: resticEnv, label });

  await pv(["init", "--repo", repo, "--state-dir", state, "-q"], "ploopvault init");
  const pv1 = pvResult(await pv(backupArgs, "ploopvault first backup"));
  log(`ploopvault first backup (${pv1.mode}): ${secs(pv1.measured)} s`);
  await flatten(descriptor, raw);
  await restic(["init", "--repository-version", "2"], "restic init");
  const r1 = await restic(["backup", "--host", "bench", "--compression", "auto", "--json", raw], "restic first backup");
  log(`restic first backup: ${secs(r1)} s`);

  t = performance.now();
  const day = await dayOfWrites(descriptor, allocated, Math.round(args.change * dataBytes), 1);
  log(
    `a day of writes: ${(day.bytes / MIB).toFixed(1)} MiB rewritten, ${day.clusters} clusters copied into the top delta, in ${((performance.now() - t) / 1000).toFixed(1)} s`,
  );
  await flatten(descriptor, raw);
  const rawSha = await sha256File(raw);

  const pv2 = pvResult(await pv(backupArgs, "ploopvault second backup"));
  log(`ploopvault second backup (${pv2.mode}): ${secs(pv2.measured)} s`);
  const r2 = await restic(["backup", "--host", "bench", "--compression", "auto", "--json", raw], "restic second backup");
  log(`restic second backup: ${secs(r2)} s`);
  if (pv2.mode !== "incremental") throw new Error(`the second ploopvault backup was ${pv2.mode}, not incremental`);

  const restored = join(work, "restored.raw");
  await pv(["restore", "--repo", repo, "--state-dir", state, `${CT}:latest`, "--format", "raw", "--target", restored, "-q"], "ploopvault restore");
  const restoredSha = await sha256File(restored);
  if (restoredSha !== rawSha) throw new Error(`the incremental backup restores to SHA-256 ${restoredSha}, the disk is ${rawSha}`);
  log("the incremental backup restores bit-identical to the disk");

  // A second day, backed up with a cold page cache (dropped before each tool), as a cron
  // run at night meets it; needs root.
  let cold: { pv: PvResult; restic: Measured; clusters: number } | null = null;
  if (dropCaches()) {
    const day2 = await dayOfWrites(descriptor, allocated, Math.round(args.change * dataBytes), 2);
    await flatten(descriptor, raw);
    dropCaches();
    const pv3 = pvResult(await pv(backupArgs, "ploopvault third backup (cold cache)"));
    log(`ploopvault third backup (${pv3.mode}, cold cache): ${secs(pv3.measured)} s`);
    dropCaches();
    const r3 = await restic(["backup", "--host", "bench", "--compression", "auto", "--json", raw], "restic third backup (cold cache)");
    log(`restic third backup (cold cache): ${secs(r3)} s`);
    if (pv3.mode !== "incremental") throw new Error(`the third ploopvault backup was ${pv3.mode}, not incremental`);
    cold = { pv: pv3, restic: r3, clusters: day2.clusters };
  } else log("not root: no cold-cache round (it drops the page cache)");

  const ratio = pv2.measured.seconds / r2.seconds;
  const coldRatio = cold === null ? null : cold.pv.measured.seconds / cold.restic.seconds;
  const lines = [
    `Command: \`node dist/bench/incremental-backup.js ${process.argv.slice(2).join(" ")}\``.replace(/ `$/, "`"),
    "",
    `Run ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC; ${cpus().length} cores; load average ${loadavg()[0]!.toFixed(2)} at the end.`,
    `Disk: ${args.sizeGiB} GiB virtual, ${(dataBytes / 1e6).toFixed(0)} MB of data; a day rewrote ${(day.bytes / 1e6).toFixed(1)} MB (${(args.change * 100).toFixed(1)} %) in ${day.clusters} clusters, so the top delta holds ${((day.clusters * CLUSTER) / 1e6).toFixed(0)} MB.`,
    "",
    "| backup | wall s | peak RSS MiB | read MB | added MB (ploopvault: stored, compressed; restic: data_added, before compression) |",
    "| --- | ---: | ---: | ---: | ---: |",
    `| ploopvault, first (${pv1.mode}) | ${secs(pv1.measured)} | ${pv1.measured.peakRssMiB.toFixed(0)} | ${mb(pv1.readBytes)} | ${mb(pv1.newBytesStored)} |`,
    `| restic, first (raw disk) | ${secs(r1)} | ${r1.peakRssMiB.toFixed(0)} | ${mb(sizeBytes)} | ${mb(resticAdded(r1))} |`,
    `| ploopvault, second (${pv2.mode}) | ${secs(pv2.measured)} | ${pv2.measured.peakRssMiB.toFixed(0)} | ${mb(pv2.readBytes)} | ${mb(pv2.newBytesStored)} |`,
    `| restic, second (raw disk) | ${secs(r2)} | ${r2.peakRssMiB.toFixed(0)} | ${mb(sizeBytes)} | ${mb(resticAdded(r2))} |`,
    ...(cold === null
      ? []
      : [
          `| ploopvault, third (${cold.pv.mode}, cold cache, ${cold.clusters} clusters written) | ${secs(cold.pv.measured)} | ${cold.pv.measured.peakRssMiB.toFixed(0)} | ${mb(cold.pv.readBytes)} | ${mb(cold.pv.newBytesStored)} |`,
          `| restic, third (raw disk, cold cache) | ${secs(cold.restic)} | ${cold.restic.peakRssMiB.toFixed(0)} | ${mb(sizeBytes)} | ${mb(resticAdded(cold.restic))} |`,
        ]),
    "",
    `Second backup, ploopvault / restic: **${ratio.toFixed(3)}x** (target <= 0.05x: ${ratio <= 0.05 ? "met" : "**not met**"}). The incremental backup restored bit-identical.`,
    ...(coldRatio === null
      ? []
      : [`Third backup, page cache dropped before each tool: **${coldRatio.toFixed(3)}x** (target <= 0.05x: ${coldRatio <= 0.05 ? "met" : "**not met**"}).`]),
  ];
  console.log(lines.join("\n"));
  if (!args.keep) await rm(work, { recursive: true, force: true });
}

main().catch((error: unknown) => {
  console.error(`incremental bench: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
