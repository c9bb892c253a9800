/**
 * One prune at a time: locks/prune, created with a conditional create and kept alive by
 * conditional overwrites on our own etag (so a holder notices a takeover at its next
 * refresh). A lock whose LastModified is older than its TTL on the storage clock belongs
 * to a dead (or fenced) prune and is taken over with a conditional overwrite on the
 * stale etag: of several prunes that saw the same stale lock exactly one succeeds
 * (S3/RGW If-Match; the local store's rename-based compare-and-swap).
 *
 * Safety of chunk deletion does not depend on this lock (every sweep does its own
 * handshake with the backups, docs/prune.md); it avoids duplicated work and confusing
 * concurrent output.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { PloopvaultError } from "../errors.js";
import { StoreError, type ObjectStore } from "../uploader/store.js";
import { formatDuration } from "./duration.js";
import { Lease } from "./lease.js";
import { CLOCK_SLACK_MS, describeHolder, lockBody, parseLockBody, PRUNE_LOCK_KEY, probeNow, type LockTiming } from "./locks.js";

export class PruneLockBusyError extends PloopvaultError {}

export interface PruneLockOptions {
  host: string;
  timing: LockTiming;
  /** How long to wait for a live holder to finish. */
  waitMs: number;
  log?: (line: string) => void;
  warn?: (line: string) => void;
}

export async function acquirePruneLock(store: ObjectStore, options: PruneLockOptions): Promise<Lease> {
  const { timing, host } = options;
  const started = new Date();
  const newLease = (): Lease =>
    new Lease(store, PRUNE_LOCK_KEY, () => lockBody("prune", host, timing, started), timing, {
      shared: true,
      what: `prune lock ${PRUNE_LOCK_KEY}`,
      ...(options.warn ? { warn: options.warn } : {}),
    });
  const waitStart = performance.now();
  let announced = false;
  for (;;) {
    const lease = newLease();
    try {
      await lease.create();
      return lease;
    } catch (error) {
      if (!(error instanceof StoreError && (error.kind === "exists" || error.kind === "changed"))) throw error;
    }
    const info = await store.stat(PRUNE_LOCK_KEY);
    if (info === null) continue; // released meanwhile
    const now = await probeNow(store, host);
    let holder = null;
    try {
      holder = parseLockBody(await store.get(PRUNE_LOCK_KEY));
    } catch {
      // gone meanwhile: try again
    }
    const declared = holder !== null && holder.ttlSeconds > 0 ? Math.min(holder.ttlSeconds * 1000, 24 * 3_600_000) : 0;
    const age = info.modified === undefined ? 0 : now.getTime() - info.modified.getTime();
    const who = describeHolder(PRUNE_LOCK_KEY, holder);
    if (info.modified !== undefined && age > Math.max(timing.ttlMs, declared) + CLOCK_SLACK_MS && info.etag !== undefined) {
      try {
        await lease.create({ ifMatch: info.etag });
        options.log?.(`took over the prune lock of ${who}, expired ${formatDuration(age)} after its last refresh`);
        return lease;
      } catch (error) {
        if (!(error instanceof StoreError && error.kind === "changed")) throw error;
        continue; // someone else refreshed or took it first
      }
    }
    const waited = performance.now() - waitStart;
    if (waited >= options.waitMs) {
      throw new PruneLockBusyError(
        `another prune is running on ${store.location}: ${who}, lock refreshed ${formatDuration(Math.max(0, age))} ago; gave up after ${formatDuration(waited)}`,
      );
    }
    if (!announced) options.log?.(`waiting for the prune of ${who} to finish`);
    announced = true;
    await sleep(Math.min(timing.pollMs, options.waitMs - waited));
  }
}
