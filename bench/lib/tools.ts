/**
 * The three tools behind one interface: a Target is one fresh repository of one tool fed
 * with one kind of input, able to back up all corpus disks, restore one, and say how big
 * its repository is. Every timed command runs under runMeasured (GNU time).
 *
 * Options chosen for a fair comparison (docs/performance.md explains them):
 *   ploopvault  --disk DiskDescriptor.xml per disk, defaults (256 KiB chunks, zstd 3,
 *               a worker thread per core, 8 uploads in flight), no encryption, and
 *               --no-ionice: the same I/O priority as the other tools (by default a
 *               backup drops to the idle I/O class, which only matters on a busy disk)
 *   restic      repository version 2, --compression auto (zstd), RESTIC_PASSWORD
 *               (restic always encrypts: AES-256-CTR + Poly1305)
 *   borg        --encryption none (like ploopvault), --compression zstd,3, default chunker
 * Restores are made durable the same way for every tool: the tool's own run, then
 * `sync FILE` (ploopvault already fsyncs; restic and borg do not).
 */
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { execa } from "execa";
import { openLogicalDisk } from "../../src/ploop/disk.js";
import { TopDeltaWriter, topImagePath } from "./delta-writes.js";
import { sha256File, treeSize } from "./files.js";
import { combine, runMeasured, type Measured } from "./measure.js";
import { bucketSize, type RgwServer } from "./s3.js";
import { withBenchNode } from "./ploopvault-command.js";

/**
 * `ploopvault backup CT...` in container mode on a private area, as the benches run it: no
 * vzlist (the containers are found under --private-root), the given ploop, and the normal
 * I/O class like the other tools.
 */
export function containerBackupArgs(o: {
  cts: readonly string[];
  repo: string;
  stateDir: string;
  privateRoot: string;
  ploopBin: string;
  json?: boolean;
  /** Default: none (containers found under privateRoot, status unknown). */
  vzlistBin?: string;
}): string[] {
  return [
    "backup",
    ...o.cts,
    "--repo",
    o.repo,
    "--state-dir",
    o.stateDir,
    "--private-root",
    o.privateRoot,
    "--vzlist-bin",
    o.vzlistBin ?? "/nonexistent/vzlist",
    "--ploop-bin",
    o.ploopBin,
    "--no-ionice",
    ...(o.json === true ? ["--json"] : []),
    "-q",
  ];
}

export type ToolName = "ploopvault" | "restic" | "borg";
export const TOOL_NAMES: readonly ToolName[] = ["ploopvault", "restic", "borg"];
/**
 * ploop: the ploop disk itself (ploopvault --disk); container: ploopvault's container mode
 * (ploop snapshot, kept delta, incremental re-backups); raw: ploop's flattening of the
 * disk to a raw file; image: the root.hds image files as files.
 */
export type InputKind = "ploop" | "container" | "raw" | "image";

export interface BenchDisk {
  ct: string;
  descriptorPath: string;
  imagePath: string;
  /** Flattened logical disk (sparse raw file), when generic tools run on raw input. */
  rawPath?: string;
  /** SHA-256 of the logical disk. */
  sha256: string;
  /** Bytes of allocated clusters (the disk's data, holes excluded). */
  dataBytes: number;
  virtualBytes: number;
}

export interface ToolEnv {
  /** Scratch directory for repositories, caches, restores. */
  work: string;
  /** scripts/ploop-offline (container mode drives ploop through it). */
  ploopBin: string;
  /** The command and its first arguments (bench/lib/ploopvault-command.ts; run with withBenchNode()). */
  ploopvault: string[];
  s3: RgwServer | null;
}

export interface RepoSize {
  bytes: number;
  /** Allocated on disk (local repositories only). */
  diskBytes: number | null;
  objects: number;
}

export interface BackupStep {
  measured: Measured;
  /** With --repeat: fastest and slowest wall time of the repetitions, and how many. */
  range?: [number, number];
  runs?: number;
  /** Container mode: "full" / "incremental" per container. */
  modes?: string[];
  /** Bytes the tool reports it added to the repository (ploopvault: compressed chunks; restic: data_added). */
  addedBytes: number | null;
  /** ploopvault only: chunks written. */
  newChunks: number | null;
  /** ploopvault only: the pipeline's own seconds (its JSON "seconds": after start-up and key derivation). */
  pipelineSeconds?: number;
}

export interface RestoreStep {
  measured: Measured;
  range?: [number, number];
  runs?: number;
  /** Part of `measured` spent in `sync FILE` after the tool exited. */
  syncSeconds: number;
  /** ploopvault only: the restore's own seconds (its JSON "seconds"). */
  pipelineSeconds?: number;
  /** The restored file (raw disk, or the image file for input "image"). */
  file: string;
}

/**
 * Issue 15's seeded restore: the disk changed on ~1 % of its data clusters and backed up
 * again; its restore into a new file (the baseline) and over yesterday's restored file
 * with `--seed` on it.
 */
export interface SeededRestoreStep {
  unseeded: RestoreStep;
  seeded: RestoreStep;
  /** `restore --in-place` over another copy of yesterday's file (absent in reports from before it). */
  inPlace?: RestoreStep;
  fetchedInPlace?: number;
  /** Bytes the in-place restore wrote (only the 4 KiB blocks that differ). */
  writtenInPlace?: number;
  /** Data clusters rewritten with random bytes, of all allocated clusters. */
  changedClusters: number;
  allocatedClusters: number;
  chunks: number;
  fetchedUnseeded: number;
  fetchedSeeded: number;
  /** All restores gave the same file. */
  verified: boolean;
}

export interface Target {
  readonly tool: ToolName;
  readonly encrypted?: boolean;
  readonly input: InputKind;
  readonly store: "local" | "s3";
  readonly label: string;
  init(): Promise<void>;
  /** Untimed preparation after init (container mode: copy the corpus into a private area). */
  prepare?(disks: readonly BenchDisk[]): Promise<void>;
  backup(disks: readonly BenchDisk[]): Promise<BackupStep>;
  restore(disk: BenchDisk, outDir: string): Promise<RestoreStep>;
  /** ploopvault: change ~1 % of the disk, back it up, restore it with and without yesterday's `seedFile`. */
  seededRestore?(disk: BenchDisk, outDir: string, seedFile: string): Promise<SeededRestoreStep>;
  repoSize(): Promise<RepoSize>;
  /** The paths whose content the tool reads (for cache warming). */
  inputs(disks: readonly BenchDisk[]): string[];
  /** The files a "next day" touches (new mtime/ctime, same content). */
  touched(disks: readonly BenchDisk[]): string[];
  cleanup(): Promise<void>;
}

export async function toolVersion(tool: ToolName, env: ToolEnv): Promise<string | null> {
  const [cmd, ...args] = tool === "ploopvault" ? [...env.ploopvault, "--version"] : tool === "restic" ? ["restic", "version"] : ["borg", "--version"];
  const r = await execa(cmd!, args, { reject: false, env: withBenchNode() });
  if (r.exitCode !== 0) return null;
  return String(r.stdout).trim().split("\n")[0]!;
}

export const INSTALL_HINT: Record<ToolName, string> = {
  ploopvault: "npm run build",
  restic: "apt-get install restic",
  borg: "apt-get install borgbackup",
};

function s3Env(s3: RgwServer): Record<string, string> {
  return { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_DEFAULT_REGION: s3.region };
}

/** `sync FILE` (fsync of that file), measured, so restores end durable for every tool. */
async function syncFile(file: string, tmp: string, ownPids?: () => number[]): Promise<Measured> {
  return runMeasured("sync", [file], tmp, { label: `sync ${file}`, ...(ownPids ? { ownPids } : {}) });
}

function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(16).slice(2, 6)}`;
}

// ---------------------------------------------------------------------------------------

class PloopvaultTarget implements Target {
  readonly tool = "ploopvault" as const;
  readonly input = "ploop" as const;
  readonly label: string;
  private readonly dir: string;
  private readonly repo: string;
  private readonly stateDir: string;
  private readonly env: Record<string, string>;
  private readonly bucket: string | null;

  constructor(
    private readonly tenv: ToolEnv,
    readonly store: "local" | "s3",
    /** init --encrypt (AES-256-GCM, HMAC-SHA256 ids), password from PLOOPVAULT_PASSWORD. */
    readonly encrypted = false,
  ) {
    this.label = `ploopvault${encrypted ? ", encrypted" : ""} (${store})`;
    this.dir = join(tenv.work, uniqueName(`pv-${store}`));
    this.stateDir = join(this.dir, "state");
    const password: Record<string, string> = encrypted ? { PLOOPVAULT_PASSWORD: "ploopvault-bench" } : {};
    if (store === "s3") {
      if (!tenv.s3) throw new Error("no S3 server");
      this.bucket = uniqueName("pv");
      this.repo = `s3://${this.bucket}`;
      this.env = { ...s3Env(tenv.s3), ...password };
    } else {
      this.bucket = null;
      this.repo = join(this.dir, "repo");
      this.env = password;
    }
  }

  private args(cmd: string, ...rest: string[]): string[] {
    const endpoint = this.store === "s3" ? ["--endpoint", this.tenv.s3!.endpoint] : [];
    return [...this.tenv.ploopvault.slice(1), cmd, "--repo", this.repo, ...endpoint, "--state-dir", this.stateDir, ...rest];
  }

  private run(args: string[], label: string): Promise<Measured> {
    const pids = this.tenv.s3?.pids;
    return runMeasured(this.tenv.ploopvault[0]!, args, this.dir, {
      env: withBenchNode(this.env),
      label,
      ...(this.store === "s3" && pids ? { ownPids: pids } : {}),
    });
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.run(this.args("init", "-q", ...(this.encrypted ? ["--encrypt"] : [])), "ploopvault init");
  }

  async backup(disks: readonly BenchDisk[]): Promise<BackupStep> {
    const runs: Measured[] = [];
    let added = 0;
    let newChunks = 0;
    let pipelineSeconds = 0;
    // One command for all disks, as restic and borg get all their input files in one.
    const diskArgs = disks.flatMap((d) => ["--disk", d.descriptorPath]);
    const m = await this.run(this.args("backup", ...diskArgs, "--no-ionice", "--json", "-q"), `ploopvault backup ${diskArgs.join(" ")}`);
    for (const line of m.stdout.split("\n")) {
      if (!line.startsWith("{")) continue;
      const r = JSON.parse(line) as { newBytesStored?: number; newChunks?: number; seconds?: number };
      added += r.newBytesStored ?? 0;
      newChunks += r.newChunks ?? 0;
      pipelineSeconds += r.seconds ?? 0;
    }
    runs.push(m);
    return { measured: combine(runs), addedBytes: added, newChunks, pipelineSeconds };
  }

  async restore(disk: BenchDisk, outDir: string): Promise<RestoreStep> {
    await mkdir(outDir, { recursive: true });
    const file = join(outDir, `${disk.ct}.raw`);
    const m = await this.run(this.args("restore", `${disk.ct}:latest`, "--format", "raw", "--target", file, "--json", "-q"), "ploopvault restore");
    const s = await syncFile(file, this.dir);
    const line = m.stdout.split("\n").find((l) => l.startsWith("{"));
    const pipelineSeconds = line === undefined ? undefined : (JSON.parse(line) as { seconds?: number }).seconds;
    return { measured: combine([m, s]), syncSeconds: s.seconds, file, ...(pipelineSeconds === undefined ? {} : { pipelineSeconds }) };
  }

  async seededRestore(disk: BenchDisk, outDir: string, seedFile: string): Promise<SeededRestoreStep> {
    // Untimed: a private copy of the disk with every 100th allocated cluster rewritten.
    const copyDir = join(this.dir, "changed", disk.ct);
    await mkdir(dirname(copyDir), { recursive: true });
    const cp = await execa("cp", ["-a", "--reflink=auto", dirname(dirname(disk.descriptorPath)), copyDir], { reject: false });
    if (cp.exitCode !== 0) throw new Error(`copying ${disk.ct} failed: ${String(cp.stderr).trim()}`);
    const descriptor = join(copyDir, relative(dirname(dirname(disk.descriptorPath)), disk.descriptorPath));
    const logical = await openLogicalDisk(descriptor);
    const clusters: number[] = [];
    for (const run of logical.allocatedRuns())
      for (let at = run.offset; at < run.offset + run.length; at += logical.clusterBytes) clusters.push(at / logical.clusterBytes);
    await logical.close();
    const changed = clusters.filter((_, i) => i % 100 === 50);
    const writer = await TopDeltaWriter.open(await topImagePath(descriptor));
    try {
      for (const c of changed) await writer.writeCluster(c, randomBytes(writer.clusterBytes));
    } finally {
      await writer.close();
    }
    await this.run(this.args("backup", "--disk", descriptor, "--name", disk.ct, "--no-ionice", "-q"), "ploopvault backup (changed disk)");
    const restoreJson = (m: Measured): { chunks: number; fetchedChunks: number; seconds: number } =>
      JSON.parse(m.stdout.split("\n").find((l) => l.startsWith("{")) ?? "{}") as { chunks: number; fetchedChunks: number; seconds: number };
    // Timed: today's backup into a new file, then over yesterday's file seeded by it.
    const fresh = join(outDir, `${disk.ct}-today.raw`);
    const m1 = await this.run(
      this.args("restore", `${disk.ct}:latest`, "--format", "raw", "--target", fresh, "--json", "-q"),
      "ploopvault restore (changed disk)",
    );
    const s1 = await syncFile(fresh, this.dir);
    // Untimed: a second copy of yesterday's file for the in-place restore (sparse, as restored).
    const inPlaceFile = join(outDir, `${disk.ct}-inplace.raw`);
    await execa("cp", ["--sparse=always", seedFile, inPlaceFile]);
    await syncFile(inPlaceFile, this.dir);
    const m2 = await this.run(
      this.args("restore", `${disk.ct}:latest`, "--format", "raw", "--target", seedFile, "--force", "--seed", seedFile, "--json", "-q"),
      "ploopvault restore --seed (changed disk)",
    );
    const s2 = await syncFile(seedFile, this.dir);
    const m3 = await this.run(
      this.args("restore", `${disk.ct}:latest`, "--format", "raw", "--target", inPlaceFile, "--force", "--in-place", "--json", "-q"),
      "ploopvault restore --in-place (changed disk)",
    );
    const s3 = await syncFile(inPlaceFile, this.dir);
    const [r1, r2] = [restoreJson(m1), restoreJson(m2)];
    const r3 = JSON.parse(m3.stdout.split("\n").find((l) => l.startsWith("{")) ?? "{}") as { fetchedChunks: number; seconds: number; writtenBytes: number };
    const todaySha = await sha256File(fresh);
    const verified = todaySha === (await sha256File(seedFile)) && todaySha === (await sha256File(inPlaceFile));
    await rm(fresh, { force: true });
    await rm(inPlaceFile, { force: true });
    return {
      unseeded: { measured: combine([m1, s1]), syncSeconds: s1.seconds, file: fresh, pipelineSeconds: r1.seconds },
      seeded: { measured: combine([m2, s2]), syncSeconds: s2.seconds, file: seedFile, pipelineSeconds: r2.seconds },
      inPlace: { measured: combine([m3, s3]), syncSeconds: s3.seconds, file: inPlaceFile, pipelineSeconds: r3.seconds },
      fetchedInPlace: r3.fetchedChunks,
      writtenInPlace: r3.writtenBytes,
      changedClusters: changed.length,
      allocatedClusters: clusters.length,
      chunks: r2.chunks,
      fetchedUnseeded: r1.fetchedChunks,
      fetchedSeeded: r2.fetchedChunks,
      verified,
    };
  }

  async repoSize(): Promise<RepoSize> {
    if (this.bucket !== null) return { ...(await bucketSize(this.tenv.s3!, this.bucket)), diskBytes: null };
    const t = await treeSize(this.repo);
    return { bytes: t.bytes, diskBytes: t.diskBytes, objects: t.files };
  }

  inputs(disks: readonly BenchDisk[]): string[] {
    return disks.map((d) => d.imagePath);
  }

  touched(disks: readonly BenchDisk[]): string[] {
    return this.inputs(disks);
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * ploopvault's container mode on a copy of the corpus laid out as a private area: one
 * run backs up all containers, each through a ploop snapshot (scripts/ploop-offline) that
 * is kept as the base of the next, incremental backup. A "next day" with no writes into
 * the containers touches nothing: the base images of a running container do not change,
 * only its top delta does. A vzlist stub says every container runs, so each backup takes a
 * ploop snapshot as on a live node (a stopped, unchanged container is backed up from its
 * kept snapshot without any ploop call: docs/incremental.md; bench/startup.ts measures both).
 */
class PloopvaultContainerTarget implements Target {
  readonly tool = "ploopvault" as const;
  readonly input = "container" as const;
  readonly store = "local" as const;
  readonly label = "ploopvault, container mode (local)";
  private readonly dir: string;
  private readonly repo: string;
  private readonly stateDir: string;
  private readonly privateRoot: string;
  private readonly vzlistBin: string;

  constructor(private readonly tenv: ToolEnv) {
    this.dir = join(tenv.work, uniqueName("pv-ct"));
    this.repo = join(this.dir, "repo");
    this.stateDir = join(this.dir, "state");
    this.privateRoot = join(this.dir, "private");
    this.vzlistBin = join(this.dir, "vzlist-running");
  }

  private run(args: string[], label: string): Promise<Measured> {
    return runMeasured(this.tenv.ploopvault[0]!, [...this.tenv.ploopvault.slice(1), ...args], this.dir, { label });
  }

  private copyOf(d: BenchDisk): string {
    return join(this.privateRoot, d.ct, "root.hdd", "root.hds");
  }

  /** Untimed: the private area is a copy of the corpus (the corpus itself stays untouched), and the vzlist stub. */
  async prepare(disks: readonly BenchDisk[]): Promise<void> {
    for (const d of disks) {
      const r = await execa("cp", ["-a", "--reflink=auto", dirname(dirname(d.descriptorPath)), join(this.privateRoot, d.ct)], { reject: false });
      if (r.exitCode !== 0) throw new Error(`copying ${d.ct} into ${this.privateRoot} failed: ${String(r.stderr).trim()}`);
    }
    // The copy's dirty pages are the bench's own set-up: written back here, or the first merge
    // of each base image (ploop fsyncs it) pays for them inside a timed run (~0.19 s per disk,
    // 2026-12-04), which a container's long-written base image never costs.
    const synced = await execa("sync", ["-f", this.privateRoot], { reject: false });
    if (synced.exitCode !== 0) throw new Error(`sync -f ${this.privateRoot} failed: ${String(synced.stderr).trim()}`);
    const rows = disks.map((d) => `echo '${d.ct} ${join(this.privateRoot, d.ct)} running'`);
    await writeFile(this.vzlistBin, `#!/bin/sh\n${rows.join("\n")}\n`, { mode: 0o755 });
  }

  async init(): Promise<void> {
    await mkdir(this.privateRoot, { recursive: true });
    await this.run(["init", "--repo", this.repo, "--state-dir", this.stateDir, "-q"], "ploopvault init");
  }

  async backup(disks: readonly BenchDisk[]): Promise<BackupStep> {
    const args = containerBackupArgs({
      cts: disks.map((d) => d.ct),
      repo: this.repo,
      stateDir: this.stateDir,
      privateRoot: this.privateRoot,
      ploopBin: this.tenv.ploopBin,
      vzlistBin: this.vzlistBin,
      json: true,
    });
    const m = await this.run(args, "ploopvault backup CTID...");
    let added = 0;
    let newChunks = 0;
    const modes: string[] = [];
    for (const line of m.stdout.split("\n")) {
      if (!line.startsWith("{")) continue;
      const r = JSON.parse(line) as { newBytesStored?: number; newChunks?: number; mode?: string; status?: string; error?: string };
      if (r.status !== undefined && r.status !== "ok") throw new Error(`container backup failed: ${r.error ?? line}`);
      added += r.newBytesStored ?? 0;
      newChunks += r.newChunks ?? 0;
      if (r.mode !== undefined) modes.push(r.mode);
    }
    return { measured: m, addedBytes: added, newChunks, ...(modes.length > 0 ? { modes } : {}) };
  }

  async restore(disk: BenchDisk, outDir: string): Promise<RestoreStep> {
    await mkdir(outDir, { recursive: true });
    const file = join(outDir, `${disk.ct}.raw`);
    const m = await this.run(
      ["restore", "--repo", this.repo, "--state-dir", this.stateDir, `${disk.ct}:latest`, "--format", "raw", "--target", file, "-q"],
      "ploopvault restore",
    );
    const s = await syncFile(file, this.dir);
    return { measured: combine([m, s]), syncSeconds: s.seconds, file };
  }

  async repoSize(): Promise<RepoSize> {
    const t = await treeSize(this.repo);
    return { bytes: t.bytes, diskBytes: t.diskBytes, objects: t.files };
  }

  inputs(disks: readonly BenchDisk[]): string[] {
    return disks.map((d) => this.copyOf(d));
  }

  touched(): string[] {
    return [];
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

class ResticTarget implements Target {
  readonly tool = "restic" as const;
  readonly label: string;
  private readonly dir: string;
  private readonly env: Record<string, string>;
  private readonly bucket: string | null;

  constructor(
    private readonly tenv: ToolEnv,
    readonly input: "raw" | "image",
    readonly store: "local" | "s3",
  ) {
    this.label = `restic, ${input} (${store})`;
    this.dir = join(tenv.work, uniqueName(`restic-${input}-${store}`));
    let repository: string;
    if (store === "s3") {
      if (!tenv.s3) throw new Error("no S3 server");
      this.bucket = uniqueName("restic");
      repository = `s3:${tenv.s3.endpoint}/${this.bucket}`;
    } else {
      this.bucket = null;
      repository = join(this.dir, "repo");
    }
    this.env = {
      RESTIC_REPOSITORY: repository,
      RESTIC_PASSWORD: "ploopvault-bench",
      RESTIC_CACHE_DIR: join(this.dir, "cache"),
      ...(tenv.s3 && store === "s3" ? s3Env(tenv.s3) : {}),
    };
  }

  private run(args: string[], label: string, cwd?: string): Promise<Measured> {
    const pids = this.tenv.s3?.pids;
    return runMeasured("restic", args, this.dir, { env: this.env, label, ...(cwd ? { cwd } : {}), ...(this.store === "s3" && pids ? { ownPids: pids } : {}) });
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.run(["init", "--repository-version", "2"], "restic init");
  }

  async backup(disks: readonly BenchDisk[]): Promise<BackupStep> {
    const m = await this.run(["backup", "--host", "bench", "--compression", "auto", "--json", ...this.inputs(disks)], "restic backup");
    let added: number | null = null;
    for (const line of m.stdout.split("\n")) {
      if (!line.includes('"summary"')) continue;
      try {
        const s = JSON.parse(line) as { message_type?: string; data_added?: number };
        if (s.message_type === "summary") added = s.data_added ?? null;
      } catch {
        // a progress line
      }
    }
    return { measured: m, addedBytes: added, newChunks: null };
  }

  async restore(disk: BenchDisk, outDir: string): Promise<RestoreStep> {
    await mkdir(outDir, { recursive: true });
    const source = this.inputs([disk])[0]!;
    const m = await this.run(["restore", "latest", "--target", outDir, "--include", source], "restic restore");
    const file = join(outDir, source);
    const s = await syncFile(file, this.dir);
    return { measured: combine([m, s]), syncSeconds: s.seconds, file };
  }

  async repoSize(): Promise<RepoSize> {
    if (this.bucket !== null) return { ...(await bucketSize(this.tenv.s3!, this.bucket)), diskBytes: null };
    const t = await treeSize(this.env.RESTIC_REPOSITORY!);
    return { bytes: t.bytes, diskBytes: t.diskBytes, objects: t.files };
  }

  inputs(disks: readonly BenchDisk[]): string[] {
    return disks.map((d) => (this.input === "raw" ? d.rawPath! : d.imagePath));
  }

  touched(disks: readonly BenchDisk[]): string[] {
    return this.inputs(disks);
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

class BorgTarget implements Target {
  readonly tool = "borg" as const;
  readonly store = "local" as const;
  readonly label: string;
  private readonly dir: string;
  private readonly repo: string;
  private readonly env: Record<string, string>;
  private archives = 0;

  constructor(
    tenv: ToolEnv,
    readonly input: "raw" | "image",
    /** Directory the archived paths are relative to. */
    private readonly base: string,
  ) {
    this.label = `borg, ${input} (local)`;
    this.dir = join(tenv.work, uniqueName(`borg-${input}`));
    this.repo = join(this.dir, "repo");
    this.env = {
      BORG_BASE_DIR: join(this.dir, "base"),
      BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: "yes",
      BORG_RELOCATED_REPO_ACCESS_IS_OK: "yes",
      BORG_PASSPHRASE: "",
    };
  }

  private run(args: string[], label: string, cwd?: string): Promise<Measured> {
    return runMeasured("borg", args, this.dir, { env: this.env, label, ...(cwd ? { cwd } : {}) });
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.run(["init", "--encryption", "none", this.repo], "borg init");
  }

  private relativeInputs(disks: readonly BenchDisk[]): string[] {
    return this.inputs(disks).map((p) => relative(this.base, p));
  }

  async backup(disks: readonly BenchDisk[]): Promise<BackupStep> {
    const name = `bench-${++this.archives}`;
    const m = await this.run(["create", "--compression", "zstd,3", "--json", `${this.repo}::${name}`, ...this.relativeInputs(disks)], "borg create", this.base);
    let added: number | null = null;
    try {
      const j = JSON.parse(m.stdout) as { archive?: { stats?: { deduplicated_size?: number } } };
      added = j.archive?.stats?.deduplicated_size ?? null;
    } catch {
      // no stats
    }
    return { measured: m, addedBytes: added, newChunks: null };
  }

  async restore(disk: BenchDisk, outDir: string): Promise<RestoreStep> {
    await mkdir(outDir, { recursive: true });
    const rel = this.relativeInputs([disk])[0]!;
    const m = await this.run(["extract", "--sparse", `${this.repo}::bench-${this.archives}`, rel], "borg extract", outDir);
    const file = join(outDir, rel);
    const s = await syncFile(file, this.dir);
    return { measured: combine([m, s]), syncSeconds: s.seconds, file };
  }

  async repoSize(): Promise<RepoSize> {
    const t = await treeSize(this.repo);
    return { bytes: t.bytes, diskBytes: t.diskBytes, objects: t.files };
  }

  inputs(disks: readonly BenchDisk[]): string[] {
    return disks.map((d) => (this.input === "raw" ? d.rawPath! : d.imagePath));
  }

  touched(disks: readonly BenchDisk[]): string[] {
    return this.inputs(disks);
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** `dirs`: where the raw files and the corpus live (borg archives paths relative to them). */
export function makeTarget(
  tool: ToolName,
  input: InputKind,
  store: "local" | "s3",
  env: ToolEnv,
  dirs: { corpus: string; raw: string },
  encrypted = false,
): Target {
  if (tool === "ploopvault" && input === "container") {
    if (store !== "local") throw new Error("container mode is benchmarked on local repositories only");
    return new PloopvaultContainerTarget(env);
  }
  if (tool === "ploopvault") return new PloopvaultTarget(env, store, encrypted);
  if (input === "ploop" || input === "container") throw new Error(`${tool} reads files, not ploop disks`);
  if (tool === "restic") return new ResticTarget(env, input, store);
  if (store === "s3") throw new Error("borg has no S3 backend");
  return new BorgTarget(env, input, input === "raw" ? dirs.raw : dirs.corpus);
}
