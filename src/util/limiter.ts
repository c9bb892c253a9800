/**
 * Bounded concurrency with backpressure: submit() waits while `limit` tasks are in
 * flight, so a fast producer cannot queue unbounded work (memory stays bounded).
 * The first failure is kept and rethrown by submit()/drain(); later tasks are refused.
 */
export class TaskLimiter {
  private inFlight = 0;
  private readonly waiters: (() => void)[] = [];
  private failure: { error: unknown } | null = null;
  private readonly idle: (() => void)[] = [];

  constructor(private readonly limit: number) {
    if (!(limit >= 1)) throw new Error(`concurrency limit must be >= 1, got ${limit}`);
  }

  async submit(task: () => Promise<void>): Promise<void> {
    this.throwIfFailed();
    while (this.inFlight >= this.limit) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      this.throwIfFailed();
    }
    this.inFlight++;
    task().then(
      () => this.release(),
      (error: unknown) => {
        if (this.failure === null) this.failure = { error };
        this.release();
      },
    );
  }

  /** Wait for every submitted task; rethrows the first failure. */
  async drain(): Promise<void> {
    while (this.inFlight > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    this.throwIfFailed();
  }

  private release(): void {
    this.inFlight--;
    this.waiters.shift()?.();
    if (this.inFlight === 0) for (const wake of this.idle.splice(0)) wake();
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure.error;
  }
}

/**
 * `fn` for each item, at most `limit` at a time, started in the items' order. After the
 * first failure no further item starts; the ones running are waited for (nothing keeps
 * working in the background after this returns), then that failure is thrown.
 */
export async function forEachConcurrent<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  const limiter = new TaskLimiter(Math.max(1, Math.min(limit, items.length)));
  for (let i = 0; i < items.length; i++) {
    try {
      await limiter.submit(() => fn(items[i]!, i));
    } catch {
      break; // a task failed: drain() waits for the others and throws it
    }
  }
  await limiter.drain();
}
