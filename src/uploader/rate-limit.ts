/**
 * Bandwidth limits that keep a backup from starving running containers:
 *
 *  - TokenBucket: bytes per second. take(n) resolves when n bytes may pass; callers queue
 *    in FIFO order, and a request larger than the bucket goes into debt (waits until the
 *    debt is repaid), so any request size works and the long-run rate is exactly the
 *    configured one. The bucket starts empty (no burst at start) and holds at most 250 ms
 *    of rate: enough to absorb timer and event-loop delays on a loaded host without
 *    falling below the rate, small enough that an idle pause allows no real burst.
 *  - RateLimitedStore: an ObjectStore decorator (restic-style, like its limiter backend):
 *    put() waits for upload tokens for the body before sending it; get()/getRange() take
 *    download tokens for what arrived (sizes are not known before), so the average rate
 *    holds and the next request waits. Metadata calls (stat, list, delete) pass through.
 *  - readThrottle(): the same bucket for image reads (backup --limit-read), awaited by the
 *    pipeline before each disk read.
 *
 * Rates are written like sizes: 20M = 20 MiB/s (K, M, G are powers of 1024; "20MiB",
 * "20M/s", "1.5M" and a plain number of bytes also work).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { UsageError } from "../errors.js";
import type { BucketState, ObjectInfo, ObjectStore, ObjectVersion, PutOptions, Retention, VersionRead } from "./store.js";

export interface TokenBucketOptions {
  /** Bytes per second. */
  rate: number;
  /** Largest burst after an idle period (default: 250 ms of rate, at least 64 KiB). */
  burst?: number;
  /** Tokens at start (default 0: the first request waits for its own bytes). */
  initial?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export class TokenBucket {
  readonly rate: number;
  readonly burst: number;
  private tokens: number;
  private last: number;
  private queue: Promise<void> = Promise.resolve();
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(options: TokenBucketOptions) {
    if (!(options.rate > 0) || !Number.isFinite(options.rate)) throw new RangeError(`rate must be a positive number of bytes per second, got ${options.rate}`);
    this.rate = options.rate;
    this.burst = options.burst ?? Math.max(64 << 10, options.rate * 0.25);
    this.now = options.now ?? (() => performance.now());
    this.sleep = options.sleep ?? ((ms: number): Promise<void> => sleep(ms));
    this.tokens = Math.min(this.burst, options.initial ?? 0);
    this.last = this.now();
  }

  /** Wait until `bytes` may pass (FIFO). */
  take(bytes: number): Promise<void> {
    if (bytes <= 0) return this.queue;
    const turn = this.queue.then(() => this.consume(bytes));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  private async consume(bytes: number): Promise<void> {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
    this.tokens -= bytes;
    if (this.tokens < 0) {
      const waitMs = (-this.tokens / this.rate) * 1000;
      // The debt stays on the books: the next refill counts from `last`, so a sleep that
      // overshoots (timer granularity) is credited back and the long-run rate stays exact.
      await this.sleep(waitMs);
    }
  }
}

export interface RateLimits {
  upload?: TokenBucket | null;
  download?: TokenBucket | null;
}

export class RateLimitedStore implements ObjectStore {
  // the versioned-bucket operations exist exactly when the inner store has them
  readonly flush?: () => Promise<void>;
  readonly listVersions?: (prefix: string) => AsyncIterable<ObjectVersion>;
  readonly getVersion?: (key: string, versionId?: string) => Promise<VersionRead>;
  readonly extendRetention?: (key: string, retention: Retention, versionId?: string) => Promise<void>;
  readonly deleteVersions?: (versions: readonly { key: string; versionId: string }[]) => Promise<{ retained: { key: string; versionId: string }[] }>;
  readonly bucketState?: () => Promise<BucketState>;
  readonly sibling?: (bucket: string) => ObjectStore;

  constructor(
    private readonly inner: ObjectStore,
    private readonly limits: RateLimits,
  ) {
    const i = inner;
    if (i.listVersions) this.listVersions = (prefix) => i.listVersions!(prefix);
    if (i.getVersion) {
      this.getVersion = async (key, versionId) => {
        const read = await i.getVersion!(key, versionId);
        await this.limits.download?.take(read.body.length);
        return read;
      };
    }
    if (i.flush) this.flush = () => i.flush!();
    if (i.extendRetention) this.extendRetention = (key, retention, versionId) => i.extendRetention!(key, retention, versionId);
    if (i.deleteVersions) this.deleteVersions = (versions) => i.deleteVersions!(versions);
    if (i.bucketState) this.bucketState = () => i.bucketState!();
    if (i.sibling) this.sibling = (bucket) => i.sibling!(bucket);
  }

  get location(): string {
    return this.inner.location;
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    const turn = this.limits.upload?.take(body.length);
    if (turn !== undefined) await abortable(turn, options?.signal);
    return this.inner.put(key, body, options);
  }

  /** Lock traffic bypasses the limits: a refresh must never wait for upload tokens. */
  controlChannel(): ObjectStore {
    return this.inner.controlChannel?.() ?? this.inner;
  }

  async get(key: string): Promise<Buffer> {
    const body = await this.inner.get(key);
    await this.limits.download?.take(body.length);
    return body;
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const body = await this.inner.getRange(key, offset, length);
    await this.limits.download?.take(body.length);
    return body;
  }

  stat(key: string): Promise<ObjectInfo | null> {
    return this.inner.stat(key);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  delete(keys: readonly string[]): Promise<void> {
    return this.inner.delete(keys);
  }

  async ensureContainer(options?: { objectLock?: boolean }): Promise<void> {
    await this.inner.ensureContainer?.(options);
  }

  async removeStaleTemporaries(before: Date, options?: { dryRun?: boolean }): Promise<{ count: number; bytes: number }> {
    return (await this.inner.removeStaleTemporaries?.(before, options)) ?? { count: 0, bytes: 0 };
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** `turn`, unless `signal` aborts first (then its reason). */
function abortable(turn: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return turn;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    turn.then(
      () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** Wrap `store` when a limit is set; the store itself otherwise. */
export function withRateLimits(store: ObjectStore, limits: { upload?: number | undefined; download?: number | undefined }): ObjectStore {
  const upload = limits.upload === undefined ? null : sharedBucket("upload", limits.upload);
  const download = limits.download === undefined ? null : sharedBucket("download", limits.download);
  if (upload === null && download === null) return store;
  return new RateLimitedStore(store, { upload, download });
}

// One bucket per direction and process: several stores (or several containers backed up
// in parallel) share the host's allowance instead of each getting the full rate.
const buckets = new Map<string, TokenBucket>();
export function sharedBucket(name: string, rate: number): TokenBucket {
  const key = `${name}:${rate}`;
  let bucket = buckets.get(key);
  if (bucket === undefined) {
    bucket = new TokenBucket({ rate });
    buckets.set(key, bucket);
  }
  return bucket;
}

/** The image-read throttle for the backup pipeline (--limit-read), or undefined. */
export function readThrottle(rate: number | undefined): ((bytes: number) => Promise<void>) | undefined {
  if (rate === undefined) return undefined;
  const bucket = sharedBucket("read", rate);
  return (bytes) => bucket.take(bytes);
}

/** "20M", "20MiB/s", "1.5G", "500K", "1048576" -> bytes per second. */
export function parseRate(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?(?:\/s)?$/i.exec(text.trim());
  if (!m) return null;
  const mult: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
  const value = Number(m[1]) * mult[(m[2] ?? "").toLowerCase()]!;
  return value >= 1 && Number.isFinite(value) ? Math.floor(value) : null;
}

/** commander argParser for --limit-* options. */
export function rateOption(name: string): (value: string) => number {
  return (value: string): number => {
    const rate = parseRate(value);
    if (rate === null) throw new UsageError(`${name}: cannot parse rate "${value}" (bytes per second, e.g. 20M = 20 MiB/s, 500K, 1.5G)`);
    return rate;
  };
}
