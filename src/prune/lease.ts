/**
 * A lease: one lock object kept alive by re-writing it every `refresh`, with the holder's
 * self-fence. The holder trusts its lease only while every gap between two successful
 * refreshes, measured from the START of the earlier request to the END of the later one,
 * and the time since the start of the last successful refresh, stay below
 * limit = TTL - margin. Why that is enough (docs/prune.md): the server stamps a write
 * between its request's start and end, so a reader that sees the object older than TTL
 * on the server clock implies that more than TTL passed on ours between a refresh start
 * and the next refresh end (or now), which the holder notices.
 *
 * Time is measured on two clocks and the larger reading counts: the monotonic clock
 * (immune to clock steps) and the wall clock, because the monotonic clock stands still
 * while the host is suspended (and often while a VM is paused), and the storage clock
 * does not: after a resume the wall clock shows the gap, the monotonic one does not.
 *
 * Unique lock objects (registrations, sweep markers) are created with a conditional
 * create and refreshed with `If-Match` on our own last etag, so an object that another
 * process removed (a prune that judged it expired) is noticed and never silently
 * re-created. The shared prune lock is refreshed the same way (it detects a takeover).
 *
 * A watchdog fences the lease the moment the limit passes, even while no refresh is due,
 * and aborts `signal`: work that depends on the lease (the backup, the manifest PUT, a
 * delete batch) stops at once. Once fenced a lease never recovers. It then removes its
 * object, unless requests that depend on it may still land (`guard()`): the object stays
 * (and expires by itself after the margin) until they settle.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { errorLine, PloopvaultError } from "../errors.js";
import { StoreError, type ObjectStore } from "../uploader/store.js";
import { formatDuration } from "./duration.js";
import { CLOCK_SLACK_MS, type LockTiming } from "./locks.js";

export class LeaseLapsedError extends PloopvaultError {}

/** The two clocks a lease reads (tests inject a host that sleeps through a suspend). */
export interface LeaseClock {
  /** Monotonic milliseconds (performance.now()). */
  mono(): number;
  /** Wall-clock milliseconds (Date.now()). */
  wall(): number;
}

const SYSTEM_CLOCK: LeaseClock = { mono: () => performance.now(), wall: () => Date.now() };

export interface LeaseOptions {
  /**
   * The key is shared with other holders (locks/prune): a fenced or taken-over lease
   * must not delete it. Unique keys (registrations, markers) are always ours to delete.
   */
  shared?: boolean;
  /** What the lease is, for messages ("backup registration locks/backup-..."). */
  what: string;
  warn?: (line: string) => void;
  clock?: LeaseClock;
}

/** Both clocks at one moment. */
interface Instant {
  mono: number;
  wall: number;
}

/** How long release() lets a refresh in flight finish before cancelling it. */
const RELEASE_WAIT_MS = 5000;

export class Lease {
  /** Both clocks at the start of the last successful write. */
  private lastStart: Instant = { mono: 0, wall: 0 };
  private etag: string | undefined;
  private modified: Date | undefined;
  private fenceReason: string | null = null;
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | null = null;
  /**
   * Cancels the refresh in flight once it cannot matter (fenced or released): a stalled
   * PUT would otherwise hold the run for its whole retry budget. Cancelling is safe: a
   * refresh carries If-Match, so one that still lands late cannot re-create the object.
   */
  private refreshCancel: AbortController | null = null;
  private stopped = false;
  /** Requests in flight that must land while the object is live (guard()). */
  private guarded = 0;
  private readonly controller = new AbortController();
  /** Aborted when the lease is fenced. */
  readonly signal = this.controller.signal;
  private readonly clock: LeaseClock;

  constructor(
    readonly store: ObjectStore,
    readonly key: string,
    private readonly body: () => Buffer,
    readonly timing: LockTiming,
    private readonly options: LeaseOptions,
  ) {
    this.clock = options.clock ?? SYSTEM_CLOCK;
  }

  private instant(): Instant {
    return { mono: this.clock.mono(), wall: this.clock.wall() };
  }

  /** Milliseconds from `since` to now: the larger of the two clocks' readings. */
  private elapsedSince(since: Instant): number {
    return Math.max(this.clock.mono() - since.mono, this.clock.wall() - since.wall);
  }

  get limitMs(): number {
    return this.timing.ttlMs - this.timing.marginMs;
  }

  /** The object's LastModified as of our last write (a lower bound of the storage clock). */
  get lastModified(): Date | undefined {
    return this.modified;
  }

  /**
   * Write the object, start refreshing. A unique key is created conditionally (it must
   * not exist); `mode.ifMatch` takes over a stale shared object with that etag.
   */
  async create(mode: { ifMatch?: string } = {}): Promise<void> {
    const start = this.instant();
    const body = this.body();
    await this.store.put(this.key, body, mode.ifMatch !== undefined ? { ifMatch: mode.ifMatch } : { ifAbsent: true });
    await this.readBack(body);
    this.lastStart = start;
    this.schedule(this.timing.refreshMs);
    this.watchdog = setInterval(() => void this.lapsed(), Math.max(50, Math.min(1000, this.limitMs / 20)));
    this.watchdog.unref();
  }

  /**
   * Our etag and LastModified, right after our write. The store's put does not return the
   * etag, so it is read with stat(), then the body is read back: if it is not ours, another
   * writer got in between and the etag we saw may be theirs (every body is unique).
   */
  private async readBack(body: Buffer): Promise<void> {
    const info = await this.store.stat(this.key);
    const stored = info === null ? null : await this.store.get(this.key).catch(() => null);
    if (info === null || info.etag === undefined || stored === null || !stored.equals(body)) {
      throw new StoreError("changed", `${this.options.what} was overwritten or removed by another process right after our write`, { key: this.key });
    }
    this.etag = info.etag;
    this.modified = info.modified;
  }

  private schedule(ms: number): void {
    if (this.stopped || this.fenceReason !== null) return;
    this.timer = setTimeout(() => {
      this.inFlight = this.refresh().finally(() => {
        this.inFlight = null;
      });
    }, ms);
    this.timer.unref();
  }

  private async refresh(): Promise<void> {
    const start = this.instant();
    if (this.lapsed() !== null) return;
    try {
      const body = this.body();
      this.refreshCancel = new AbortController();
      await this.store.put(this.key, body, { ifMatch: this.etag!, signal: this.refreshCancel.signal });
      // our new version: the next refresh and release() must recognize it as ours
      await this.readBack(body);
    } catch (error) {
      if (error instanceof StoreError && error.kind === "changed") {
        await this.fence(`it was removed or taken over by another process (a prune may have judged it expired)`);
        return;
      }
      if (this.stopped || this.fenceReason !== null) return;
      this.options.warn?.(`cannot refresh ${this.options.what}: ${errorLine(error)}; retrying`);
      this.schedule(Math.min(this.timing.refreshMs, Math.max(200, this.timing.pollMs)));
      return;
    }
    if (this.fenceReason !== null || this.stopped) return;
    const gap = this.elapsedSince(this.lastStart);
    if (gap > this.limitMs) {
      await this.fence(`a refresh completed ${formatDuration(gap)} after the previous one started (limit ${formatDuration(this.limitMs)})`);
      return;
    }
    this.lastStart = start;
    this.schedule(this.timing.refreshMs);
  }

  private async fence(reason: string): Promise<void> {
    if (this.fenceReason !== null) return;
    this.fenceReason = reason;
    this.controller.abort(new LeaseLapsedError(`${this.options.what} lapsed: ${reason}`));
    this.refreshCancel?.abort(new LeaseLapsedError(`${this.options.what} lapsed: ${reason}`));
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.watchdog !== undefined) clearInterval(this.watchdog);
    if (!this.stopped) this.options.warn?.(`${this.options.what} lapsed: ${reason}`);
    // We must not act on it any more; do not make others wait for it either, unless a
    // request that depends on it may still land: then it stays until that settles.
    if (!this.options.shared && this.guarded === 0) await this.store.delete([this.key]).catch(() => undefined);
  }

  /** The reason the lease lapsed, or null while it is valid. */
  lapsed(): string | null {
    if (this.fenceReason === null && !this.stopped) {
      const since = this.elapsedSince(this.lastStart);
      if (since > this.limitMs) void this.fence(`no successful refresh for ${formatDuration(since)} (limit ${formatDuration(this.limitMs)})`);
    }
    return this.fenceReason;
  }

  /**
   * Throws unless the lease is valid now with at least `margin` to spare: a request
   * issued right after this returns lands while others still see the object live,
   * provided it completes within the margin (guard() enforces that).
   */
  assertValid(action: string): void {
    const reason = this.lapsed();
    if (reason !== null) throw new LeaseLapsedError(`${this.options.what} lapsed (${reason}): refusing to ${action}`);
  }

  /**
   * After a request: throws if, counting until now, the object may already have looked
   * dead to others (the request took longer than the margin, or the lease lapsed).
   */
  assertCoveredUntilNow(action: string): void {
    const elapsed = this.elapsedSince(this.lastStart);
    if (this.fenceReason !== null || elapsed > this.timing.ttlMs - CLOCK_SLACK_MS) {
      throw new LeaseLapsedError(
        `${this.options.what} may have looked expired to other processes while we were ${action} (${formatDuration(elapsed)} since its last refresh, TTL ${formatDuration(this.timing.ttlMs)}${this.fenceReason === null ? "" : `; ${this.fenceReason}`})`,
      );
    }
  }

  /**
   * Run a request that must land while the object is live (a manifest PUT, a delete
   * batch): refused unless the lease is valid with the margin to spare, given `signal`
   * (aborted the moment the lease lapses), and checked once it returns: if the lease
   * may have looked expired meanwhile, it throws LeaseLapsedError although the request
   * may have landed (the caller undoes what it can). While it runs, a fence does not
   * delete the object, so a request still in flight at the server stays covered.
   */
  async guard<T>(action: string, request: (signal: AbortSignal) => Promise<T>): Promise<T> {
    this.assertValid(action);
    this.guarded++;
    try {
      const result = await request(this.signal);
      this.assertCoveredUntilNow(action);
      return result;
    } catch (error) {
      if (this.signal.aborted)
        throw this.signal.reason instanceof Error ? this.signal.reason : new LeaseLapsedError(`${this.options.what} lapsed while ${action}`);
      throw error;
    } finally {
      this.guarded--;
    }
  }

  /** Stop refreshing; remove the object (unless it is no longer ours). */
  async release(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.watchdog !== undefined) clearInterval(this.watchdog);
    if (this.inFlight !== null && this.fenceReason === null && !this.options.shared) {
      // A healthy refresh finishes in milliseconds: let it, so that our DELETE never races
      // a conditional PUT the server is still applying (RGW checks If-Match, then writes:
      // a DELETE in between would be undone). Only a stalled one is cancelled, after a bound.
      const bound = new AbortController();
      await Promise.race([this.inFlight.catch(() => undefined), sleep(RELEASE_WAIT_MS, undefined, { signal: bound.signal }).catch(() => undefined)]);
      bound.abort();
    }
    // A shared object's refresh may have landed: wait for it, to recognize our etag below.
    if (!this.options.shared || this.fenceReason !== null) this.refreshCancel?.abort(new Error(`${this.options.what} released`));
    if (this.inFlight !== null) await this.inFlight.catch(() => undefined);
    if (this.options.shared) {
      if (this.fenceReason !== null) return; // someone else's now
      const info = await this.store.stat(this.key).catch(() => null);
      if (info?.etag !== undefined && info.etag !== this.etag) return; // taken over
    }
    await this.store.delete([this.key]);
  }
}
