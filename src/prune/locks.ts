/**
 * The objects under locks/ that coordinate backups and prune (docs/prune.md):
 *
 *   locks/backup-<host>-<pid>-<random>   a running backup (registration)
 *   locks/sweep-<host>-<pid>-<random>    a prune in its deleting phase (sweep marker)
 *   locks/prune                          the one prune running (mutual exclusion)
 *   locks/probe-<host>-<pid>-<random>    a short-lived object written to read the clock
 *
 * Each holds a small JSON body (who, since when, with which TTL) and is re-written every
 * `refresh`; it is live while its LastModified is less than TTL old. Ages are measured on
 * the storage side's clock only: "now" is the LastModified of an object this process has
 * just written (a lower bound of the server's current time), never the local clock.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { PloopvaultError, UsageError } from "../errors.js";
import type { ObjectInfo, ObjectStore } from "../uploader/store.js";

export const LOCKS_PREFIX = "locks/";
export const PRUNE_LOCK_KEY = "locks/prune";

export type LockKind = "backup" | "sweep" | "prune" | "probe" | "unknown";

/**
 * Timing of every lock object. The holder re-writes it every `refreshMs` and stops
 * trusting it (fences itself) when more than `limitMs` = ttl - margin passed since the
 * start of its last successful refresh; readers consider it dead only when its age
 * exceeds ttl (+ CLOCK_SLACK_MS). The margin bounds how long one request issued just
 * before the limit may take (a manifest PUT, a DeleteObjects batch).
 */
export interface LockTiming {
  ttlMs: number;
  refreshMs: number;
  marginMs: number;
  /** How often waiting loops look again. */
  pollMs: number;
}

/**
 * Slack for timestamp granularity (S3 HEAD reports LastModified to the second, listings
 * to the millisecond) and for a local file's mtime being set while it is written.
 */
export const CLOCK_SLACK_MS = 2000;
/** A declared TTL above this is not believed (a damaged body must not block for ever). */
const MAX_DECLARED_TTL_MS = 24 * 3_600_000;

export const DEFAULT_TTL_MS = 10 * 60_000;
export const DEFAULT_REFRESH_MS = 60_000;

function envSeconds(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name} must be a positive number of seconds, got "${v}"`);
  return n * 1000;
}

/**
 * Defaults: TTL 10 min, refresh 60 s, margin TTL/3. Hidden knobs (tests, experiments):
 * env PLOOPVAULT_LOCK_TTL and PLOOPVAULT_LOCK_REFRESH (seconds), or the arguments.
 * Every node should use the same TTL; readers also honour a longer TTL declared in a
 * lock's body.
 */
export function lockTiming(overrides: { ttlMs?: number; refreshMs?: number } = {}): LockTiming {
  const ttlMs = overrides.ttlMs ?? envSeconds("PLOOPVAULT_LOCK_TTL") ?? DEFAULT_TTL_MS;
  const refreshMs = overrides.refreshMs ?? envSeconds("PLOOPVAULT_LOCK_REFRESH") ?? Math.min(DEFAULT_REFRESH_MS, ttlMs / 10);
  const marginMs = ttlMs / 3;
  if (refreshMs * 2 > ttlMs - marginMs) {
    throw new UsageError(`lock refresh interval (${refreshMs / 1000} s) must be at most a third of the lock TTL (${ttlMs / 1000} s)`);
  }
  return { ttlMs, refreshMs, marginMs, pollMs: Math.max(200, Math.min(5000, refreshMs)) };
}

export interface LockBody {
  format: "ploopvault-lock";
  version: 1;
  kind: LockKind;
  host: string;
  pid: number;
  /** When the holder started (its own clock; for messages only). */
  started: string;
  ttlSeconds: number;
}

let writes = 0;

/**
 * A lock object's body. Every call gives a different body (`written` and `seq`), so every
 * version of a lock object has its own etag on every store (S3's ETag is a content hash):
 * a takeover that read an old version can never match a newer one with the same content.
 */
export function lockBody(kind: LockKind, host: string, timing: LockTiming, started: Date): Buffer {
  const body: LockBody = {
    format: "ploopvault-lock",
    version: 1,
    kind,
    host,
    pid: process.pid,
    started: started.toISOString(),
    ttlSeconds: timing.ttlMs / 1000,
  };
  return Buffer.from(`${JSON.stringify({ ...body, written: new Date().toISOString(), seq: ++writes })}\n`);
}

export function parseLockBody(body: Buffer): LockBody | null {
  try {
    const v = JSON.parse(body.toString("utf8")) as Partial<LockBody>;
    if (v.format !== "ploopvault-lock" || typeof v.host !== "string" || typeof v.pid !== "number") return null;
    return v as LockBody;
  } catch {
    return null;
  }
}

/** Host names become part of object names: keep them plain. */
function safeName(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64) || "host";
}

/** A unique key for a lock object of this process. */
export function uniqueLockKey(kind: "backup" | "sweep" | "probe", host: string): string {
  return `${LOCKS_PREFIX}${kind}-${safeName(host)}-${process.pid}-${randomBytes(6).toString("hex")}`;
}

export function lockKindOf(key: string): LockKind {
  if (key === PRUNE_LOCK_KEY) return "prune";
  const name = key.startsWith(LOCKS_PREFIX) ? key.slice(LOCKS_PREFIX.length) : "";
  for (const kind of ["backup", "sweep", "probe"] as const) if (name.startsWith(`${kind}-`) && !name.includes("/")) return kind;
  return "unknown";
}

export interface LockEntry extends ObjectInfo {
  kind: LockKind;
}

export async function listLocks(store: ObjectStore): Promise<LockEntry[]> {
  const out: LockEntry[] = [];
  for await (const info of store.list(LOCKS_PREFIX)) out.push({ ...info, kind: lockKindOf(info.key) });
  return out;
}

export interface JudgedLock extends LockEntry {
  /** Age on the storage clock (ms) against the "now" used. */
  ageMs: number;
  live: boolean;
  holder: LockBody | null;
}

/**
 * Split lock objects into live and expired, with `now` a lower bound of the storage
 * clock. Errs on the side of "live": an entry without a time is live; an entry that looks
 * expired by our TTL is read, and a longer TTL declared in it is honoured.
 */
export async function judgeLocks(store: ObjectStore, entries: readonly LockEntry[], now: Date, timing: LockTiming): Promise<JudgedLock[]> {
  const out: JudgedLock[] = [];
  for (const e of entries) {
    const ageMs = e.modified === undefined ? 0 : now.getTime() - e.modified.getTime();
    let live = e.modified === undefined || ageMs <= timing.ttlMs + CLOCK_SLACK_MS;
    let holder: LockBody | null = null;
    if (!live) {
      try {
        holder = parseLockBody(await store.get(e.key));
      } catch {
        holder = null; // gone meanwhile (or unreadable): judged by our TTL
      }
      const declared =
        holder !== null && typeof holder.ttlSeconds === "number" && holder.ttlSeconds > 0 ? Math.min(holder.ttlSeconds * 1000, MAX_DECLARED_TTL_MS) : 0;
      live = ageMs <= Math.max(timing.ttlMs, declared) + CLOCK_SLACK_MS;
    }
    out.push({ ...e, ageMs, live, holder });
  }
  return out;
}

/** Read the holders of (live) locks for messages; failures give null. */
export async function readHolder(store: ObjectStore, key: string): Promise<LockBody | null> {
  try {
    return parseLockBody(await store.get(key));
  } catch {
    return null;
  }
}

export function describeHolder(key: string, holder: LockBody | null): string {
  if (holder === null) return key;
  return `${holder.host} pid ${holder.pid} (started ${holder.started})`;
}

/** A listing did not show an object this process had written before it: the store's listings are not consistent. */
export class InconsistentListingError extends PloopvaultError {}

/**
 * The storage clock's "now", lower bound: the LastModified of `ownKey` in a listing just
 * taken. The key was written by us before the listing started, so a listing without it
 * is not read-after-write consistent (an eventually consistent S3 implementation or a
 * gateway cache): the handshake's "at least one side sees the other" needs exactly that
 * consistency, so the operation stops instead of guessing.
 */
export function nowFromOwn(store: ObjectStore, entries: readonly ObjectInfo[], ownKey: string): Date {
  const own = entries.find((e) => e.key === ownKey);
  if (own === undefined) {
    throw new InconsistentListingError(
      `${store.location}: a listing of ${LOCKS_PREFIX} did not show ${ownKey}, which this process wrote just before: the storage's listings are not consistent with its writes (eventually consistent server or caching proxy); prune and backup cannot coordinate safely there, stopping`,
    );
  }
  if (own.modified === undefined) throw new Error(`internal error: ${ownKey} has no modification time in ${store.location}`);
  return own.modified;
}

/** The storage clock's "now" (lower bound) by writing, reading and removing a probe object. */
export async function probeNow(store: ObjectStore, host: string): Promise<Date> {
  const key = uniqueLockKey("probe", host);
  await store.put(
    key,
    Buffer.from(
      `${JSON.stringify({ format: "ploopvault-lock", version: 1, kind: "probe", host, pid: process.pid, started: new Date().toISOString(), ttlSeconds: 60 })}\n`,
    ),
  );
  try {
    const info = await store.stat(key);
    if (info?.modified === undefined) throw new Error(`internal error: probe ${key} has no modification time in ${store.location}`);
    return info.modified;
  } finally {
    await store.delete([key]).catch(() => undefined);
  }
}

export function defaultLockHost(): string {
  return hostname();
}
