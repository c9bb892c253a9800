/**
 * A running backup makes itself visible to prune (docs/prune.md, "Backup registration"):
 *
 *   const reg = await BackupRegistration.start(repo, host);   // BEFORE loading known chunks
 *   ... backupDisk(..., { publish: reg }) ...                  // the manifest PUT runs in reg.guard()
 *   await reg.stop();                                          // finally
 *
 * start() writes locks/backup-<host>-<pid>-<random> through the store's control channel
 * (lock traffic never queues behind data), then looks for a live sweep marker (a prune
 * deleting chunks) and waits until there is none (bounded; then it fails with a message
 * naming the prune). The registration is re-written every refresh interval with
 * If-Match; it fences itself once it may have looked expired to a prune, which aborts
 * `signal` (the backup stops) and makes guard() refuse, cancel or disown the manifest PUT,
 * so a backup never counts a manifest that could reference chunks a prune deleted.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { PloopvaultError } from "../errors.js";
import type { ObjectStore } from "../uploader/store.js";
import { formatDuration } from "./duration.js";
import { Lease, LeaseLapsedError } from "./lease.js";
import { describeHolder, judgeLocks, listLocks, lockBody, lockTiming, nowFromOwn, readHolder, uniqueLockKey, type LockTiming } from "./locks.js";

export const DEFAULT_SWEEP_WAIT_MS = 60 * 60_000;

export interface RegistrationOptions {
  timing?: LockTiming;
  /** How long to wait for a running sweep; default 1 h, env PLOOPVAULT_SWEEP_WAIT (seconds). */
  sweepWaitMs?: number;
  /** Progress lines (waiting for a prune). */
  log?: (line: string) => void;
  /** Problems that do not stop the backup yet (a failed refresh). */
  warn?: (line: string) => void;
}

export class SweepRunningError extends PloopvaultError {}

/**
 * What the backup pipeline needs to publish a manifest safely: a request run through
 * guard() is refused unless the registration is valid with the margin to spare, aborted
 * the moment it lapses, and, once it returns, rejected with LeaseLapsedError if the
 * registration may have looked expired before it landed.
 */
export interface PublishGuard {
  readonly signal: AbortSignal;
  guard<T>(action: string, request: (signal: AbortSignal) => Promise<T>): Promise<T>;
}

export { LeaseLapsedError };

export class BackupRegistration implements PublishGuard {
  private constructor(private readonly lease: Lease) {}

  /** The registration's object key. */
  get key(): string {
    return this.lease.key;
  }

  /** Aborted when the registration lapses (the backup may stop early: it cannot publish). */
  get signal(): AbortSignal {
    return this.lease.signal;
  }

  /**
   * Register, then wait while a prune is deleting chunks. `repo` is a Repository or
   * anything with its ObjectStore as `store`.
   */
  static async start(repo: { store: ObjectStore }, host: string, options: RegistrationOptions = {}): Promise<BackupRegistration> {
    const store = repo.store.controlChannel?.() ?? repo.store;
    const timing = options.timing ?? lockTiming();
    const envWait = process.env.PLOOPVAULT_SWEEP_WAIT;
    const waitMs = options.sweepWaitMs ?? (envWait !== undefined && envWait !== "" && Number(envWait) >= 0 ? Number(envWait) * 1000 : DEFAULT_SWEEP_WAIT_MS);
    const key = uniqueLockKey("backup", host);
    const started = new Date();
    const lease = new Lease(store, key, () => lockBody("backup", host, timing, started), timing, {
      what: `backup registration ${key}`,
      ...(options.warn ? { warn: options.warn } : {}),
    });
    await lease.create();
    const registration = new BackupRegistration(lease);
    try {
      // Our registration is written; now look for sweeps (the handshake's second half).
      const waitStart = performance.now();
      let announced = false;
      for (;;) {
        const entries = await listLocks(store);
        const now = nowFromOwn(store, entries, key);
        const sweeps = (
          await judgeLocks(
            store,
            entries.filter((e) => e.kind === "sweep"),
            now,
            timing,
          )
        ).filter((s) => s.live);
        if (sweeps.length === 0) break;
        const holders = await Promise.all(sweeps.map(async (s) => describeHolder(s.key, s.holder ?? (await readHolder(store, s.key)))));
        const waited = performance.now() - waitStart;
        if (waited >= waitMs) {
          throw new SweepRunningError(
            `repository ${store.location} is being pruned (chunk deletion by ${holders.join(", ")}); gave up waiting after ${formatDuration(waited)} — run the backup again later`,
          );
        }
        if (!announced) options.log?.(`waiting for prune to finish deleting chunks in ${store.location} (${holders.join(", ")})`);
        announced = true;
        lease.assertValid("go on waiting for the prune");
        await sleep(Math.min(timing.pollMs, Math.max(0, waitMs - waited)));
      }
    } catch (error) {
      await lease.release().catch(() => undefined);
      throw error;
    }
    return registration;
  }

  /**
   * Throws if the registration may have looked expired to a prune at some point, or
   * could before a request issued now completes: the backup must not write its manifest.
   */
  assertValid(): void {
    this.lease.assertValid("write the backup's manifest (a prune may have deleted chunks this backup relies on; run the backup again)");
  }

  guard<T>(action: string, request: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return this.lease.guard(`${action} (a prune may have deleted chunks this backup relies on; run the backup again)`, request);
  }

  /** Null while valid; else why the registration lapsed. */
  lapsed(): string | null {
    return this.lease.lapsed();
  }

  /**
   * Unregister. Returns false if the registration lapsed before now: manifests published
   * through guard() before the lapse are sound (each was checked when it landed); the
   * caller reports the lapse (nothing after it may be trusted).
   */
  async stop(): Promise<boolean> {
    const ok = this.lease.lapsed() === null;
    try {
      await this.lease.release();
    } catch {
      // it expires by itself; prune removes expired registrations
    }
    return ok;
  }
}
