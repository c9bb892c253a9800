/**
 * src/uploader is the store every command uses: this interface, its implementations
 * (local directory, S3, in memory for tests) and the decorators that wrap them (rate
 * limits: rate-limit.ts). Commands and the library reach storage only through it.
 *
 * The one storage interface every repository backend implements (local directory, S3).
 *
 * Contract (every implementation, and every decorator wrapping one, must keep it):
 * - Keys are '/'-separated relative paths such as "chunks/ab/ab12..." or
 *   "backups/101/<id>/manifest". No leading '/', no "." or ".." segments.
 * - put() is atomic: a reader sees either no object or the complete body, never a
 *   partial one. put() overwrites unless `ifAbsent` is set; with `ifAbsent` it throws
 *   StoreError kind "exists" when the key is already present (conditional write).
 *   With `ifMatch` (an etag from stat()) it replaces the object only if its current
 *   version still has that etag, else throws kind "changed" (also when it is missing):
 *   of several writers holding the same etag at most one succeeds (compare-and-swap).
 *   `put` resolves only once the object is durable (local: fsync'd file and directory).
 * - get() returns the whole body, or throws StoreError kind "not-found".
 * - getRange() returns exactly `length` bytes from `offset` (or fewer only at the end
 *   of the object); a missing object is kind "not-found".
 * - stat() returns null for a missing key, never throws "not-found". It returns the
 *   object's etag (a token that changes with every put) and its modification time as
 *   the storage side's clock sets it (S3: the server's LastModified, which HEAD reports
 *   to the second; local: the file's mtime).
 * - list() yields every key that starts with the prefix (a plain string prefix as in S3,
 *   usually ending in '/'; "" lists everything), recursively, each exactly once, in no
 *   particular order, with its size and modification time (etag optional); a prefix
 *   nothing starts with yields nothing.
 * - delete() removes the keys; missing keys are not an error.
 * - Errors are StoreError with a kind, the key (if any) and the store's location in the
 *   message, so the one line an operator sees names what failed.
 * - put(..., { signal }) gives up once the signal is aborted (rejecting with its reason);
 *   an S3 PUT already received whole may still be applied by the server.
 * - controlChannel() is the store for lock objects (docs/prune.md): requests that must
 *   never queue behind data transfers (no bandwidth limit, their own S3 connections and
 *   retry state). Stores without separate channels return themselves.
 *
 * S3 Object Lock and versioned buckets (docs/object-lock.md); optional, S3 only. A store
 * without them (a local directory) refuses `retention` with a StoreError naming why.
 * - put(..., { retention }) writes the new version with that retention (mode and
 *   retain-until date); without it a version gets whatever the bucket's default is.
 * - listVersions() yields every version and delete marker under the prefix, grouped by
 *   key (a key's entries are consecutive), newest first within a key.
 * - getVersion(key, versionId?) reads one version (the current one without an id) and
 *   says which version it read (null on an unversioned bucket) and its retain-until
 *   date (null if not retained). A current delete marker reads as kind "not-found".
 * - extendRetention() sets a version's retain-until date (the current version without an
 *   id) and never shortens it: a later date already in place stays and is not an error.
 *   A key without such a version is kind "not-found".
 * - deleteVersions() removes versions (and delete markers) for good. A version the store
 *   refuses to delete because its retention has not ended is returned in `retained`, not
 *   thrown; any other refusal throws.
 * - bucketState() tells whether object lock and versioning are on; sibling(bucket) is a
 *   store for another bucket of the same server, credentials and prefix (the lock
 *   objects of an object-lock repository live in an unversioned one).
 */

import { PloopvaultError } from "../errors.js";

export interface ObjectInfo {
  key: string;
  size: number;
  /** Last modification time, when the backend knows it (set by the storage side's clock). */
  modified?: Date;
  /** Version token for PutOptions.ifMatch; always set by stat(), optional in list(). */
  etag?: string;
}

export type LockMode = "governance" | "compliance";

/** S3 Object Lock retention of one object version. */
export interface Retention {
  mode: LockMode;
  until: Date;
}

/** One version (or delete marker) of an object in a versioned bucket. */
export interface ObjectVersion {
  key: string;
  versionId: string;
  /** The current version of its key (what a plain GET reads, or hides, if a delete marker). */
  latest: boolean;
  deleteMarker: boolean;
  size: number;
  modified?: Date;
  etag?: string;
}

export interface VersionRead {
  body: Buffer;
  /** The version read; null on an unversioned bucket. */
  versionId: string | null;
  /** Retain-until date of that version, null if it is not retained. */
  retainUntil: Date | null;
}

export interface BucketState {
  objectLock: boolean;
  versioning: "enabled" | "suspended" | "off";
}

export interface PutOptions {
  /** Fail with kind "exists" instead of overwriting an existing object. */
  ifAbsent?: boolean;
  /** Replace the object only if its current etag is this one; else fail with kind "changed". */
  ifMatch?: string;
  /** Give up when aborted (the manifest PUT of a backup whose registration lapsed). */
  signal?: AbortSignal;
  /** S3 Object Lock retention of the new version (see the contract above). */
  retention?: Retention;
  /**
   * The body must be durable when put() resolves, the new name only after the next
   * flush(): a backup stores hundreds of chunks and needs their names durable only before
   * the manifest that names them. Stores whose writes are durable at once ignore it.
   */
  deferNameSync?: boolean;
}

export interface ObjectStore {
  /** Human-readable location for messages, e.g. "s3://bucket/prefix" or "/srv/repo". */
  readonly location: string;
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<void>;
  get(key: string): Promise<Buffer>;
  getRange(key: string, offset: number, length: number): Promise<Buffer>;
  stat(key: string): Promise<ObjectInfo | null>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  delete(keys: readonly string[]): Promise<void>;
  /** The store for lock traffic: never waits behind data (see the contract above). */
  controlChannel?(): ObjectStore;
  /** Create the bucket/directory if it does not exist (used by `init` only); objectLock: create it with S3 Object Lock enabled. */
  ensureContainer?(options?: { objectLock?: boolean }): Promise<void>;
  /**
   * Remove what interrupted writes left behind that list() never shows (a local
   * directory's ".tmp-*" files), last changed before `before` on the storage side's
   * clock; never anything younger, so a live writer's temp file is left alone. Stores
   * where an interrupted write leaves nothing (S3) do not have it. With `dryRun`, only
   * counts. Used by prune.
   */
  removeStaleTemporaries?(before: Date, options?: { dryRun?: boolean }): Promise<{ count: number; bytes: number }>;
  listVersions?(prefix: string): AsyncIterable<ObjectVersion>;
  getVersion?(key: string, versionId?: string): Promise<VersionRead>;
  extendRetention?(key: string, retention: Retention, versionId?: string): Promise<void>;
  deleteVersions?(versions: readonly { key: string; versionId: string }[]): Promise<{ retained: { key: string; versionId: string }[] }>;
  bucketState?(): Promise<BucketState>;
  sibling?(bucket: string): ObjectStore;
  /** Make durable every name put() wrote with deferNameSync so far (absent where writes are durable at once). */
  flush?(): Promise<void>;
  /** Release sockets/handles. */
  close(): Promise<void>;
}

export type StoreErrorKind =
  | "not-found" // the object does not exist
  | "exists" // conditional put found the object already present
  | "changed" // put with ifMatch found the object changed (another etag) or missing
  | "auth" // credentials missing, wrong or expired; access denied
  | "unreachable" // connection refused, DNS failure, timeouts after retries
  | "no-container" // bucket or repository directory missing
  | "retained" // a version under S3 Object Lock retention cannot be deleted yet
  | "io"; // anything else (disk full, read-only filesystem, 5xx after retries...)

export class StoreError extends PloopvaultError {
  readonly kind: StoreErrorKind;
  readonly key: string | undefined;
  constructor(kind: StoreErrorKind, message: string, options?: { key?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.key = options?.key;
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof StoreError && error.kind === "not-found";
}

/** Reject list prefixes that could escape a directory store ("" is fine: everything). */
export function validatePrefix(prefix: string): void {
  if (prefix.startsWith("/") || prefix.split("/").some((s, i, all) => (s === "" && i < all.length - 1) || s === "." || s === "..")) {
    throw new StoreError("io", `invalid list prefix "${prefix}"`);
  }
}

/** Reject keys that could escape a directory store or confuse S3 listings. */
export function validateKey(key: string): void {
  if (key === "" || key.startsWith("/") || key.endsWith("/") || key.split("/").some((s) => s === "" || s === "." || s === "..")) {
    throw new StoreError("io", `invalid object key "${key}"`, { key });
  }
}
