/**
 * prune = forget (apply the keep policy, delete manifests, then their side files)
 *       + sweep (delete chunks no remaining backup references), safely while other nodes
 *         back up into the same repository. The protocol and why it is safe: docs/prune.md.
 *
 * runPrune = take locks/prune (one prune at a time; stale ones are taken over), then
 * planPrune (phases 1-2, deleting nothing; alone, without the lock, it is --dry-run), then
 * executePrune (the deletions of phase 1, phases 3-5: nothing the plan does not list):
 *   1. list backups/, read every manifest of the selected containers, apply the policy;
 *      (executing: delete the forgotten backups' manifests, then their side files);
 *   2. plan the sweep without blocking anybody: list the chunks (a hash set of their ids
 *      with size and flags, ~55 bytes per chunk), mark those the manifests that stay
 *      reference; the unmarked ones older than --grace are the candidates;
 *   3. handshake: write our sweep marker, THEN list the registrations; while a live
 *      backup is registered, remove the marker and wait (at most --wait, then defer);
 *   4. remove expired lock objects; list backups/ again and mark what the manifests
 *      not marked in phase 2 reference (backups that finished meanwhile, forgotten ones
 *      that stayed: protected since, or retained);
 *   5. delete candidates in batches while the marker is provably live; remove the marker.
 * Memory: proportional to the number of chunks (~55 bytes each), not to the data nor to
 * the number of references (manifests are read one at a time, ids marked in place).
 *
 * Object-lock repositories (docs/object-lock.md): listings show hidden objects too (the
 * repository's ObjectLockView), deletions remove object versions for good, and what is
 * still retained stays: a backup whose manifest is retained is kept (reason "retained"),
 * chunks and files under retention are counted as retained, never an error. The sweep
 * deletes every version of a candidate chunk, streaming the version listing of chunks/.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { errorLine, PloopvaultError } from "../errors.js";
import { chunkIds, decodeManifest } from "../manifest/format.js";
import { ChunkIdHashSet } from "../repository/chunk-id-set.js";
import type { ManifestCache } from "../repository/known-chunks.js";
import { BACKUPS_PREFIX, CHUNKS_PREFIX, MANIFEST_NAME, chunkKey, parseManifestKey } from "../repository/layout.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { StoreError, type ObjectInfo, type ObjectStore } from "../uploader/store.js";
import { TaskLimiter } from "../util/limiter.js";
import { formatDuration } from "./duration.js";
import { Lease } from "./lease.js";
import {
  describeHolder,
  judgeLocks,
  listLocks,
  lockBody,
  nowFromOwn,
  PRUNE_LOCK_KEY,
  readHolder,
  uniqueLockKey,
  type JudgedLock,
  type LockTiming,
} from "./locks.js";
import { planForget, type BackupInfo, type GroupPlan, type KeepPolicy } from "./policy.js";
import { acquirePruneLock } from "./prune-lock.js";
import { isProtected, PROTECTION_NAME } from "./protection.js";

export interface PruneOptions {
  policy: KeepPolicy;
  /** Only forget backups of this container (the sweep always considers every backup). */
  ct?: string;
  /** Only forget backups made on this host. */
  onlyHost?: string;
  /** Only forget backups carrying one of these tags (backup --tag). */
  tags?: string[];
  /** Unreferenced chunks younger than this (LastModified) are left alone. */
  graceMs: number;
  /** How long to wait for running backups (and for another prune) before deferring. */
  waitMs: number;
  host: string;
  timing: LockTiming;
  /** Read manifests through the local cache (they are immutable). */
  cache?: ManifestCache;
  /** Manifests read in parallel. Default 8. */
  concurrency?: number;
  /** Keys per delete request. Default 1000 (one S3 DeleteObjects). */
  deleteBatch?: number;
  signal?: AbortSignal;
  log: (line: string) => void;
  warn: (line: string) => void;
}

export interface PrunedGroup {
  ct: string;
  host: string;
  kept: { id: string; time: string; reasons: string[] }[];
  forgotten: { id: string; time: string }[];
}

export interface PruneReport {
  dryRun: boolean;
  groups: PrunedGroup[];
  kept: number;
  forgotten: number;
  /** done: chunks deleted; deferred: backups were running, nothing deleted; dry-run; skipped: damaged manifests. */
  sweep: "done" | "deferred" | "dry-run" | "skipped";
  deferredBy: string[];
  damagedManifests: string[];
  chunksStored: number;
  chunksReferenced: number;
  /** Deleted (or, with --dry-run, that would be deleted now). */
  chunksDeleted: number;
  chunkBytesDeleted: number;
  /** Unreferenced, but younger than --grace. */
  chunksSparedByGrace: number;
  /** Object lock: unreferenced chunks (and their bytes) still under retention, left for a later prune. */
  chunksRetained: number;
  chunkBytesRetained: number;
  /** Object lock: side files (of forgotten or never finished backups) still under retention. */
  filesRetained: number;
  /** Object lock: backups the policy would forget whose manifest is still under retention (kept). */
  backupsRetained: { ct: string; id: string; time: string }[];
  /** Manifests, side files of forgotten backups and orphaned side files. */
  filesDeleted: number;
  fileBytesDeleted: number;
  bytesFreed: number;
  expiredLocksRemoved: string[];
  /** Temp files of interrupted writes (local repositories) removed, or with --dry-run found. */
  temporariesRemoved: number;
  temporaryBytesRemoved: number;
  seconds: number;
}

/**
 * A temp file of a local repository (".tmp-*") untouched for this long belongs to a writer
 * that died: a live one writes a chunk in well under a second and renames it at once. At
 * least twice the lock TTL, so a writer stalled that long has been fenced already (its
 * registration lapsed); it loses that one write (its rename fails), never data.
 */
export const STALE_TEMPORARY_MIN_MS = 3_600_000;

export class PruneAborted extends PloopvaultError {}

const HEX_ID = /^[0-9a-f]{64}$/;

/** A backup's objects as listed under backups/<ct>/<id>/. */
export interface BackupObjects {
  ct: string;
  id: string;
  manifest: ObjectInfo | null;
  files: ObjectInfo[];
}

async function listBackupObjects(store: ObjectStore): Promise<Map<string, BackupObjects>> {
  const out = new Map<string, BackupObjects>();
  for await (const info of store.list(BACKUPS_PREFIX)) {
    const parts = info.key.split("/");
    if (parts.length !== 4) continue;
    const prefix = `${parts[0]}/${parts[1]}/${parts[2]}/`;
    let b = out.get(prefix);
    if (b === undefined) out.set(prefix, (b = { ct: parts[1]!, id: parts[2]!, manifest: null, files: [] }));
    if (parts[3] === MANIFEST_NAME && parseManifestKey(info.key) !== null) b.manifest = info;
    else b.files.push(info);
  }
  return out;
}

const REFERENCED = 1;
const YOUNG = 2;

/** The chunks listed under chunks/: ids (hash set), sizes and flags, by index. */
export class StoredChunks {
  readonly ids = new ChunkIdHashSet(1 << 16);
  private sizes = new Float64Array(1 << 16);
  private flags = new Uint8Array(1 << 16);

  add(id: Buffer, size: number, young: boolean): void {
    const index = this.ids.add(id);
    if (index >= this.sizes.length) {
      const sizes = new Float64Array(this.sizes.length * 2);
      sizes.set(this.sizes);
      this.sizes = sizes;
      const flags = new Uint8Array(this.flags.length * 2);
      flags.set(this.flags);
      this.flags = flags;
    }
    this.sizes[index] = size;
    this.flags[index] = young ? YOUNG : 0;
  }

  get count(): number {
    return this.ids.size;
  }

  /** Mark a referenced id; false if no such chunk is stored. */
  mark(id: Uint8Array): boolean {
    const index = this.ids.indexOf(id);
    if (index < 0) return false;
    this.flags[index]! |= REFERENCED;
    return true;
  }

  referenced(index: number): boolean {
    return (this.flags[index]! & REFERENCED) !== 0;
  }

  young(index: number): boolean {
    return (this.flags[index]! & YOUNG) !== 0;
  }

  size(index: number): number {
    return this.sizes[index]!;
  }
}

/** What planPrune found: what executePrune would forget and delete, judged at `now`. */
export interface PrunePlan {
  /** The time ages were judged by: the prune lock's LastModified (storage clock, rounded up), or a dry run's local clock. */
  readonly now: Date;
  /** The prune lock the plan was made under; null for a dry run (such a plan cannot be executed). */
  readonly pruneLock: Lease | null;
  /** The counts as if the plan were carried out now (what --dry-run prints). */
  readonly report: PruneReport;
  /** Backups the policy forgets: each one's manifest, then its side files. */
  readonly forget: readonly BackupObjects[];
  /** Side files of backups that never wrote a manifest, older than --grace. */
  readonly orphans: readonly ObjectInfo[];
  /** The unreferenced chunks older than --grace (streamed: there may be millions). */
  candidateChunkKeys(): Generator<string>;
  /** @internal the listing of backups/ and the chunk set executePrune continues from */
  readonly listed: Map<string, BackupObjects>;
  /** @internal "ct/id" of the manifests whose references are marked in `stored` */
  readonly marked: Set<string>;
  /** @internal */
  readonly stored: StoredChunks;
  /** @internal performance.now() when planning started */
  readonly started: number;
}

/** Points where a test harness (test/helpers/paused-prune.mjs) can stop a prune; the CLI sets none. */
export interface ExecuteHooks {
  /** Awaited once the handshake succeeded (our sweep marker is live and no backup is registered), before anything is deleted. */
  beforeDelete?: () => Promise<void>;
}

/** A dry run's report before anything is counted. */
function emptyReport(): PruneReport {
  return {
    dryRun: true,
    groups: [],
    kept: 0,
    forgotten: 0,
    sweep: "dry-run",
    deferredBy: [],
    damagedManifests: [],
    chunksStored: 0,
    chunksReferenced: 0,
    chunksDeleted: 0,
    chunkBytesDeleted: 0,
    chunksSparedByGrace: 0,
    chunksRetained: 0,
    chunkBytesRetained: 0,
    filesRetained: 0,
    backupsRetained: [],
    filesDeleted: 0,
    fileBytesDeleted: 0,
    bytesFreed: 0,
    expiredLocksRemoved: [],
    temporariesRemoved: 0,
    temporaryBytesRemoved: 0,
    seconds: 0,
  };
}

function abortCheck(signal: AbortSignal | undefined): () => void {
  return () => {
    if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new PruneAborted("prune interrupted");
  };
}

/** The prune: take locks/prune, plan, carry the plan out, release the lock. */
export async function runPrune(repo: Repository, options: PruneOptions, hooks: ExecuteHooks = {}): Promise<PruneReport> {
  // lock objects go through the control channel: they never queue behind data requests
  const locks = repo.store.controlChannel?.() ?? repo.store;
  const pruneLock = await acquirePruneLock(locks, { host: options.host, timing: options.timing, waitMs: options.waitMs, log: options.log, warn: options.warn });
  try {
    const plan = await planPrune(repo, options, pruneLock);
    return await executePrune(repo, plan, options, hooks);
  } finally {
    await pruneLock.release().catch((error: unknown) => options.warn(`cannot remove ${PRUNE_LOCK_KEY}: ${errorLine(error)} (it expires by itself)`));
  }
}

/**
 * Phases 1-2 without changing anything: list backups/, read the manifests, apply the keep
 * policy, list the chunks and mark what the backups that stay reference. Without a prune
 * lock (--dry-run) nothing at all is written and ages are judged by the local clock.
 */
export async function planPrune(repo: Repository, options: PruneOptions, pruneLock: Lease | null = null): Promise<PrunePlan> {
  const started = performance.now();
  const store = repo.store;
  const report = emptyReport();
  const checkAbort = abortCheck(options.signal);
  const listed = await listBackupObjects(store);
  const forget = await planForgetting(repo, listed, options, report);
  checkAbort();
  // S3 gives LastModified of a single object in whole seconds (HEAD), listings in
  // milliseconds: round the lock's time up, or chunks written in the same second as the
  // lock would count as younger than it and survive --grace 0
  const lockTime = pruneLock?.lastModified;
  const now = lockTime === undefined ? new Date() : new Date(Math.ceil((lockTime.getTime() + 1) / 1000) * 1000);
  if (store.removeStaleTemporaries !== undefined) {
    const { count, bytes } = await store.removeStaleTemporaries(staleTemporariesBefore(now, options), { dryRun: true });
    report.temporariesRemoved = count;
    report.temporaryBytesRemoved = bytes;
  }
  const stored = new StoredChunks();
  const scratch = Buffer.alloc(32); // no allocation per listed chunk
  for await (const info of store.list(CHUNKS_PREFIX)) {
    const name = info.key.slice(info.key.lastIndexOf("/") + 1);
    if (!HEX_ID.test(name) || info.key !== chunkKey(name)) continue; // never touch what we do not know
    const age = info.modified === undefined ? 0 : now.getTime() - info.modified.getTime();
    scratch.write(name, "hex");
    stored.add(scratch, info.size, age < options.graceMs);
  }
  report.chunksStored = stored.count;
  checkAbort();
  const forgotten = new Set(forget.map((b) => `${b.ct}/${b.id}`));
  const remaining = [...listed.values()].filter((b) => b.manifest !== null && !forgotten.has(`${b.ct}/${b.id}`));
  const marked = new Set(remaining.map((b) => `${b.ct}/${b.id}`));
  await markReferenced(repo, remaining, stored, options, report.damagedManifests);
  // side files of backups that never got a manifest (crashed), older than --grace
  const orphans = orphanedFiles(listed, now, options.graceMs);
  const plan: PrunePlan = {
    now,
    pruneLock,
    report,
    forget,
    orphans,
    listed,
    marked,
    stored,
    started,
    *candidateChunkKeys() {
      for (let i = 0; i < stored.count; i++) if (!stored.referenced(i) && !stored.young(i)) yield chunkKey(stored.ids.id(i).toString("hex"));
    },
  };
  if (report.damagedManifests.length > 0) {
    report.sweep = "skipped";
    options.warn(
      `chunk deletion skipped: ${report.damagedManifests.length} manifest(s) cannot be read (${report.damagedManifests.slice(0, 3).join("; ")}); fix or remove those backups, then prune again`,
    );
    finish(report, started);
    return plan;
  }
  for (let i = 0; i < stored.count; i++) {
    if (stored.referenced(i)) report.chunksReferenced++;
    else if (stored.young(i)) report.chunksSparedByGrace++;
    else {
      report.chunksDeleted++;
      report.chunkBytesDeleted += stored.size(i);
    }
  }
  for (const f of orphans) countFile(report, f);
  finish(report, started);
  return plan;
}

/**
 * Phases 1 (deleting) and 3-5: forget the planned backups, then the sweep's handshake,
 * the second look at the manifests written since the plan, and the deletion of the
 * planned chunks and orphans nothing references by then. Deletes nothing the plan does
 * not list. The plan must have been made under the prune lock, which the caller holds.
 */
export async function executePrune(repo: Repository, plan: PrunePlan, options: PruneOptions, hooks: ExecuteHooks = {}): Promise<PruneReport> {
  const pruneLock = plan.pruneLock;
  if (pruneLock === null) throw new PloopvaultError("prune: a plan made without the prune lock (a dry run) cannot be carried out");
  const store = repo.store;
  const locks = store.controlChannel?.() ?? store;
  const checkAbort = abortCheck(options.signal);
  const report: PruneReport = {
    ...plan.report,
    dryRun: false,
    sweep: "done",
    groups: plan.report.groups.map((g) => ({ ...g, kept: [...g.kept], forgotten: [...g.forgotten] })),
    damagedManifests: [...plan.report.damagedManifests],
    chunksDeleted: 0,
    chunkBytesDeleted: 0,
    filesDeleted: 0,
    fileBytesDeleted: 0,
    temporariesRemoved: 0,
    temporaryBytesRemoved: 0,
  };
  await forgetBackups(repo, plan.forget, report, options, pruneLock);
  checkAbort();
  if (store.removeStaleTemporaries !== undefined) {
    const { count, bytes } = await store.removeStaleTemporaries(staleTemporariesBefore(plan.now, options), { dryRun: false });
    report.temporariesRemoved = count;
    report.temporaryBytesRemoved = bytes;
    if (count > 0) options.log(`removed ${count} temporary file${count === 1 ? "" : "s"} (${bytes} bytes) left by interrupted writes`);
  }
  if (report.damagedManifests.length > 0) {
    report.sweep = "skipped";
    return finish(report, plan.started);
  }
  checkAbort();
  if (plan.report.chunksDeleted === 0 && plan.orphans.length === 0) {
    // nothing to delete: no need to make backups wait; still clean up after dead processes
    const entries = await listLocks(locks);
    const now = nowFromOwn(locks, entries, PRUNE_LOCK_KEY);
    await removeExpiredLocks(
      locks,
      await judgeLocks(
        locks,
        entries.filter((e) => e.key !== PRUNE_LOCK_KEY),
        now,
        options.timing,
      ),
      report,
      options,
    );
    return finish(report, plan.started);
  }
  // 3.-5. the sweep proper
  await sweep(repo, plan, options, report, pruneLock, checkAbort, hooks);
  return finish(report, plan.started);
}

/** Side files under backups/<ct>/<id>/ without a manifest, all older than the grace period. */
function orphanedFiles(listed: Map<string, BackupObjects>, now: Date, graceMs: number): ObjectInfo[] {
  const out: ObjectInfo[] = [];
  for (const b of listed.values()) {
    if (b.manifest !== null || b.files.length === 0) continue;
    if (b.files.every((f) => f.modified !== undefined && now.getTime() - f.modified.getTime() >= graceMs)) out.push(...b.files);
  }
  return out;
}

/** Temp files of interrupted writes (local repositories) older than this are stale: STALE_TEMPORARY_MIN_MS, at least 2 x TTL. */
function staleTemporariesBefore(now: Date, options: PruneOptions): Date {
  return new Date(now.getTime() - Math.max(STALE_TEMPORARY_MIN_MS, 2 * options.timing.ttlMs));
}

/** Lock objects of dead processes (registrations, markers, probes) go. */
async function removeExpiredLocks(store: ObjectStore, judged: readonly JudgedLock[], report: PruneReport, options: PruneOptions): Promise<void> {
  const expired = judged.filter((j) => !j.live && (j.kind === "backup" || j.kind === "sweep" || j.kind === "probe")).map((j) => j.key);
  if (expired.length === 0) return;
  await store.delete(expired);
  report.expiredLocksRemoved.push(...expired);
  options.log(
    `removed ${expired.length} expired lock object${expired.length === 1 ? "" : "s"} (${expired.slice(0, 3).join(", ")}${expired.length > 3 ? ", ..." : ""})`,
  );
}

function finish(report: PruneReport, started: number): PruneReport {
  report.bytesFreed = report.chunkBytesDeleted + report.fileBytesDeleted + report.temporaryBytesRemoved;
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

function countFile(report: PruneReport, f: ObjectInfo): void {
  report.filesDeleted++;
  report.fileBytesDeleted += f.size;
}

async function readManifest(repo: Repository, ref: BackupRef, cache: ManifestCache | undefined) {
  const object = cache ? await cache.manifestObject(ref) : await repo.getManifestObject(ref);
  return decodeManifest(object, `manifest of backup ${ref.ct}/${ref.id}`);
}

/** Phase 1, planning: read the selected backups' manifests, apply the policy per group; fills report.groups and the counts. */
async function planForgetting(repo: Repository, listed: Map<string, BackupObjects>, options: PruneOptions, report: PruneReport): Promise<BackupObjects[]> {
  const infos: BackupInfo[] = [];
  const limiter = new TaskLimiter(options.concurrency ?? 8);
  for (const b of listed.values()) {
    if (b.manifest === null || (options.ct !== undefined && b.ct !== options.ct)) continue;
    await limiter.submit(async () => {
      try {
        const { metadata } = await readManifest(repo, b, options.cache);
        if (options.onlyHost !== undefined && metadata.host !== options.onlyHost) return;
        if (options.tags !== undefined && !options.tags.some((t) => metadata.tags?.includes(t))) return;
        infos.push({ ct: b.ct, id: b.id, host: metadata.host, time: new Date(metadata.time) });
      } catch (error) {
        // a manifest we cannot read is never forgotten by policy; the sweep stops on it
        options.warn(`cannot read backup ${b.ct}/${b.id}: ${errorLine(error)}`);
      }
    });
  }
  await limiter.drain();
  // protected backups count for the policy like any other, but are never forgotten
  const isProtectedListed = (b: BackupInfo): boolean =>
    listed.get(`${BACKUPS_PREFIX}${b.ct}/${b.id}/`)?.files.some((f) => f.key.endsWith(`/${PROTECTION_NAME}`)) === true;
  const plans = planForget(infos, options.policy).map((plan) => keepProtected(plan, isProtectedListed));
  const targets: BackupObjects[] = [];
  for (const plan of plans) {
    report.groups.push({
      ct: plan.ct,
      host: plan.host,
      kept: plan.keep.map((k) => ({ id: k.id, time: k.time.toISOString(), reasons: k.reasons })),
      forgotten: plan.forget.map((f) => ({ id: f.id, time: f.time.toISOString() })),
    });
    report.kept += plan.keep.length;
    report.forgotten += plan.forget.length;
    for (const f of plan.forget) targets.push(listed.get(`${BACKUPS_PREFIX}${f.ct}/${f.id}/`)!);
  }
  for (const b of targets) {
    countFile(report, b.manifest!);
    for (const f of b.files) countFile(report, f);
  }
  return targets;
}

/** Phase 1, deleting: manifests first (each batch re-checked for a protection written since the plan), then side files. */
async function forgetBackups(repo: Repository, targets: readonly BackupObjects[], report: PruneReport, options: PruneOptions, pruneLock: Lease): Promise<void> {
  if (targets.length === 0) return;
  if (repo.objectLock !== null) return forgetLocked(repo, targets, report, options, pruneLock);
  const batch = options.deleteBatch ?? 1000;
  const removed: BackupObjects[] = [];
  for (let i = 0; i < targets.length; i += batch) {
    // a protection written since the listing (protect while we planned) still counts
    const slice: BackupObjects[] = [];
    for (const b of targets.slice(i, i + batch)) {
      if (await isProtected(repo.store, b)) {
        options.warn(`backup ${b.ct}/${b.id} was protected while prune planned: kept`);
        keepInstead(report, b, "protected");
      } else {
        slice.push(b);
      }
    }
    pruneLock.assertValid("forget backups");
    if (slice.length === 0) continue;
    await repo.store.delete(slice.map((b) => b.manifest!.key));
    for (const b of slice) countFile(report, b.manifest!);
    removed.push(...slice);
  }
  options.log(`forgot ${removed.length} backup${removed.length === 1 ? "" : "s"}`);
  const sideFiles = removed.flatMap((b) => b.files);
  for (let i = 0; i < sideFiles.length; i += batch) {
    const slice = sideFiles.slice(i, i + batch);
    await repo.store.delete(slice.map((f) => f.key));
    for (const f of slice) countFile(report, f);
  }
}

/** A plan with the protected backups moved from "forget" to "keep". */
function keepProtected(plan: GroupPlan, isProtectedBackup: (b: BackupInfo) => boolean): GroupPlan {
  const rescued = plan.forget.filter(isProtectedBackup);
  if (rescued.length === 0) return plan;
  return {
    ...plan,
    keep: [...plan.keep, ...rescued.map((b) => ({ ...b, reasons: ["protected"] }))].sort((a, b) => b.time.getTime() - a.time.getTime()),
    forget: plan.forget.filter((b) => !isProtectedBackup(b)),
  };
}

/** A backup the plan forgets stays after all (protected since, or retained): move it to "kept" in the report; returns its time. */
function keepInstead(report: PruneReport, b: BackupObjects, reason: string): string | undefined {
  for (const g of report.groups) {
    if (g.ct !== b.ct) continue;
    const at = g.forgotten.findIndex((f) => f.id === b.id);
    if (at < 0) continue;
    const [f] = g.forgotten.splice(at, 1);
    g.kept.push({ id: f!.id, time: f!.time, reasons: [reason] });
    report.forgotten--;
    report.kept++;
    return f!.time;
  }
  return undefined;
}

/** True for the "retained" refusal of an object-lock repository's deletions. */
function isRetained(error: unknown): boolean {
  return error instanceof StoreError && error.kind === "retained";
}

/**
 * Phase 1 in an object-lock repository: each backup's manifest goes for good (every
 * version) or, while retained, the backup stays and is reported as kept ("retained").
 */
async function forgetLocked(repo: Repository, targets: readonly BackupObjects[], report: PruneReport, options: PruneOptions, pruneLock: Lease): Promise<void> {
  let done = 0;
  for (const b of targets) {
    pruneLock.assertValid("forget backups");
    // a protection written since the listing (protect while we planned) still counts
    if (await isProtected(repo.store, b)) {
      options.warn(`backup ${b.ct}/${b.id} was protected while prune planned: kept`);
      keepInstead(report, b, "protected");
      continue;
    }
    try {
      await repo.store.delete([b.manifest!.key]);
    } catch (error) {
      if (!isRetained(error)) throw error;
      const time = keepInstead(report, b, "retained (object lock)");
      report.backupsRetained.push({ ct: b.ct, id: b.id, time: time! });
      continue;
    }
    countFile(report, b.manifest!);
    done++;
    for (const f of b.files) {
      try {
        await repo.store.delete([f.key]);
        countFile(report, f);
      } catch (error) {
        if (!isRetained(error)) throw error;
        report.filesRetained++;
      }
    }
  }
  if (done > 0) options.log(`forgot ${done} backup${done === 1 ? "" : "s"}`);
  if (report.backupsRetained.length > 0) {
    options.log(
      `kept ${report.backupsRetained.length} backup${report.backupsRetained.length === 1 ? "" : "s"} the policy would forget: still under S3 Object Lock retention`,
    );
  }
}

/** Phase 2 (and 4): mark the stored chunks the given manifests reference. */
async function markReferenced(
  repo: Repository,
  backups: readonly BackupObjects[],
  stored: StoredChunks,
  options: PruneOptions,
  damaged: string[],
): Promise<void> {
  const limiter = new TaskLimiter(options.concurrency ?? 8);
  for (const b of backups) {
    await limiter.submit(async () => {
      try {
        const manifest = await readManifest(repo, b, options.cache);
        for (const id of chunkIds(manifest.entries)) stored.mark(id);
      } catch (error) {
        damaged.push(`${b.ct}/${b.id}: ${errorLine(error)}`);
      }
    });
  }
  await limiter.drain();
}

/** Phases 3-5. */
async function sweep(
  repo: Repository,
  plan: PrunePlan,
  options: PruneOptions,
  report: PruneReport,
  pruneLock: Lease,
  checkAbort: () => void,
  hooks: ExecuteHooks,
): Promise<void> {
  const { stored } = plan;
  const store = repo.store;
  const locks = store.controlChannel?.() ?? store;
  const { timing } = options;
  const started = new Date();
  const waitStart = performance.now();
  let marker: Lease | null = null;
  try {
    // 3. handshake: marker first, then the registrations
    let judged: JudgedLock[] = [];
    let now = new Date(0);
    let announced = false;
    for (;;) {
      checkAbort();
      pruneLock.assertValid("sweep");
      const key = uniqueLockKey("sweep", options.host);
      marker = new Lease(locks, key, () => lockBody("sweep", options.host, timing, started), timing, { what: `sweep marker ${key}`, warn: options.warn });
      await marker.create();
      const entries = await listLocks(locks);
      now = nowFromOwn(locks, entries, key);
      judged = await judgeLocks(
        locks,
        entries.filter((e) => e.key !== key && e.key !== PRUNE_LOCK_KEY),
        now,
        timing,
      );
      let running = judged.filter((j) => j.kind === "backup" && j.live);
      if (running.length === 0) break;
      // backups are running: get out of their way, wait until none is, try again
      await marker.release();
      marker = null;
      for (;;) {
        const names = await Promise.all(running.map(async (r) => describeHolder(r.key, r.holder ?? (await readHolder(locks, r.key)))));
        const waited = performance.now() - waitStart;
        if (waited >= options.waitMs) {
          report.sweep = "deferred";
          report.deferredBy = names;
          options.warn(
            `chunk deletion deferred: ${running.length} backup${running.length === 1 ? " is" : "s are"} running (${names.slice(0, 5).join(", ")}${names.length > 5 ? ", ..." : ""}); waited ${formatDuration(waited)}, run prune again later`,
          );
          return;
        }
        if (!announced)
          options.log(
            `waiting for ${running.length} running backup${running.length === 1 ? "" : "s"} before deleting chunks (${names.slice(0, 5).join(", ")})`,
          );
        announced = true;
        await sleep(Math.min(timing.pollMs, options.waitMs - waited));
        checkAbort();
        pruneLock.assertValid("sweep");
        const again = await listLocks(locks);
        const pollNow = nowFromOwn(locks, again, PRUNE_LOCK_KEY);
        running = (
          await judgeLocks(
            locks,
            again.filter((e) => e.kind === "backup"),
            pollNow,
            timing,
          )
        ).filter((j) => j.live);
        if (running.length === 0) break;
      }
    }
    await hooks.beforeDelete?.();

    // 4. expired lock objects of dead processes; the second look: manifests written since
    // the plan (backups that finished meanwhile, or forgotten ones that stayed after all)
    await removeExpiredLocks(locks, judged, report, options);
    const listed = await listBackupObjects(store);
    const fresh = [...listed.values()].filter((b) => b.manifest !== null && !plan.marked.has(`${b.ct}/${b.id}`));
    if (fresh.length > 0) {
      const damaged: string[] = [];
      await markReferenced(repo, fresh, stored, options, damaged);
      if (damaged.length > 0) {
        report.damagedManifests.push(...damaged);
        report.sweep = "skipped";
        options.warn(`chunk deletion skipped: a new manifest cannot be read (${damaged[0]})`);
        return;
      }
    }

    // 5. delete, in batches, only while the marker is provably live
    const batchSize = options.deleteBatch ?? 1000;
    let batch: string[] = [];
    let batchBytes = 0;
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      checkAbort();
      // a batch that may have landed after the marker could look expired is reported
      await marker!.guard("deleting chunks (run `ploopvault check` to see whether a backup lost chunks)", () => store.delete(batch));
      report.chunksDeleted += batch.length;
      report.chunkBytesDeleted += batchBytes;
      batch = [];
      batchBytes = 0;
    };
    if (repo.objectLock !== null) {
      await sweepLockedVersions(repo, stored, report, marker, batchSize, checkAbort);
    } else {
      for (let i = 0; i < stored.count; i++) {
        if (stored.referenced(i) || stored.young(i)) continue;
        batch.push(chunkKey(stored.ids.id(i).toString("hex")));
        batchBytes += stored.size(i);
        if (batch.length >= batchSize) await flush();
      }
      await flush();
    }
    // the plan's orphans that are still orphans now (a backup that was running may have written its manifest since)
    const stillOrphaned = new Set(orphanedFiles(listed, now, options.graceMs).map((f) => f.key));
    const orphans = plan.orphans.filter((f) => stillOrphaned.has(f.key));
    if (repo.objectLock !== null) {
      for (const f of orphans) {
        try {
          await marker.guard("deleting orphaned side files", () => store.delete([f.key]));
          countFile(report, f);
        } catch (error) {
          if (!isRetained(error)) throw error;
          report.filesRetained++;
        }
      }
    } else {
      for (let i = 0; i < orphans.length; i += batchSize) {
        const slice = orphans.slice(i, i + batchSize);
        await marker.guard("deleting orphaned side files", () => store.delete(slice.map((f) => f.key)));
        for (const f of slice) countFile(report, f);
      }
    }
    options.log(
      `deleted ${report.chunksDeleted} unreferenced chunk${report.chunksDeleted === 1 ? "" : "s"}${report.chunksSparedByGrace > 0 ? `, ${report.chunksSparedByGrace} younger than --grace kept` : ""}${report.chunksRetained > 0 ? `, ${report.chunksRetained} still under S3 Object Lock retention kept` : ""}`,
    );
  } finally {
    await marker?.release().catch((error: unknown) => options.warn(`cannot remove sweep marker: ${errorLine(error)} (it expires by itself)`));
  }
}

/**
 * Phase 5 in an object-lock repository: every version (and delete marker) of each
 * candidate chunk, found by streaming the version listing of chunks/, is deleted for good
 * in batches while the marker is live; a chunk any of whose versions is still retained
 * counts as retained (the next prune after its retention deletes it).
 */
async function sweepLockedVersions(
  repo: Repository,
  stored: StoredChunks,
  report: PruneReport,
  marker: Lease,
  batchSize: number,
  checkAbort: () => void,
): Promise<void> {
  const view = repo.objectLock!;
  const seen = new Uint8Array(stored.count); // 1: a candidate whose versions were sent, 2: one of them retained
  const scratch = Buffer.alloc(32);
  let batch: { key: string; versionId: string; index: number }[] = [];
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    checkAbort();
    const sent = batch;
    batch = [];
    const { retained } = await marker.guard("deleting chunks (run `ploopvault check` to see whether a backup lost chunks)", () => view.deleteVersions(sent));
    const byKey = new Map(sent.map((v) => [v.key, v.index]));
    for (const r of retained) {
      const index = byKey.get(r.key);
      if (index !== undefined) seen[index] = 2;
    }
  };
  for await (const v of view.listVersions(CHUNKS_PREFIX)) {
    const name = v.key.slice(v.key.lastIndexOf("/") + 1);
    if (!HEX_ID.test(name) || v.key !== chunkKey(name)) continue;
    scratch.write(name, "hex");
    const index = stored.ids.indexOf(scratch);
    if (index < 0 || stored.referenced(index) || stored.young(index)) continue;
    if (seen[index] === 0) seen[index] = 1;
    batch.push({ key: v.key, versionId: v.versionId, index });
    if (batch.length >= batchSize) await flush();
  }
  await flush();
  for (let i = 0; i < seen.length; i++) {
    if (seen[i] === 1) {
      report.chunksDeleted++;
      report.chunkBytesDeleted += stored.size(i);
    } else if (seen[i] === 2) {
      report.chunksRetained++;
      report.chunkBytesRetained += stored.size(i);
    }
  }
}
