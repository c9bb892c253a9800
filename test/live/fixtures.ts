/** Shared helpers of the live (real ploop) lifecycle tests. */
import { execa } from "execa";
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SnapshotJournal, JournalEntry, JournalState } from "../../src/host/journal.js";
import { PloopCli } from "../../src/host/ploop-cli.js";
import { PLOOP_OFFLINE, ploopInit, REPO_ROOT } from "../helpers/ploop-tool.js";
import { topImagePath } from "../helpers/delta-writer.js";

export { PLOOP_OFFLINE, REPO_ROOT };
export const TOP = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";
export const SIMULATOR = join(REPO_ROOT, "test", "helpers", "running-container.mjs");

export async function scratch(tag: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `ploopvault-live-${tag}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** PloopCli on the offline wrapper with short LOCK retries (tests never wait minutes). */
export function realPloop(extra: { lockRetries?: number } = {}): PloopCli {
  return new PloopCli({ bin: PLOOP_OFFLINE, lockRetries: extra.lockRetries ?? 0, lockRetryDelayMs: 50 });
}

/** A fresh v2 disk made by ploop itself: DIR/root.hds + DIR/DiskDescriptor.xml. */
export async function makeDisk(dir: string, options: { size?: string; clusterSectors?: number } = {}): Promise<string> {
  await mkdir(dir, { recursive: true });
  return ploopInit(join(dir, "root.hds"), { size: options.size ?? "64M", version: 2, clusterSectors: options.clusterSectors ?? 128 });
}

/** 32-byte unit repeated over a cluster: what we look for when reading back. */
export function tagUnit(tag: string, cluster: number): string {
  const unit = `${`${tag}:${String(cluster).padStart(8, "0")}`.padEnd(31, ".").slice(0, 31)}\n`;
  return unit;
}

export function tagCluster(tag: string, cluster: number, clusterBytes: number): Buffer {
  return Buffer.alloc(clusterBytes, tagUnit(tag, cluster), "latin1");
}

/**
 * Fill virtual clusters [first, first+count) of the descriptor's top image quickly (the
 * last `zeroTailBytes` of each cluster zero, for images that can be made sparse): one
 * sequential data write, then the BAT, one fsync (fine for a test fixture; the kernel's
 * careful ordering is the simulator's job).
 */
export async function fillTop(dd: string, first: number, count: number, tag: string, options: { zeroTailBytes?: number } = {}): Promise<void> {
  const path = await topImagePath(dd);
  const fh = await open(path, "r+");
  try {
    const h = Buffer.alloc(64);
    await fh.read(h, 0, 64, 0);
    if (h.toString("latin1", 0, 16) !== "WithouFreSpacExt") throw new Error(`${path}: fillTop supports v2 images only`);
    const clusterBytes = h.readUInt32LE(0x1c) * 512;
    const size = (await fh.stat()).size;
    let fileCluster = Math.ceil(size / clusterBytes);
    const bat = Buffer.alloc(4 * count);
    const batch = 16;
    for (let k = 0; k < count; k += batch) {
      const n = Math.min(batch, count - k);
      const buf = Buffer.alloc(n * clusterBytes);
      const zeroTail = Math.min(options.zeroTailBytes ?? 0, clusterBytes);
      for (let j = 0; j < n; j++) buf.fill(tagUnit(tag, first + k + j), j * clusterBytes, (j + 1) * clusterBytes - zeroTail, "latin1");
      await fh.write(buf, 0, buf.length, fileCluster * clusterBytes);
      for (let j = 0; j < n; j++) bat.writeUInt32LE(fileCluster + j, 4 * (k + j));
      fileCluster += n;
    }
    await fh.sync();
    await fh.write(bat, 0, bat.length, 64 + 4 * first);
    h.writeUInt32LE(h.readUInt32LE(0x34) & ~0x1, 0x34);
    await fh.write(h, 0x34, 4, 0x34);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A pid that certainly belongs to no running process (a child that has exited). */
export async function deadPid(): Promise<number> {
  const child = execa("sh", ["-c", "exit 0"]);
  const pid = child.pid;
  await child;
  if (pid === undefined) throw new Error("no pid");
  return pid;
}

/**
 * Leave a journal entry as a crashed run would: written by a process that no longer exists.
 */
export async function writeCrashedEntry(
  journal: SnapshotJournal,
  fields: { ct: string; descriptorPath: string; snapshotGuid: string; state: JournalState },
): Promise<JournalEntry> {
  await journal.record(fields);
  const file = join(journal.dir, `${fields.snapshotGuid.slice(1, -1)}.json`);
  const entry = JSON.parse(await readFile(file, "utf8")) as JournalEntry;
  const crashed: JournalEntry = { ...entry, pid: await deadPid(), startedAt: new Date(Date.now() - 3600_000).toISOString() };
  await writeFile(file, JSON.stringify(crashed));
  return crashed;
}

/** An executable shell script in dir. */
export async function script(dir: string, name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

/** Names of the files in the disk directory, sorted. */
export async function filesIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** Read one cluster of the logical disk. */
export async function readCluster(disk: { read(offset: number, target: Uint8Array): Promise<void>; clusterBytes: number }, cluster: number): Promise<Buffer> {
  const buf = Buffer.alloc(disk.clusterBytes);
  await disk.read(cluster * disk.clusterBytes, buf);
  return buf;
}

/** Hold flock(2) on `path` with util-linux flock until the returned function is called. */
export async function holdFlock(path: string): Promise<() => Promise<void>> {
  const child = execa("flock", ["-x", path, "sh", "-c", "echo locked; exec cat >/dev/null"], { stdin: "pipe", stdout: "pipe", reject: false });
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("locked")) resolve();
    });
    child.catch(reject);
  });
  return async () => {
    child.stdin!.end();
    await child;
  };
}

/**
 * Make an image file sparse without changing a byte of its content, the way a sparse copy
 * (cp --sparse, rsync -S) or a restore that skips zeros leaves it: `fallocate --dig-holes`
 * deallocates every all-zero block (BAT padding, zero-filled parts of clusters).
 */
export async function digHoles(imagePath: string): Promise<void> {
  await execa("fallocate", ["--dig-holes", imagePath]);
}

/**
 * What v2 discard/compaction does on real hosts (docs/ploop.md 1.9): drop virtual clusters from
 * the image's BAT and punch holes where their data was (`fallocate -p`), leaving unused,
 * unallocated clusters inside the file.
 */
export async function discardClusters(imagePath: string, virtualClusters: readonly number[]): Promise<void> {
  const fh = await open(imagePath, "r+");
  try {
    const h = Buffer.alloc(64);
    await fh.read(h, 0, 64, 0);
    if (h.toString("latin1", 0, 16) !== "WithouFreSpacExt") throw new Error(`${imagePath}: discardClusters supports v2 images only`);
    const clusterBytes = h.readUInt32LE(0x1c) * 512;
    for (const c of virtualClusters) {
      const slot = Buffer.alloc(4);
      await fh.read(slot, 0, 4, 64 + 4 * c);
      const fileCluster = slot.readUInt32LE(0);
      if (fileCluster === 0) throw new Error(`${imagePath}: virtual cluster ${c} is not allocated`);
      await fh.write(Buffer.alloc(4), 0, 4, 64 + 4 * c);
      await fh.sync();
      await execa("fallocate", ["--punch-hole", "--offset", String(fileCluster * clusterBytes), "--length", String(clusterBytes), imagePath]);
    }
  } finally {
    await fh.close();
  }
}

/** ploop's own verdict (read-only `check -f -r`): does it call this image sparse? */
export async function ploopCallsSparse(imagePath: string): Promise<boolean> {
  const r = await execa(PLOOP_OFFLINE, ["check", "-f", "-r", imagePath], { reject: false, all: true });
  return r.exitCode === 11 && /is sparse/.test(String(r.all));
}

/**
 * A ploop command line (scripts/ploop-offline under strace) that SIGKILLs ploop at its
 * `nth` call of `syscall`: fault injection at the exact point between two of ploop's
 * steps (e.g. the descriptor switch and the unlink that follows it).
 */
export async function ploopKilledAt(dir: string, syscall: "unlink" | "rename", nth: number): Promise<string> {
  return script(
    dir,
    `ploop-killed-at-${syscall}-${nth}`,
    `exec strace -f -qq -o /dev/null -e trace=${syscall} -e inject=${syscall}:signal=KILL:when=${nth} -- "${PLOOP_OFFLINE}" "$@"`,
  );
}

/** Files beside the descriptor that look like images (not DiskDescriptor.xml*) but that it does not list. */
export async function unlistedImageFiles(dd: string): Promise<string[]> {
  const xml = await readFile(dd, "utf8");
  const listed = new Set([...xml.matchAll(/<File>\s*([^<]+?)\s*<\/File>/g)].map((m) => m[1]!.split("/").pop()!));
  const dir = dd.slice(0, dd.lastIndexOf("/"));
  return (await readdir(dir)).filter((name) => !name.startsWith("DiskDescriptor.xml") && !listed.has(name)).sort();
}

/** The util-linux flock helper that `parentPid` started for `lockPath`. */
export async function flockHelperOf(parentPid: number, lockPath: string): Promise<number> {
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const argv = (await readFile(`/proc/${name}/cmdline`, "utf8")).split("\0");
      if (ppid === parentPid && argv[0]!.endsWith("flock") && argv.includes(lockPath)) return Number(name);
    } catch {
      // exited meanwhile
    }
  }
  throw new Error(`no flock helper of ${parentPid} for ${lockPath}`);
}
