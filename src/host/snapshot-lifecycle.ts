/**
 * The life of one backup snapshot (docs/ploop.md 3.2, 3.6, 3.10):
 *
 *   journal "snapshot-pending" -> ploop snapshot -u S -> journal "snapshot-taken"
 *   -> caller reads the frozen chain of S -> journal "merging" -> ploop snapshot-delete -u S
 *   -> journal entry removed
 *
 * S is a fresh GUID carrying ploopvault's mark and the state dir's owner id (journal.ts),
 * never the top GUID. The merge runs whatever happened while reading (success, error,
 * abort). A run that dies anywhere leaves its journal entry; recoverInterrupted()
 * finishes the job for exactly those snapshots, and recoverUnjournaled() finds this state
 * dir's marked snapshots that no journal entry or kept record explains (lost state dir).
 * Neither ever touches a snapshot someone else made.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { runCommand } from "../util/exec.js";
import { open, readFile, readdir, realpath, stat } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { errorLine, PloopvaultError } from "../errors.js";
import { chainFor, parseDescriptor, snapshotListFor, type DiskDescriptor } from "../ploop/descriptor.js";
import { PloopBinaryNotFoundError, PloopCommandError, PLOOP_EXIT, isLockFailure, type PloopCli, type SnapshotListEntry } from "./ploop-cli.js";
import { decodeHeader, DISK_IN_USE, HEADER_BYTES, TOP_GUID } from "../ploop/format.js";
import { snapshotGuidOwner, type JournalEntry, type MergeChild, type SnapshotJournal } from "./journal.js";

export interface FrozenDiskContext {
  /** Container id, for messages and the journal. */
  ct: string;
  descriptorPath: string;
  ploop: PloopCli;
  journal: SnapshotJournal;
  log: (line: string) => void;
  /** Checked before the snapshot is taken and before the reader is called; the merge always runs. */
  signal?: AbortSignal;
  /**
   * Incremental backups: after `fn` succeeded, keep the snapshot instead of merging it. The
   * callback records it as kept (so recovery leaves it alone) and removes its journal
   * entry; if it throws, the snapshot is merged back as usual (the backup stays valid, the
   * next one reads everything).
   */
  keepOnSuccess?: (snapshotGuid: string) => Promise<void>;
}

export interface FrozenDisk {
  /** Lower-case braced GUID of our snapshot: open the disk with { topGuid: snapshotGuid }. */
  snapshotGuid: string;
  /** Absolute path of the DiskDescriptor.xml. */
  descriptorPath: string;
  /** The frozen chain as `ploop snapshot-list -u S` lists it (readSnapshotList): the image of snapshotGuid first, the base last. */
  chain: readonly SnapshotListEntry[];
  /** Throws FrozenChainChangedError if any frozen image changed since the snapshot. */
  verifyUnchanged(): Promise<void>;
}

/** Something rewrote images below our snapshot while we read them: the backup is not consistent. */
export class FrozenChainChangedError extends PloopvaultError {}

/** Our snapshot could not be merged back; it stays (journaled) for the next run. */
export class SnapshotMergeError extends PloopvaultError {
  readonly snapshotGuid: string;
  constructor(message: string, snapshotGuid: string, cause: unknown) {
    super(message, { cause });
    this.snapshotGuid = snapshotGuid;
  }
}

/** Failure to take the snapshot in the first place. */
export class SnapshotCreateError extends PloopvaultError {}

interface FileStamp {
  guid: string;
  file: string;
  size: number;
  mtimeMs: number;
  dev: number;
  ino: number;
}

function errnoCode(error: unknown): string {
  return (error as NodeJS.ErrnoException | undefined)?.code ?? String(error);
}

async function stampOf(guid: string, file: string): Promise<FileStamp> {
  try {
    const s = await stat(file);
    return { guid, file, size: s.size, mtimeMs: s.mtimeMs, dev: s.dev, ino: s.ino };
  } catch (error) {
    return { guid, file, size: -1, mtimeMs: -1, dev: -1, ino: errnoCode(error) === "ENOENT" ? -1 : -2 };
  }
}

/**
 * What differs between two stamp lists, or null when identical. Files are compared by
 * identity (device + inode), not by path string: ploop may spell a path differently
 * (symlinked /vz) than the descriptor does.
 */
function describeChange(before: readonly FileStamp[], after: readonly FileStamp[]): string | null {
  const n = Math.max(before.length, after.length);
  for (let k = 0; k < n; k++) {
    const a = before[k];
    const b = after[k];
    if (a === undefined || b === undefined || a.guid !== b.guid) {
      return `image list changed (${a === undefined ? "nothing" : `${a.guid} ${a.file}`} -> ${b === undefined ? "nothing" : `${b.guid} ${b.file}`})`;
    }
    if (b.size === -1) return `${b.file} disappeared`;
    if (a.dev !== b.dev || a.ino !== b.ino) return `${b.file} is another file now (was ${a.file})`;
    if (a.size !== b.size) return `${b.file} changed size (${a.size} -> ${b.size} bytes)`;
    if (a.mtimeMs !== b.mtimeMs) return `${b.file} was modified (mtime ${new Date(a.mtimeMs).toISOString()} -> ${new Date(b.mtimeMs).toISOString()})`;
  }
  return null;
}

async function readDescriptorFile(path: string): Promise<DiskDescriptor> {
  return parseDescriptor(await readFile(path, "utf8"), path);
}

/**
 * The chain of `guid`, its image first, exactly as `ploop snapshot-list -H -o
 * uuid,parent_uuid,fname -u GUID` prints it (snapshotListFor), read from the descriptor
 * without starting ploop (~30 ms and a process less each time). As safe as snapshot-list
 * itself: ploop never rewrites DiskDescriptor.xml in place (lib/xml.c
 * ploop_store_diskdescriptor writes DD.tmp, fsyncs it in 7.x+, and renames it over DD), so
 * any read sees one whole descriptor, the old or the new; snapshot-list reads it without
 * ploop's lock too (tools/ploop-snapshot.c). Only reads use this: snapshot, snapshot-delete
 * and every other command that changes the disk go through ploop.
 */
export async function readSnapshotList(descriptorPath: string, guid: string): Promise<SnapshotListEntry[]> {
  let real: string;
  let xml: string;
  try {
    real = await realpath(descriptorPath);
    xml = await readFile(real, "utf8");
  } catch (error) {
    throw new PloopvaultError(`cannot read ${descriptorPath} (${errnoCode(error)})`, { cause: error });
  }
  return snapshotListFor(parseDescriptor(xml, descriptorPath), guid, dirname(real));
}

function absoluteImagePath(descriptorPath: string, file: string): string {
  return isAbsolute(file) ? file : resolve(dirname(descriptorPath), file);
}

/** Stamps of the live chain below the top, base first (top excluded: it is being written). */
async function stampsBelowTop(descriptorPath: string): Promise<FileStamp[]> {
  const dd = await readDescriptorFile(descriptorPath);
  const chain = chainFor(dd); // base first
  return Promise.all(chain.slice(0, -1).map((i) => stampOf(i.guid, absoluteImagePath(descriptorPath, i.file))));
}

/**
 * Take a snapshot, hand the frozen disk to `fn`, and always merge the snapshot back.
 * The frozen images (S and everything below) must not change while `fn` reads them;
 * that is checked before and after, and a change fails the backup.
 */
export async function withFrozenDisk<T>(ctx: FrozenDiskContext, fn: (frozen: FrozenDisk) => Promise<T>): Promise<T> {
  const { ct, ploop, journal, log, signal } = ctx;
  const dd = resolve(ctx.descriptorPath);
  signal?.throwIfAborted();

  // Images below the current top are already read-only; they must come out of the
  // snapshot untouched (they end up below S).
  const lowerBefore = await stampsBelowTop(dd);

  const S = journal.newSnapshotGuid();
  await journal.record({ ct, descriptorPath: dd, snapshotGuid: S, state: "snapshot-pending" });
  try {
    await ploop.snapshot(dd, S);
  } catch (error) {
    // ploop undoes a failed snapshot itself (docs/ploop.md 2.5); only if S made it into the
    // descriptor anyway do we have to merge it.
    let present: boolean | null = null;
    try {
      present = (await readDescriptorFile(dd)).images.some((i) => i.guid === S);
    } catch {
      present = null;
    }
    if (present === false) {
      // A ploop killed halfway leaves the new empty delta and DiskDescriptor.xml.tmp.
      const left = await cleanAfterFailedSnapshot(ctx, dd, S);
      if (!left) await journal.remove(S);
      throw new SnapshotCreateError(`container ${ct}: cannot take backup snapshot: ${errorLine(error)}`, { cause: error });
    }
    if (present === null) {
      throw new SnapshotCreateError(
        `container ${ct}: cannot take backup snapshot ${S} and cannot tell whether it exists (${errorLine(error)}); the journal keeps it for the next run`,
        { cause: error },
      );
    }
    log(`container ${ct}: ploop snapshot reported failure but ${S} exists; merging it back`);
    await mergeBack(ctx, dd, S, error);
    throw new SnapshotCreateError(`container ${ct}: cannot take backup snapshot: ${errorLine(error)}`, { cause: error });
  }
  log(`container ${ct}: snapshot ${S} taken on ${dd}`);

  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    await journal.setState(S, "snapshot-taken");
    const chain = await readSnapshotList(dd, S);
    const stamps = await Promise.all(chain.map((e) => stampOf(e.guid, e.file)));
    // The chain below S must be the chain that was below the old top.
    const below = stamps.slice(1).reverse();
    const moved = describeChange(lowerBefore, below);
    if (moved !== null) {
      throw new FrozenChainChangedError(`container ${ct}: images below snapshot ${S} changed while it was taken: ${moved}`);
    }
    const verifyUnchanged = async (): Promise<void> => {
      const now = await readSnapshotList(dd, S);
      const nowStamps = await Promise.all(now.map((e) => stampOf(e.guid, e.file)));
      const change = describeChange(stamps, nowStamps);
      if (change !== null) {
        throw new FrozenChainChangedError(
          `container ${ct}: frozen chain of snapshot ${S} changed during the backup: ${change} (another tool rewrote the disk; the backup is not consistent)`,
        );
      }
    };
    signal?.throwIfAborted();
    const value = await fn({ snapshotGuid: S, descriptorPath: dd, chain, verifyUnchanged });
    await verifyUnchanged();
    outcome = { ok: true, value };
  } catch (error) {
    outcome = { ok: false, error };
  }
  if (outcome.ok && ctx.keepOnSuccess) {
    try {
      await ctx.keepOnSuccess(S);
      log(`container ${ct}: snapshot ${S} kept for the next incremental backup`);
      return outcome.value;
    } catch (error) {
      log(`container ${ct}: cannot keep snapshot ${S} (${errorLine(error)}); merging it back, the next backup reads the whole disk`);
    }
  }
  await mergeBack(ctx, dd, S, outcome.ok ? undefined : outcome.error);
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
}

/**
 * S's only child image: the file `ploop snapshot-delete -u S` merges into S's image and
 * then deletes. It is always the delta that `ploop snapshot -u S` created (a merge keeps
 * the lower file under the upper GUID), so when S is ours, so is this file. Null when S is
 * not in the descriptor, has no single child, or the file cannot be stat'ed.
 */
export async function mergeChildOf(descriptorPath: string, guid: string): Promise<MergeChild | null> {
  let dd: DiskDescriptor;
  try {
    dd = await readDescriptorFile(descriptorPath);
  } catch {
    return null;
  }
  const children = dd.shots.filter((s) => s.parentGuid === guid);
  if (children.length !== 1) return null;
  const image = dd.images.find((i) => i.guid === children[0]!.guid);
  if (image === undefined) return null;
  return identityOf(absoluteImagePath(descriptorPath, image.file));
}

/**
 * `ploop snapshot -u S` failed and S is not in the descriptor: remove the delta and the
 * DiskDescriptor.xml.tmp a killed ploop leaves (removeOrphanedDelta proves they are its).
 * True when something had to be left in place (the journal entry then stays).
 */
async function cleanAfterFailedSnapshot(ctx: FrozenDiskContext, dd: string, S: string): Promise<boolean> {
  const { ct, ploop, log } = ctx;
  let left = false;
  try {
    const orphan = await removeOrphanedDelta({ snapshotGuid: S, descriptorPath: dd, state: "snapshot-pending" }, ploop, "flock");
    if (orphan !== null) {
      log(`container ${ct}: snapshot ${S}: ${orphan.action}: ${orphan.detail}`);
      left = orphan.action === "orphan-delta-left";
    }
    await removeStaleDescriptorTmp(dd);
  } catch (error) {
    log(`container ${ct}: snapshot ${S}: ${errorLine(error)}`);
    left = true;
  }
  return left;
}

/** snapshot-delete S; on failure keep the journal entry and throw SnapshotMergeError. */
async function mergeBack(ctx: FrozenDiskContext, dd: string, S: string, earlier: unknown): Promise<void> {
  const { ct, ploop, journal, log } = ctx;
  try {
    await journal.setState(S, "merging", await mergeChildOf(dd, S));
  } catch (error) {
    // The entry still says "snapshot-taken", which recovery treats the same way.
    log(`container ${ct}: ${errorLine(error)}`);
  }
  let result: "deleted" | "absent";
  try {
    result = await ploop.snapshotDelete(dd, S);
  } catch (error) {
    const also = earlier === undefined ? "" : `; the backup had failed too: ${errorLine(earlier)}`;
    throw new SnapshotMergeError(
      `container ${ct}: backup snapshot ${S} could not be merged back into ${dd} (${errorLine(error)}); it is left in place and the next ploopvault run retries the merge${also}`,
      S,
      earlier === undefined ? error : earlier,
    );
  }
  if (result === "absent") log(`container ${ct}: snapshot ${S} was already gone from ${dd} (merged by someone else?)`);
  else log(`container ${ct}: snapshot ${S} merged back`);
  await journal.remove(S);
}

// ---------------------------------------------------------------------------
// Recovery (docs/ploop.md 3.10)

export type RecoveryAction =
  /** Descriptor no longer exists (container destroyed/moved): entry dropped. */
  | "descriptor-gone"
  /** S is not in the descriptor (merged, or never created): entry dropped. */
  | "already-merged"
  /** snapshot-delete succeeded: entry dropped. */
  | "merged"
  /** snapshot-delete failed with "image in use", flags cleared with check -d, retried: entry dropped. */
  | "merged-after-clearing-in-use"
  /** Another ploop operation holds the disk: entry kept for the next run. */
  | "locked"
  /** The run that made S (or a ploop process working on S) is still alive: entry kept. */
  | "in-progress"
  /** Could not recover; entry kept. */
  | "failed"
  /** Journal file unreadable: left in place for the admin. */
  | "corrupt-entry"
  /** A stale DiskDescriptor.xml.tmp beside a journaled descriptor was removed. */
  | "removed-stale-tmp"
  /** S is the snapshot an incremental backup keeps on purpose: entry dropped, S left alone. */
  | "kept"
  /**
   * An image file ploop created for S and left behind unlisted when it was killed (the
   * merged child after the descriptor switch, or the new top of an unfinished
   * `ploop snapshot -u S`) was removed.
   */
  | "removed-orphan-delta"
  /** Such a file was found but left in place (disk lock held, or the disk is mounted): entry kept. */
  | "orphan-delta-left"
  /** A snapshot ploopvault made with ANOTHER state dir (or another installation): left alone. */
  | "foreign-snapshot";

export interface RecoveryReport {
  ct: string;
  snapshotGuid: string;
  action: RecoveryAction;
  detail: string;
}

export interface RecoverOptions {
  /** util-linux flock, used to test DiskDescriptor.xml.lck. Default "flock". */
  flockBin?: string;
  /** How long to wait for a ploop process still working on S (after we were killed). Default 120 s. */
  waitForPloopMs?: number;
  /** Snapshots kept on purpose by incremental backups: never merged by recovery. */
  isKept?: (ct: string, snapshotGuid: string) => Promise<boolean>;
}

/** Linux USER_HZ: /proc/<pid>/stat start times are in these ticks (100 on every Linux ABI). */
const USER_HZ = 100;

/** Start time of a live process in ms since the epoch, or null if it does not exist. */
async function processStartMs(pid: number): Promise<number | null> {
  try {
    const statText = await readFile(`/proc/${pid}/stat`, "utf8");
    // comm may contain spaces and parentheses: fields start after the last ")".
    const fields = statText.slice(statText.lastIndexOf(")") + 2).split(" ");
    const startTicks = Number(fields[19]); // field 22 overall
    const procStat = await readFile("/proc/stat", "utf8");
    const btime = Number(/^btime (\d+)$/m.exec(procStat)?.[1]);
    if (!Number.isFinite(startTicks) || !Number.isFinite(btime)) return null;
    return btime * 1000 + (startTicks * 1000) / USER_HZ;
  } catch {
    return null;
  }
}

/** Is the process that wrote this entry still running (same pid, started before the entry)? */
async function ownerAlive(entry: JournalEntry): Promise<boolean> {
  if (entry.host !== hostname()) return false;
  const started = await processStartMs(entry.pid);
  if (started === null) return false;
  // btime is whole seconds: allow 2 s of slack. A process started after the entry
  // is a recycled pid, not the writer.
  return started <= Date.parse(entry.startedAt) + 2000;
}

/**
 * Pids of processes (other than us) whose command line mentions this GUID. Our GUIDs are
 * random, so any such process (ploop, vzctl, an admin's snapshot-list) works on S.
 */
async function processesMentioning(guid: string): Promise<number[]> {
  const needle = guid.toLowerCase().replace(/[{}]/g, "");
  let names: string[];
  try {
    names = await readdir("/proc");
  } catch {
    return [];
  }
  const found: number[] = [];
  for (const name of names) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = (await readFile(`/proc/${name}/cmdline`, "latin1")).toLowerCase();
      if (cmd.includes(needle)) found.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** Whether the image's header says "in use" (m_DiskInUse at 0x2C == "Ynot"). */
export async function imageMarkedInUse(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(64);
    const { bytesRead } = await fh.read(buf, 0, 64, 0);
    return bytesRead >= 0x30 && buf.readUInt32LE(0x2c) === DISK_IN_USE;
  } finally {
    await fh.close();
  }
}

/**
 * Run `rm -f -- FILES` under `flock -n` on DiskDescriptor.xml.lck beside `descriptorPath`,
 * so that no ploop operation (1.x and 7.x take that lock for every descriptor operation)
 * is in progress while files it might still be working on disappear. "busy" = nothing
 * removed: the lock is held, or there is no .lck (ploop >= 8.0.59 locks the base image
 * instead, docs/ploop.md 2.6, which we cannot test from here).
 */
async function removeUnderDiskLock(descriptorPath: string, files: readonly string[], flockBin: string): Promise<"removed" | "busy"> {
  const lck = `${descriptorPath}.lck`;
  try {
    await stat(lck);
  } catch {
    return "busy";
  }
  const r = await runCommand(flockBin, ["-n", "-E", "75", lck, "rm", "-f", "--", ...files]);
  if (r.exitCode === 75) return "busy";
  if (r.failed) {
    const why = r.spawnError === "ENOENT" ? `"${flockBin}" not found (install util-linux)` : r.stderr.trim().split("\n")[0] || r.summary;
    throw new PloopvaultError(`cannot remove ${files.join(", ")} under ${lck}: ${why}`);
  }
  return "removed";
}

/**
 * Remove DiskDescriptor.xml.tmp beside `descriptorPath` unless a ploop operation holds
 * DiskDescriptor.xml.lck (then the .tmp is its work in progress: 1.15 writes it at the
 * START of a merge and renames it at the end). The removal runs under that lock
 * (flock -n), so no ploop operation can start in between. "busy" = left in place.
 */
export async function removeStaleDescriptorTmp(descriptorPath: string, flockBin = "flock"): Promise<"removed" | "none" | "busy"> {
  const tmp = `${descriptorPath}.tmp`;
  try {
    await stat(tmp);
  } catch {
    return "none";
  }
  // A leftover .tmp is harmless (ploop overwrites it); without a .lck it is left alone.
  return removeUnderDiskLock(descriptorPath, [tmp], flockBin);
}

/**
 * Finish every snapshot our journal knows about (docs/ploop.md 3.10). Never touches snapshots
 * that are not in the journal. Returns one report per entry (plus .tmp and orphaned
 * delta clean-ups).
 */
export async function recoverInterrupted(
  journal: SnapshotJournal,
  ploop: PloopCli,
  log: (line: string) => void,
  options: RecoverOptions = {},
): Promise<RecoveryReport[]> {
  const flockBin = options.flockBin ?? "flock";
  const waitForPloopMs = options.waitForPloopMs ?? 120_000;
  const reports: RecoveryReport[] = [];
  const report = reporter(reports, log);

  await journal.removeStaleTemps();
  const { entries, corrupt } = await journal.list();
  for (const c of corrupt) {
    report({
      ct: "?",
      snapshotGuid: "?",
      action: "corrupt-entry",
      detail: `journal file ${c.file} is unreadable (${c.reason}); left in place, check it by hand`,
    });
  }

  for (const entry of entries) {
    const { ct, snapshotGuid: S } = entry;
    if (await ownerAlive(entry)) {
      report({ ct, snapshotGuid: S, action: "in-progress", detail: `process ${entry.pid} that took it (at ${entry.startedAt}) is still running` });
      continue;
    }
    if (options.isKept && (await options.isKept(ct, S))) {
      await journal.remove(S);
      report({ ct, snapshotGuid: S, action: "kept", detail: "it is the base of the next incremental backup; left in place" });
      continue;
    }
    // If our run was SIGKILLed while ploop ran, that ploop child may still be working
    // on S (or may have died with us). Let it finish before judging the descriptor.
    const deadline = Date.now() + waitForPloopMs;
    let busy = await processesMentioning(S);
    while (busy.length > 0 && Date.now() < deadline) {
      await sleep(200);
      busy = await processesMentioning(S);
    }
    if (busy.length > 0) {
      report({ ct, snapshotGuid: S, action: "in-progress", detail: `ploop process ${busy.join(", ")} is still working on it` });
      continue;
    }
    await finishEntry(entry, journal, ploop, flockBin, report, "");
  }
  return reports;
}

function reporter(reports: RecoveryReport[], log: (line: string) => void): (r: RecoveryReport) => void {
  return (r: RecoveryReport): void => {
    reports.push(r);
    const warn =
      r.action === "descriptor-gone" ||
      r.action === "failed" ||
      r.action === "locked" ||
      r.action === "corrupt-entry" ||
      r.action === "orphan-delta-left" ||
      r.action === "foreign-snapshot";
    log(`${warn ? "warning: " : ""}recovery: container ${r.ct}: snapshot ${r.snapshotGuid}: ${r.action}: ${r.detail}`);
  };
}

/**
 * Merge S back (or find it merged), remove what an interrupted ploop left for S, and drop
 * the entry when nothing is left to do. `why` prefixes the detail of the main report.
 */
async function finishEntry(
  entry: JournalEntry,
  journal: SnapshotJournal,
  ploop: PloopCli,
  flockBin: string,
  report: (r: RecoveryReport) => void,
  why: string,
): Promise<void> {
  const { ct, snapshotGuid: S, descriptorPath: dd } = entry;
  let outcome: Outcome;
  try {
    outcome = await recoverOne(entry, journal, ploop);
  } catch (error) {
    if (error instanceof PloopBinaryNotFoundError) throw error;
    outcome = { action: "failed", detail: `${errorLine(error)}; entry kept`, settled: false };
  }
  report({ ct, snapshotGuid: S, action: outcome.action, detail: `${why}${outcome.detail}` });
  if (outcome.action === "descriptor-gone") {
    await journal.remove(S);
    return;
  }
  let keepEntry = !outcome.settled;
  if (outcome.settled) {
    try {
      const orphan = await removeOrphanedDelta(entry, ploop, flockBin);
      if (orphan !== null) {
        report({ ct, snapshotGuid: S, ...orphan });
        if (orphan.action === "orphan-delta-left") keepEntry = true;
      }
    } catch (error) {
      keepEntry = true;
      report({ ct, snapshotGuid: S, action: "orphan-delta-left", detail: `${errorLine(error)}; entry kept, the next run looks again` });
    }
  }
  if (!keepEntry) await journal.remove(S);
  try {
    const tmp = await removeStaleDescriptorTmp(dd, flockBin);
    if (tmp === "removed") report({ ct, snapshotGuid: S, action: "removed-stale-tmp", detail: `removed leftover ${dd}.tmp` });
  } catch (error) {
    report({ ct, snapshotGuid: S, action: "failed", detail: errorLine(error) });
  }
}

/** `settled`: S is not in the descriptor any more (merged now or earlier, or never created). */
type Outcome = { action: RecoveryAction; detail: string; settled: boolean };

async function recoverOne(entry: JournalEntry, journal: SnapshotJournal, ploop: PloopCli): Promise<Outcome> {
  const { snapshotGuid: S, descriptorPath: dd } = entry;
  const settled = (action: RecoveryAction, detail: string): Outcome => ({ action, detail, settled: true });
  const kept = (action: RecoveryAction, detail: string): Outcome => ({ action, detail, settled: false });

  let descriptor: DiskDescriptor;
  try {
    descriptor = await readDescriptorFile(dd);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return settled("descriptor-gone", `${dd} no longer exists; entry dropped`);
    return kept("failed", `${errorLine(error)}; entry kept`);
  }
  if (!descriptor.images.some((i) => i.guid === S)) {
    return settled(
      "already-merged",
      entry.state === "snapshot-pending"
        ? `not in ${dd} (never created, or already merged); entry dropped`
        : `not in ${dd} any more (already merged); entry dropped`,
    );
  }
  if (descriptor.topGuid === S || S === TOP_GUID) {
    // Cannot happen with our GUIDs; deleting the top would discard data.
    return kept("failed", `${S} is the top image of ${dd}; refusing to delete it, entry kept`);
  }

  // Record what this merge will delete at its end, in case it is interrupted after the
  // descriptor switch (then that file is left unlisted and removeOrphanedDelta finds it).
  await journal.setState(S, "merging", await mergeChildOf(dd, S));
  const deleteOnce = async (): Promise<"deleted" | "absent"> => ploop.snapshotDelete(dd, S);
  try {
    const r = await deleteOnce();
    return settled(
      r === "deleted" ? "merged" : "already-merged",
      r === "deleted" ? `ploop snapshot-delete merged it back into ${dd}` : `ploop says it no longer exists in ${dd}; entry dropped`,
    );
  } catch (error) {
    if (error instanceof PloopBinaryNotFoundError) throw error;
    if (!(error instanceof PloopCommandError)) return kept("failed", `${errorLine(error)}; entry kept`);
    if (isLockFailure(error)) return kept("locked", `${errorLine(error)}; entry kept, the next run retries`);
    if (error.ploopExitCode !== PLOOP_EXIT.OPEN) return kept("failed", `${errorLine(error)}; entry kept`);
  }

  // Exit 4 "Image is in use": an offline merge was interrupted and left the in-use flag
  // on an image (docs/ploop.md 3.10). Clearing it is only safe when no kernel has the disk open.
  let device: string | null;
  try {
    device = await ploop.mountedDevice(dd);
  } catch (error) {
    return kept("failed", `image in use and cannot tell whether ${dd} is mounted (${errorLine(error)}); entry kept`);
  }
  if (device !== null) {
    return kept("failed", `ploop reports an image in use while ${dd} is mounted on ${device}; not touching a running disk, entry kept`);
  }
  const chain = chainFor(descriptor);
  const dirty: string[] = [];
  for (const image of chain) {
    if (image.type === "Plain") continue;
    const path = absoluteImagePath(dd, image.file);
    try {
      if (await imageMarkedInUse(path)) dirty.push(path);
    } catch (error) {
      return kept("failed", `cannot read the header of ${path} (${errnoCode(error)}); entry kept`);
    }
  }
  if (dirty.length === 0) {
    return kept("failed", `ploop snapshot-delete says an image is in use, but no image of ${dd} is marked in use; entry kept`);
  }
  try {
    // check -d -S: drop the flag, trim the unreferenced tail the merge left, and fill holes
    // of a sparse image as ploop does itself (PloopCli.clearInUse).
    for (const path of dirty) await ploop.clearInUse(path);
    const r = await deleteOnce();
    return settled(
      r === "deleted" ? "merged-after-clearing-in-use" : "already-merged",
      `cleared the in-use flag of ${dirty.join(", ")} (interrupted offline merge) and ${r === "deleted" ? "merged it back" : "found it gone"}`,
    );
  } catch (error) {
    if (error instanceof PloopBinaryNotFoundError) throw error;
    if (error instanceof PloopCommandError && isLockFailure(error)) return kept("locked", `${errorLine(error)}; entry kept, the next run retries`);
    return kept("failed", `after clearing the in-use flag of ${dirty.join(", ")}: ${errorLine(error)}; entry kept`);
  }
}

/** A regular file by path and identity (device + inode, as decimal strings). */
type FileIdentity = MergeChild;

async function identityOf(path: string): Promise<FileIdentity | null> {
  try {
    const st = await stat(path, { bigint: true });
    return st.isFile() ? { path, dev: String(st.dev), ino: String(st.ino) } : null;
  } catch {
    return null;
  }
}

/** Whether the descriptor lists `file`, by path or by the same inode under another name. */
async function listedByDescriptor(descriptor: DiskDescriptor, descriptorPath: string, file: FileIdentity): Promise<boolean> {
  for (const image of descriptor.images) {
    const path = absoluteImagePath(descriptorPath, image.file);
    if (path === file.path) return true;
    const other = await identityOf(path);
    if (other !== null && other.dev === file.dev && other.ino === file.ino) return true;
  }
  return false;
}

/** A ploop image that holds no data cluster (every BAT entry zero): what `ploop snapshot` creates. */
async function isEmptyDelta(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    // shorter than a header: ploop was killed between creating the file and writing it
    // (O_EXCL, then one write): it cannot hold data yet
    if ((await fh.read(header, 0, HEADER_BYTES, 0)).bytesRead < HEADER_BYTES) return true;
    const h = decodeHeader(header, path);
    const bat = Buffer.alloc(h.batEntries * 4);
    // a BAT cut short by the same kill: what was written of it must map nothing
    const read = (await fh.read(bat, 0, bat.length, HEADER_BYTES)).bytesRead;
    for (let k = 0; k + 4 <= read; k += 4) if (bat.readUInt32LE(k) !== 0) return false;
    return true;
  } catch {
    return false;
  } finally {
    await fh.close();
  }
}

/**
 * After S left the descriptor: an image file ploop created for S and did not get to
 * delete or adopt because it was killed. Removed only when ploopvault can prove it made it
 * and nothing uses it:
 *  - the merged child: the entry recorded its path and inode before the merge (it is the
 *    delta `ploop snapshot -u S` created); S is gone, so the merge completed up to the
 *    descriptor switch (ploop switches only after copying everything, then unlinks);
 *    the very same inode is still there and no descriptor image is it;
 *  - the new top of an unfinished `ploop snapshot -u S` (entry still "snapshot-pending"):
 *    ploop names it in DiskDescriptor.xml.tmp, which it writes first, with S as the
 *    parent of the top; the live descriptor does not list it, it holds no data, and the
 *    disk is not mounted (online, the kernel may already write into it).
 * The removal runs under the disk's ploop lock. null = nothing of the kind found.
 */
async function removeOrphanedDelta(
  entry: Pick<JournalEntry, "snapshotGuid" | "descriptorPath" | "state" | "mergeChild">,
  ploop: PloopCli,
  flockBin: string,
): Promise<{ action: RecoveryAction; detail: string } | null> {
  const { snapshotGuid: S, descriptorPath: dd } = entry;
  let live: DiskDescriptor;
  try {
    live = await readDescriptorFile(dd);
  } catch {
    return null;
  }
  if (live.images.some((i) => i.guid === S)) return null;

  let orphan: FileIdentity | null = null;
  let what = "";
  if (entry.mergeChild !== undefined) {
    const now = await identityOf(entry.mergeChild.path);
    if (now !== null && now.dev === entry.mergeChild.dev && now.ino === entry.mergeChild.ino && !(await listedByDescriptor(live, dd, now))) {
      orphan = now;
      what = `the delta merged into ${S}'s image (ploop was killed after switching ${dd} and before deleting it)`;
    }
  }
  if (orphan === null && entry.state === "snapshot-pending") {
    let pending: DiskDescriptor | null = null;
    try {
      pending = parseDescriptor(await readFile(`${dd}.tmp`, "utf8"), `${dd}.tmp`);
    } catch {
      pending = null;
    }
    const top = pending?.shots.find((s) => s.guid === pending!.topGuid);
    const topImage = pending?.images.find((i) => i.guid === pending!.topGuid);
    if (pending !== null && top?.parentGuid === S && topImage !== undefined && pending.images.some((i) => i.guid === S)) {
      const candidate = await identityOf(absoluteImagePath(dd, topImage.file));
      if (candidate !== null && !(await listedByDescriptor(live, dd, candidate)) && (await isEmptyDelta(candidate.path))) {
        if ((await ploop.mountedDevice(dd)) !== null) {
          return {
            action: "orphan-delta-left",
            detail: `${candidate.path}, created by an unfinished ploop snapshot of ${S}, is not in ${dd}, but the disk is mounted (the kernel may use it): left in place, entry kept`,
          };
        }
        orphan = candidate;
        what = `the empty delta of an unfinished ploop snapshot of ${S}`;
      }
    }
  }
  if (orphan === null) return null;
  const r = await removeUnderDiskLock(dd, [orphan.path], flockBin);
  if (r === "busy")
    return {
      action: "orphan-delta-left",
      detail: `${orphan.path} (${what}) left in place: ${dd}.lck is held or missing; entry kept, the next run looks again`,
    };
  return { action: "removed-orphan-delta", detail: `removed ${orphan.path}: ${what}` };
}

export interface UnjournaledOptions {
  /** Snapshot GUIDs (lower-case, braced) kept on purpose by incremental backups of this state dir. */
  keptGuids: ReadonlySet<string>;
  flockBin?: string;
}

/**
 * Snapshots this state dir made (by the mark in their GUID, journal.ts) that sit in a
 * container's chain although neither the journal nor a kept record explains them: the
 * state dir was lost or reset (tmpfs, reinstall) after a run left them. Each is journaled
 * and merged back like an interrupted run's snapshot. Snapshots of others are never
 * touched: GUIDs without the mark (users, vzctl, other tools) are not even reported;
 * marked ones of another state dir are reported as "foreign-snapshot" and left alone.
 * Run after recoverInterrupted(), under the host lock.
 */
export async function recoverUnjournaled(
  containers: readonly { ct: string; descriptorPath: string }[],
  journal: SnapshotJournal,
  ploop: PloopCli,
  log: (line: string) => void,
  options: UnjournaledOptions,
): Promise<RecoveryReport[]> {
  const flockBin = options.flockBin ?? "flock";
  const reports: RecoveryReport[] = [];
  const report = reporter(reports, log);
  const journaled = new Set((await journal.list()).entries.map((e) => e.snapshotGuid));
  for (const { ct, descriptorPath } of containers) {
    const dd = resolve(descriptorPath);
    let descriptor: DiskDescriptor;
    try {
      descriptor = await readDescriptorFile(dd);
    } catch {
      continue; // the backup of this container reports it
    }
    for (const image of descriptor.images) {
      const S = image.guid;
      const owner = snapshotGuidOwner(S);
      if (owner === null || S === descriptor.topGuid || journaled.has(S) || options.keptGuids.has(S)) continue;
      if (owner !== journal.ownerId) {
        report({
          ct,
          snapshotGuid: S,
          action: "foreign-snapshot",
          detail: `made by ploopvault with another state dir (owner ${owner}, this one is ${journal.ownerId}); left alone. If no other ploopvault installation backs up this host, merge it with: ploop snapshot-delete -u ${S} ${dd}`,
        });
        continue;
      }
      const entry = await journal.record({ ct, descriptorPath: dd, snapshotGuid: S, state: "merging", mergeChild: await mergeChildOf(dd, S) });
      journaled.add(S);
      await finishEntry(
        entry,
        journal,
        ploop,
        flockBin,
        report,
        "made by this state dir's ploopvault but in no journal entry or kept record (state dir lost or reset?): ",
      );
    }
  }
  return reports;
}
