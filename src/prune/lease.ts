/**
 * A lease: one lock object kept alive by re-writing it every `refresh`, with the holder's
 * self-fence. The holder trusts its lease only while every gap between two successful
 * refreshes, measured on the local monotonic clock from the START of the earlier request
 * to the END of the later one, and the time since the start of the last successful
 * refresh, stay below limit = TTL - margin. Why that is enough (docs/prune.md): the
 * server stamps a write between its request's start and end, so a reader that sees the
 * object older than TTL on the server clock implies that more than TTL passed on ours
 * between a refresh start and the next refresh end (or now), which the holder notices.
 *
 * A failed refresh is retried soon; the gap rule, not the failure, decides. Once fenced
 * a lease never recovers: it stops refreshing and removes its object (the holder must not
 * act on it any more, so it should not block others either).
 */
import { PloopvaultError } from "../errors.js";
import { StoreError, type ObjectStore } from "../uploader/store.js";
import { formatDuration } from "./duration.js";
import { CLOCK_SLACK_MS, type LockTiming } from "./locks.js";

export class LeaseLapsedError extends PloopvaultError {}

export interface LeaseOptions {
  /** Refresh with a conditional overwrite on our own last etag (detects a takeover). */
  conditional?: boolean;
  /** What the lease is, for messages ("backup registration locks/backup-..."). */
  what: string;
  warn?: (line: string) => void;
}

export class Lease {
  /** performance.now() at the start of the last successful write. */
  private lastStart = 0;
  private etag: string | undefined;
  private modified: Date | undefined;
  private fenceReason: string | null = null;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | null = null;
  private stopped = false;
  private readonly controller = new AbortController();
  /** Aborted when the lease is fenced. */
  readonly signal = this.controller.signal;

  constructor(
    readonly store: ObjectStore,
    readonly key: string,
    private readonly body: () => Buffer,
    readonly timing: LockTiming,
    private readonly options: LeaseOptions,
  ) {}

  get limitMs(): number {
    return this.timing.ttlMs - this.timing.marginMs;
  }

  /** The object's LastModified as of our last write (a lower bound of the storage clock). */
  get lastModified(): Date | undefined {
    return this.modified;
  }

  /**
   * Write the object (plain put, or conditional create / takeover), start refreshing.
   * `mode.ifMatch` takes over a stale object with that etag.
   */
  async create(mode: { ifAbsent?: boolean; ifMatch?: string } = {}): Promise<void> {
    const start = performance.now();
    const body = this.body();
    await this.store.put(this.key, body, mode.ifMatch !== undefined ? { ifMatch: mode.ifMatch } : mode.ifAbsent ? { ifAbsent: true } : undefined);
    if (this.options.conditional) await this.readBack(body);
    this.lastStart = start;
    this.schedule(this.timing.refreshMs);
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
      throw new StoreError("changed", `${this.options.what} was overwritten by another process right after our write`, { key: this.key });
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
    const start = performance.now();
    if (start - this.lastStart > this.limitMs) {
      await this.fence(`no successful refresh for ${formatDuration(start - this.lastStart)} (limit ${formatDuration(this.limitMs)})`);
      return;
    }
    try {
      const body = this.body();
      await this.store.put(this.key, body, this.options.conditional ? { ifMatch: this.etag! } : undefined);
      // our new version: release() must recognize it as ours
      if (this.options.conditional) await this.readBack(body);
      if (this.fenceReason !== null || this.stopped) {
        // fenced or released while this write was in flight: it must not linger
        if (!this.options.conditional) await this.store.delete([this.key]).catch(() => undefined);
        return;
      }
    } catch (error) {
      if (error instanceof StoreError && error.kind === "changed") {
        await this.fence(`it was taken over or removed by another process`);
        return;
      }
      if (this.stopped) return;
      this.options.warn?.(`cannot refresh ${this.options.what}: ${error instanceof Error ? error.message : String(error)}; retrying`);
      this.schedule(Math.min(this.timing.refreshMs, Math.max(200, this.timing.pollMs)));
      return;
    }
    const end = performance.now();
    if (end - this.lastStart > this.limitMs) {
      await this.fence(`a refresh completed ${formatDuration(end - this.lastStart)} after the previous one started (limit ${formatDuration(this.limitMs)})`);
      return;
    }
    this.lastStart = start;
    this.schedule(this.timing.refreshMs);
  }

  private async fence(reason: string): Promise<void> {
    if (this.fenceReason !== null) return;
    this.fenceReason = reason;
    this.controller.abort(new LeaseLapsedError(`${this.options.what} lapsed: ${reason}`));
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (!this.stopped) this.options.warn?.(`${this.options.what} lapsed: ${reason}`);
    // we must not act on it any more; do not make others wait for it either
    if (!this.options.conditional) await this.store.delete([this.key]).catch(() => undefined);
  }

  /** The reason the lease lapsed, or null while it is valid. */
  lapsed(): string | null {
    if (this.fenceReason === null && performance.now() - this.lastStart > this.limitMs) {
      void this.fence(`no successful refresh for ${formatDuration(performance.now() - this.lastStart)} (limit ${formatDuration(this.limitMs)})`);
    }
    return this.fenceReason;
  }

  /**
   * Throws unless the lease is valid now with at least `margin` to spare: a request
   * issued right after this returns lands while others still see the object live,
   * provided it completes within the margin.
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
    const elapsed = performance.now() - this.lastStart;
    if (this.fenceReason !== null || elapsed > this.timing.ttlMs - CLOCK_SLACK_MS) {
      throw new LeaseLapsedError(
        `${this.options.what} may have looked expired to other processes while we were ${action} (${formatDuration(elapsed)} since its last refresh, TTL ${formatDuration(this.timing.ttlMs)})`,
      );
    }
  }

  /** Stop refreshing; remove the object (unless it is no longer ours). */
  async release(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.inFlight !== null) await this.inFlight.catch(() => undefined);
    if (this.options.conditional && this.fenceReason !== null) return; // someone else's now
    if (this.options.conditional) {
      const info = await this.store.stat(this.key).catch(() => null);
      if (info?.etag !== undefined && info.etag !== this.etag) return; // taken over
    }
    await this.store.delete([this.key]);
  }
}
