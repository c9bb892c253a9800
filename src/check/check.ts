/**
 * Repository verification: every manifest decodes, its side files and every chunk it
 * references exist, and (with readData) every referenced chunk decodes and hashes to its
 * id. Damage is reported per backup, naming it.
 *
 * Memory is proportional to the number of chunk ids (~46 bytes each), never to the data
 * or to the number of references: the stored ids are a hash set, each manifest's
 * references mark them in place (manifests are read a few at a time); only when
 * something is missing or corrupt are the manifests read a second time to name the
 * backups affected. --read-data reads `concurrency` chunks at a time (one chunk each).
 *
 * A nightly job can verify a slice: `ct`/`host` select the backups checked (chunks other
 * backups reference then count as unreferenced), and a data subset reads only some of the
 * referenced chunks: "N/M" the chunks whose id, as a number, is N-1 modulo M (so M runs
 * with N = 1..M read every chunk once, whatever was added meanwhile lands in one of the
 * slices), "P%" a random P percent. A partial check records what it finds missing or
 * corrupt for repair, but leaves the records of earlier checks alone.
 *
 * Also reported: lock objects under locks/ and whether they look expired (by this host's
 * clock; a dead backup's or prune's lock blocks nobody for longer than its TTL, and the
 * next prune removes it).
 */
import { errorLine, IntegrityError, UsageError } from "../errors.js";
import { StoreError } from "../uploader/store.js";
import { chunkIds, decodeManifest } from "../manifest/format.js";
import { judgeLocks, listLocks, lockTiming, type LockKind } from "../prune/locks.js";
import { ChunkIdHashSet } from "../repository/chunk-id-set.js";
import { BACKUPS_PREFIX, CHUNKS_PREFIX, DESCRIPTOR_NAME, backupPrefix, chunkKey, manifestKey } from "../repository/layout.js";
import { loadMissingChunks, recordMissingChunks } from "../repository/missing-chunks.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { TaskLimiter } from "../util/limiter.js";
import { scanObjectLock, type ObjectLockScan } from "./object-lock-scan.js";

export interface DamagedBackup {
  ct: string;
  id: string;
  problems: string[];
}

export interface LockReport {
  key: string;
  kind: LockKind;
  holder: string | null;
  ageSeconds: number;
  expired: boolean;
}

export interface CheckReport {
  backups: number;
  /** Missing and corrupt chunks recorded under missing/ for the next backups to upload again. */
  chunksRecordedForRepair: number;
  chunksStored: number;
  chunksReferenced: number;
  chunksMissing: number;
  chunksUnreferenced: number;
  chunksRead: number;
  chunksCorrupt: number;
  damaged: DamagedBackup[];
  locks: LockReport[];
  expiredLocks: number;
  /** Object-lock repositories: what was hidden or put on top (and, with repair, removed); null otherwise. */
  objectLock: ObjectLockScan | null;
}

/** Which referenced chunks --read-data reads: all, slice N of M, or a random fraction. */
export type DataSubset = { kind: "all" } | { kind: "slice"; n: number; m: number } | { kind: "fraction"; fraction: number };

/** "N/M" or "P%" (restic's --read-data-subset forms). */
export function parseDataSubset(text: string, option = "--read-data-subset"): DataSubset {
  const slice = /^(\d+)\/(\d+)$/.exec(text.trim());
  if (slice) {
    const n = Number(slice[1]);
    const m = Number(slice[2]);
    if (m < 1 || n < 1 || n > m) throw new UsageError(`${option}: "${text}" must be N/M with 1 <= N <= M (e.g. 3/7)`);
    return { kind: "slice", n, m };
  }
  const percent = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
  if (percent) {
    const p = Number(percent[1]);
    if (!(p > 0 && p <= 100)) throw new UsageError(`${option}: "${text}" must be a percentage above 0 and at most 100`);
    return { kind: "fraction", fraction: p / 100 };
  }
  throw new UsageError(`${option}: "${text}" is neither N/M (e.g. 1/7) nor P% (e.g. 5%)`);
}

/** Whether a chunk is in the subset; `random` in [0, 1) for fractions. */
export function inDataSubset(id: Uint8Array, subset: DataSubset, random: () => number = Math.random): boolean {
  if (subset.kind === "all") return true;
  if (subset.kind === "fraction") return random() < subset.fraction;
  // the id's first 6 bytes as a number: uniform, and the same slice on every host and run
  const value = Buffer.from(id.buffer, id.byteOffset, 6).readUIntBE(0, 6);
  return value % subset.m === subset.n - 1;
}

export interface CheckOptions {
  readData: boolean;
  /** With readData: only these chunks (default all). */
  dataSubset?: DataSubset;
  /** Only backups of this container. */
  ct?: string;
  /** Only backups made on this host. */
  host?: string;
  /**
   * Record what is missing or corrupt under missing/ (backups then upload it again) and
   * drop the records of earlier checks this one supersedes. Needs write access.
   */
  recordForRepair?: boolean;
  warn?: (line: string) => void;
  concurrency: number;
  onProgress?: (done: number, total: number) => void;
  /** Object lock: remove delete markers and junk versions someone put in the bucket (src/check/object-lock-scan.ts). */
  repair?: boolean;
}

const HEX_ID = /^[0-9a-f]{64}$/;
const MAX_PROBLEMS = 20;

export async function checkRepository(repo: Repository, options: CheckOptions): Promise<CheckReport> {
  const store = repo.store;
  // first, so that the check below sees the repaired state
  const objectLock = repo.objectLock === null ? null : await scanObjectLock(repo, { readData: options.readData, repair: options.repair === true });
  const stored = new ChunkIdHashSet(1 << 16);
  const scratch = Buffer.alloc(32); // no allocation per listed chunk
  for await (const info of store.list(CHUNKS_PREFIX)) {
    const name = info.key.slice(info.key.lastIndexOf("/") + 1);
    if (!HEX_ID.test(name) || info.key !== `${CHUNKS_PREFIX}${name.slice(0, 2)}/${name}`) continue;
    scratch.write(name, "hex");
    stored.add(scratch);
  }
  const referencedFlags = new Uint8Array(stored.size);
  const missing = new ChunkIdHashSet();
  const sideFiles = new Set<string>();
  for await (const info of store.list(BACKUPS_PREFIX)) sideFiles.add(info.key);

  const earlierRecords = await loadMissingChunks(store);
  const listed = await repo.listBackups(options.ct);
  const partial = options.ct !== undefined || options.host !== undefined || (options.dataSubset !== undefined && options.dataSubset.kind !== "all");
  const skipped = new Set<string>();
  const damaged = new Map<string, DamagedBackup>();
  const problem = (ref: BackupRef, text: string): void => {
    const key = `${ref.ct}/${ref.id}`;
    const entry = damaged.get(key) ?? { ct: ref.ct, id: ref.id, problems: [] };
    if (entry.problems.length < MAX_PROBLEMS) entry.problems.push(text);
    damaged.set(key, entry);
  };
  const readable: BackupRef[] = [];
  await forEachManifest(repo, listed, options.concurrency, (ref, manifest, error) => {
    if (manifest === null) {
      problem(ref, errorLine(error));
      return;
    }
    if (options.host !== undefined && manifest.metadata.host !== options.host) {
      skipped.add(`${ref.ct}/${ref.id}`);
      return;
    }
    const configName = manifest.metadata.files.config;
    for (const name of [DESCRIPTOR_NAME, ...(configName ? [configName] : [])]) {
      if (!sideFiles.has(`${backupPrefix(ref.ct, ref.id)}${name}`)) problem(ref, `${name} missing`);
    }
    for (const id of chunkIds(manifest.entries)) {
      const index = stored.indexOf(id);
      if (index >= 0) referencedFlags[index] = 1;
      else missing.add(id);
    }
    readable.push(ref);
  });
  // A chunk uploaded after the listing above by a backup that finished meanwhile is not
  // missing: confirm each one before reporting it.
  const confirmed = new ChunkIdHashSet();
  const lateLimiter = new TaskLimiter(Math.max(1, options.concurrency));
  let late = 0;
  for (let i = 0; i < missing.size; i++) {
    const id = missing.id(i);
    await lateLimiter.submit(async () => {
      if ((await store.stat(chunkKey(id.toString("hex")))) === null) confirmed.add(id);
      else late++;
    });
  }
  await lateLimiter.drain();
  const missingIds = confirmed;
  let referencedStored = 0;
  for (let i = 0; i < referencedFlags.length; i++) referencedStored += referencedFlags[i]!;

  let chunksRead = 0;
  const bad = new Map<string, string>();
  if (options.readData) {
    const subset = options.dataSubset ?? { kind: "all" };
    // decided once per chunk up front, so the progress total is what will be read
    const toRead = new Uint8Array(referencedFlags.length);
    let readTotal = 0;
    for (let index = 0; index < referencedFlags.length; index++) {
      if (referencedFlags[index] === 0 || !inDataSubset(stored.id(index), subset)) continue;
      toRead[index] = 1;
      readTotal++;
    }
    const limiter = new TaskLimiter(options.concurrency);
    for (let index = 0; index < referencedFlags.length; index++) {
      if (toRead[index] === 0) continue;
      const idHex = stored.id(index).toString("hex");
      await limiter.submit(async () => {
        try {
          await repo.getChunk(idHex); // a chunk that does not verify is read a second time (VerifiedReads)
        } catch (error) {
          // damage is what does not verify; a store that cannot be read fails the check itself
          if (!(error instanceof IntegrityError)) throw error;
          bad.set(idHex, error.message);
        }
        chunksRead++;
        options.onProgress?.(chunksRead, readTotal);
      });
    }
    await limiter.drain();
  }

  // name the backups behind missing and corrupt chunks (second pass, only when needed)
  const badIds = new ChunkIdHashSet();
  for (const idHex of bad.keys()) badIds.add(Buffer.from(idHex, "hex"));
  if (missingIds.size > 0 || badIds.size > 0) {
    await forEachManifest(repo, readable, options.concurrency, (ref, manifest) => {
      if (manifest === null) return; // vanished (forgotten by a concurrent prune): see below
      const seen = new Set<string>();
      let missingHere = 0;
      for (const id of chunkIds(manifest.entries)) {
        const isMissing = missingIds.has(id);
        if (!isMissing && !badIds.has(id)) continue;
        const idHex = id.toString("hex");
        if (seen.has(idHex)) continue;
        seen.add(idHex);
        if (isMissing) {
          if (missingHere < 5) problem(ref, `chunk ${idHex} missing`);
          missingHere++;
        } else {
          problem(ref, bad.get(idHex)!);
        }
      }
      if (missingHere > 5) problem(ref, `${missingHere - 5} more chunks missing`);
    });
  }

  // a backup forgotten by a prune running meanwhile is not damage
  for (const [key, d] of damaged) {
    if ((await store.stat(manifestKey(d.ct, d.id))) === null) damaged.delete(key);
  }

  let recorded = 0;
  if (options.recordForRepair === true) {
    const ids = [...bad.keys()];
    for (let i = 0; i < missingIds.size; i++) ids.push(missingIds.id(i).toString("hex"));
    try {
      if (ids.length > 0) await recordMissingChunks(store, ids, "check");
      recorded = ids.length;
      // what earlier checks and reads recorded is either still missing (recorded again
      // just now) or was uploaded again by a backup; a partial check did not look at all
      // (object lock: records still retained stay until their date; they only cost re-uploads)
      if (earlierRecords.keys.length > 0 && !partial)
        await store.delete(earlierRecords.keys).catch((error: unknown) => {
          if (!(error instanceof StoreError && error.kind === "retained")) throw error;
        });
    } catch (error) {
      options.warn?.(`cannot record the missing chunks for repair in ${store.location}: ${errorLine(error)} (backups will not heal them until a check can)`);
    }
  }

  const locks = await lockReport(repo);
  return {
    backups: listed.length - skipped.size,
    chunksRecordedForRepair: recorded,
    chunksStored: stored.size,
    chunksReferenced: referencedStored + late + missingIds.size,
    chunksMissing: missingIds.size,
    chunksUnreferenced: stored.size - referencedStored,
    chunksRead,
    chunksCorrupt: bad.size,
    damaged: [...damaged.values()],
    locks,
    expiredLocks: locks.filter((l) => l.expired).length,
    objectLock,
  };
}

/** Decode manifests with bounded concurrency; `visit` runs one at a time. */
async function forEachManifest(
  repo: Repository,
  refs: readonly BackupRef[],
  concurrency: number,
  visit: (ref: BackupRef, manifest: ReturnType<typeof decodeManifest> | null, error?: unknown) => void,
): Promise<void> {
  const limiter = new TaskLimiter(Math.max(1, Math.min(concurrency, 8)));
  for (const ref of refs) {
    await limiter.submit(async () => {
      let manifest;
      try {
        manifest = decodeManifest(await repo.getManifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
      } catch (error) {
        // a store that fails (unreachable, denied...) fails the check; anything else is damage
        if (error instanceof StoreError && error.kind !== "not-found") throw error;
        visit(ref, null, error);
        return;
      }
      visit(ref, manifest);
    });
  }
  await limiter.drain();
}

async function lockReport(repo: Repository): Promise<LockReport[]> {
  const locks = repo.store.controlChannel?.() ?? repo.store;
  const entries = await listLocks(locks);
  if (entries.length === 0) return [];
  const judged = await judgeLocks(locks, entries, new Date(), lockTiming());
  return judged.map((j) => ({
    key: j.key,
    kind: j.kind,
    holder: j.holder === null ? null : `${j.holder.host} pid ${j.holder.pid}`,
    ageSeconds: Math.round(j.ageMs / 1000),
    expired: !j.live,
  }));
}
