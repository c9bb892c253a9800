/**
 * S3 Object Lock for a repository (docs/object-lock.md): the retention schedule every
 * writer follows, and the view of a versioned bucket that an intruder cannot fool.
 *
 * Schedule. `init --object-lock DAYS` fixes D (retentionSeconds) and W (extensionSeconds,
 * D/2 by default). A run that starts at time b (its "basis") needs every object it writes
 * or references retained until at least b + D. A chunk C is always retained until one of
 * its own boundaries phase(C) + k·W, phase(C) uniform in [0, W) from the id's first bytes:
 *
 *   until(C, b) = the first boundary of C at or after b + D          (in [b + D, b + D + W))
 *
 * A manifest records its run's basis (metadata.objectLock.at), and its writer published it
 * only once every chunk it references was retained until(C, at). So a later run with basis
 * b knows without a request that C is retained until at least until(C, T(C)), T(C) being
 * the latest basis of the manifests referencing C (ManifestCache's chunk lock times); it
 * extends C (to until(C, b)) only when that is before b + D. Each chunk in use therefore
 * costs about one PutObjectRetention per W, and the phases spread those requests evenly
 * over time instead of extending a whole disk's chunks in one run. Manifests, side files,
 * config, keys and missing/ records get b + D + W (config and keys are extended by every
 * run that finds them short).
 *
 * View (ObjectLockView). An object-lock bucket is versioned: a delete without a version id
 * only adds a delete marker, an overwrite only adds a newer version. Whoever holds a
 * node's credentials can hide objects or put junk on top, but not destroy what is
 * retained. The view makes the repository read what its writers wrote:
 *  - list() shows every key that has a data version, hidden or not (a backup hidden by a
 *    delete marker is still listed, so prune still counts its chunks);
 *  - objects written once (config, keys, manifests, side files, missing/ records) read as
 *    their FIRST version: what was written before any overwrite;
 *  - chunks read as their newest data version (a hidden chunk is found again); their
 *    content proves itself (the id is its hash), and Repository.getChunk tries the other
 *    versions when the newest does not verify;
 *  - delete() removes versions for good, newer ones first and the first version last, and
 *    reports (kind "retained") what retention still protects;
 *  - lock objects live in another, unversioned bucket (controlChannel()): lock objects
 *    are rewritten every minute and need working conditional writes, which Ceph RGW 16.2
 *    ignores on versioned buckets (measured: If-None-Match creates a second version,
 *    If-Match always fails), and an append-only node must be able to delete them.
 */
import { IntegrityError, PloopvaultError, UsageError } from "../errors.js";
import {
  isNotFound,
  StoreError,
  type BucketState,
  type ObjectInfo,
  type ObjectStore,
  type ObjectVersion,
  type PutOptions,
  type Retention,
  type VersionRead,
} from "../uploader/store.js";
import { TaskLimiter } from "../util/limiter.js";
import { ChunkIdHashSet } from "./chunk-id-set.js";
import type { ObjectLockConfig } from "./config.js";
import type { ChunkLockTimes } from "./known-chunks.js";
import { chunkKey, CHUNKS_PREFIX } from "./layout.js";

/** The retention schedule of an object-lock repository; pure (times in milliseconds). */
export class RetentionSchedule {
  readonly retentionMs: number;
  readonly extensionMs: number;

  constructor(readonly config: ObjectLockConfig) {
    this.retentionMs = config.retentionSeconds * 1000;
    this.extensionMs = config.extensionSeconds * 1000;
  }

  get mode(): ObjectLockConfig["mode"] {
    return this.config.mode;
  }

  /** What a run with this basis needs of every object it references: retained until then. */
  needed(basisMs: number): number {
    return basisMs + this.retentionMs;
  }

  /** The chunk's boundary phase in [0, W) (whole seconds), from the first 4 bytes of its id. */
  phaseMs(id: Uint8Array): number {
    const u = ((id[0]! << 24) | (id[1]! << 16) | (id[2]! << 8) | id[3]!) >>> 0;
    return Math.floor((u / 2 ** 32) * this.config.extensionSeconds) * 1000;
  }

  /** until(C, b): the chunk's first boundary at or after b + D. */
  chunkUntil(id: Uint8Array, basisMs: number): number {
    const need = this.needed(basisMs);
    const phase = this.phaseMs(id);
    const k = Math.ceil((need - phase) / this.extensionMs);
    return phase + Math.max(0, k) * this.extensionMs;
  }

  /** True when a chunk last referenced by a manifest of basis `lockedAtMs` is retained long enough for a run of basis `basisMs`. */
  chunkCovered(id: Uint8Array, lockedAtMs: number, basisMs: number): boolean {
    return lockedAtMs > 0 && this.chunkUntil(id, lockedAtMs) >= this.needed(basisMs);
  }

  /** Retention of objects that are written once and not extended per chunk. */
  fileUntil(basisMs: number): number {
    return this.needed(basisMs) + this.extensionMs;
  }

  retention(untilMs: number): Retention {
    // whole seconds, rounded up: S3 keeps retain-until dates to the second
    return { mode: this.config.mode, until: new Date(Math.ceil(untilMs / 1000) * 1000) };
  }
}

/** Objects whose content proves itself (read newest first); everything else is read as first written. */
function selfVerifying(key: string): boolean {
  return key.startsWith(CHUNKS_PREFIX);
}

interface Original {
  versionId: string;
  retainUntil?: Date | null;
}

/** Versioned-bucket operations the view needs from the store under it. */
type VersionedStore = ObjectStore & Required<Pick<ObjectStore, "listVersions" | "getVersion" | "extendRetention" | "deleteVersions">>;

export function isVersionedStore(store: ObjectStore): store is VersionedStore {
  return store.listVersions !== undefined && store.getVersion !== undefined && store.extendRetention !== undefined && store.deleteVersions !== undefined;
}

/** Every version and delete marker of exactly `key`, newest first. */
export async function versionsOf(store: VersionedStore, key: string): Promise<ObjectVersion[]> {
  const out: ObjectVersion[] = [];
  for await (const v of store.listVersions(key)) if (v.key === key) out.push(v);
  return out;
}

/**
 * The repository's store on an object-lock bucket (see the header comment). `locks` is
 * the unversioned store for lock objects; `basis` the time new objects' default retention
 * counts from (the run's start).
 */
export class ObjectLockView implements ObjectStore {
  /** First data version of each object written once, as found by list() or read. */
  private readonly originals = new Map<string, Original>();
  private locks: ObjectStore | null = null;

  /** `openLocks` makes the lock bucket's store, on first use. */
  constructor(
    private readonly raw: VersionedStore,
    private readonly openLocks: () => ObjectStore,
    readonly schedule: RetentionSchedule,
    readonly basis: Date,
  ) {}

  get location(): string {
    return this.raw.location;
  }

  controlChannel(): ObjectStore {
    this.locks ??= this.openLocks();
    return this.locks.controlChannel?.() ?? this.locks;
  }

  async flush(): Promise<void> {
    await this.raw.flush?.();
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<void> {
    const retention = options.retention ?? this.schedule.retention(this.schedule.fileUntil(this.basis.getTime()));
    await this.raw.put(key, body, { ...options, retention });
    if (!selfVerifying(key)) this.originals.delete(key);
  }

  async get(key: string): Promise<Buffer> {
    if (selfVerifying(key)) {
      try {
        return await this.raw.get(key);
      } catch (error) {
        if (!isNotFound(error)) throw error;
        // hidden by a delete marker? the newest data version is still there
        const newest = (await versionsOf(this.raw, key)).find((v) => !v.deleteMarker);
        if (newest === undefined) throw error;
        return (await this.raw.getVersion(key, newest.versionId)).body;
      }
    }
    return (await this.readOriginal(key)).body;
  }

  /** The first data version of an object written once, with its retention. */
  async readOriginal(key: string): Promise<VersionRead> {
    let original = this.originals.get(key);
    if (original === undefined) {
      const data = (await versionsOf(this.raw, key)).filter((v) => !v.deleteMarker);
      const first = data[data.length - 1];
      if (first === undefined) throw new StoreError("not-found", `object ${key} not found in ${this.location}`, { key });
      original = { versionId: first.versionId };
      this.originals.set(key, original);
    }
    const read = await this.raw.getVersion(key, original.versionId);
    original.retainUntil = read.retainUntil;
    return read;
  }

  /** Retain-until of the first version of a written-once object read before (undefined: not read yet). */
  originalRetention(key: string): Original | undefined {
    return this.originals.get(key);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!selfVerifying(key)) return (await this.get(key)).subarray(offset, offset + length);
    try {
      return await this.raw.getRange(key, offset, length);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      return (await this.get(key)).subarray(offset, offset + length);
    }
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    const info = await this.raw.stat(key);
    if (info !== null) return info;
    const newest = (await versionsOf(this.raw, key)).find((v) => !v.deleteMarker);
    if (newest === undefined) return null;
    return { key, size: newest.size, ...(newest.modified ? { modified: newest.modified } : {}), ...(newest.etag ? { etag: newest.etag } : {}) };
  }

  /** Every key with a data version (hidden ones too), as its newest data version. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let group: ObjectVersion[] = [];
    const flush = (): ObjectInfo | null => {
      const data = group.filter((v) => !v.deleteMarker);
      group = [];
      const newest = data[0];
      if (newest === undefined) return null;
      const firstId = data[data.length - 1]!.versionId;
      if (!selfVerifying(newest.key) && this.originals.get(newest.key)?.versionId !== firstId) this.originals.set(newest.key, { versionId: firstId });
      return { key: newest.key, size: newest.size, ...(newest.modified ? { modified: newest.modified } : {}), ...(newest.etag ? { etag: newest.etag } : {}) };
    };
    for await (const v of this.raw.listVersions(prefix)) {
      if (group.length > 0 && group[0]!.key !== v.key) {
        const info = flush();
        if (info !== null) yield info;
      }
      group.push(v);
    }
    const info = flush();
    if (info !== null) yield info;
  }

  /**
   * Remove the keys for good: delete markers and newer versions first, the first version
   * last and only if nothing newer stayed (a retained junk version on top must not become
   * the object). Throws kind "retained" naming what retention still protects.
   */
  async delete(keys: readonly string[]): Promise<void> {
    const retained: string[] = [];
    for (const key of new Set(keys)) {
      const versions = await versionsOf(this.raw, key);
      const data = versions.filter((v) => !v.deleteMarker);
      const first = data[data.length - 1];
      const rest = versions.filter((v) => v !== first);
      const kept = rest.length === 0 ? [] : (await this.raw.deleteVersions(rest)).retained;
      if (kept.length === 0 && first !== undefined) {
        const r = await this.raw.deleteVersions([first]);
        if (r.retained.length > 0) retained.push(key);
      } else if (kept.length > 0) {
        retained.push(key);
      }
      this.originals.delete(key);
    }
    if (retained.length > 0) {
      throw new StoreError(
        "retained",
        `${retained.length} object${retained.length === 1 ? " is" : "s are"} still under S3 Object Lock retention in ${this.location} (e.g. ${retained[0]}): they can be deleted once it ends`,
        {
          key: retained[0]!,
        },
      );
    }
  }

  listVersions(prefix: string): AsyncIterable<ObjectVersion> {
    return this.raw.listVersions(prefix);
  }

  getVersion(key: string, versionId?: string): Promise<VersionRead> {
    return this.raw.getVersion(key, versionId);
  }

  extendRetention(key: string, retention: Retention, versionId?: string): Promise<void> {
    return this.raw.extendRetention(key, retention, versionId);
  }

  deleteVersions(versions: readonly { key: string; versionId: string }[]): Promise<{ retained: { key: string; versionId: string }[] }> {
    return this.raw.deleteVersions(versions);
  }

  async bucketState(): Promise<BucketState> {
    if (this.raw.bucketState === undefined) throw new PloopvaultError(`${this.location}: cannot read the bucket's object lock state`);
    return this.raw.bucketState();
  }

  async close(): Promise<void> {
    await this.locks?.close();
    await this.raw.close();
  }
}

/**
 * The config of a repository on a store that keeps versions: the first version (an
 * overwrite cannot change the repository's settings, e.g. turn object lock off), also
 * when a delete marker hides it. On an unversioned bucket (no version id) or a store
 * without versions it is a plain read.
 */
export async function readFirstVersion(store: ObjectStore, key: string): Promise<VersionRead> {
  if (!isVersionedStore(store)) return { body: await store.get(key), versionId: null, retainUntil: null };
  let current: VersionRead | null = null;
  try {
    current = await store.getVersion(key);
    if (current.versionId === null) return current; // unversioned bucket: nothing can hide behind it
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  let versions: ObjectVersion[];
  try {
    versions = await versionsOf(store, key);
  } catch (error) {
    // credentials without s3:ListBucketVersions: what GET gave is all we can see
    if (current !== null && error instanceof StoreError && error.kind === "auth") return current;
    throw error;
  }
  const data = versions.filter((v) => !v.deleteMarker);
  const first = data[data.length - 1];
  if (first === undefined) throw new StoreError("not-found", `object ${key} not found in ${store.location}`, { key });
  if (current !== null && current.versionId === first.versionId) return current;
  return store.getVersion(key, first.versionId);
}

/**
 * The chunks a run references without uploading them (known from earlier backups) must be
 * retained for the run's needs before its manifest is written: reference() extends, in
 * the background with bounded concurrency, those whose lock time does not cover the run;
 * drain() waits for them (call it before publishing). Each chunk is looked at once per run.
 */
export class ChunkRetentionKeeper {
  private readonly handled = new ChunkIdHashSet();
  private readonly limiter: TaskLimiter;
  /** Chunks whose retention this run extended. */
  extended = 0;

  constructor(
    private readonly view: ObjectLockView,
    private readonly lockTimes: ChunkLockTimes | null,
    concurrency = 16,
  ) {
    this.limiter = new TaskLimiter(concurrency);
  }

  async reference(id: Uint8Array): Promise<void> {
    if (this.handled.has(id)) return;
    this.handled.add(id);
    const { schedule } = this.view;
    const basis = this.view.basis.getTime();
    if (schedule.chunkCovered(id, this.lockTimes?.at(id) ?? 0, basis)) return;
    const idHex = Buffer.from(id).toString("hex");
    const retention = schedule.retention(schedule.chunkUntil(id, basis));
    await this.limiter.submit(async () => {
      const key = chunkKey(idHex);
      try {
        await this.view.extendRetention(key, retention);
      } catch (error) {
        if (!isNotFound(error)) throw error;
        // the current version is a delete marker (hidden): retain what is under it
        const data = (await versionsOf(this.view, key)).filter((v) => !v.deleteMarker);
        if (data.length === 0)
          throw new IntegrityError(
            `chunk ${idHex} is missing from ${this.view.location}: an earlier backup references it, but it is gone (run "ploopvault check")`,
          );
        for (const v of data) await this.view.extendRetention(key, retention, v.versionId);
      }
      this.extended++;
    });
  }

  async drain(): Promise<void> {
    await this.limiter.drain();
  }
}

/**
 * `init --object-lock`: the repository's bucket must have S3 Object Lock (created with it
 * when missing), the lock bucket must exist without versioning (created when missing; it
 * must honour conditional writes: createRepository probes it). Refuses with one line
 * saying what to do otherwise.
 */
export async function prepareObjectLockBuckets(store: ObjectStore, lockBucket: string): Promise<void> {
  if (!isVersionedStore(store) || store.bucketState === undefined || store.sibling === undefined) {
    throw new UsageError(`--object-lock needs an S3 repository (s3://BUCKET[/PREFIX]): ${store.location} has no object lock`);
  }
  await store.ensureContainer?.({ objectLock: true });
  const state = await store.bucketState();
  if (!state.objectLock) {
    throw new PloopvaultError(
      `the bucket of ${store.location} does not have S3 Object Lock enabled, and it can only be enabled when a bucket is created: use a new bucket ("ploopvault init --object-lock" creates it with object lock, or: aws s3api create-bucket --object-lock-enabled-for-bucket)`,
    );
  }
  const locks = store.sibling(lockBucket);
  try {
    await locks.ensureContainer?.();
    const lockState = await locks.bucketState?.();
    if (lockState !== undefined && lockState.versioning !== "off") {
      throw new PloopvaultError(
        `lock bucket ${lockBucket} has versioning ${lockState.versioning}: lock objects need an unversioned bucket (give another with --lock-bucket NAME)`,
      );
    }
  } finally {
    await locks.close();
  }
}

/** The unversioned store of the lock bucket beside `store`'s bucket (close it after use). */
export function lockBucketStore(store: ObjectStore, lockBucket: string): ObjectStore {
  if (store.sibling === undefined) throw new UsageError(`--object-lock needs an S3 repository (s3://BUCKET[/PREFIX]): ${store.location} has no object lock`);
  return store.sibling(lockBucket);
}

/** The default lock bucket of an object-lock repository in `bucket`. */
export function defaultLockBucket(bucket: string): string {
  return `${bucket}-locks`;
}
