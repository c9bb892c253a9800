/**
 * The self-fence of lock leases (src/prune/lease.ts) in-process on a local directory
 * store: the cases a backup registration must survive without ever counting a manifest
 * that a prune could have undermined (issue: "Never report a backup that does not
 * restore"): a suspended host (monotonic clock stood still), a registration removed by a
 * prune, a listing that does not show our own write, a request that lands after the
 * lapse, and lock refreshes stuck behind a bandwidth limit.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Lease, LeaseLapsedError } from "../../src/prune/lease.js";
import { InconsistentListingError, listLocks, lockBody, type LockTiming } from "../../src/prune/locks.js";
import { BackupRegistration } from "../../src/prune/registration.js";
import { RateLimitedStore, TokenBucket } from "../../src/uploader/rate-limit.js";
import { LocalDirectoryStore } from "../../src/uploader/local.js";
import type { ObjectInfo, ObjectStore, PutOptions } from "../../src/uploader/store.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempStore(): LocalDirectoryStore {
  const root = mkdtempSync(join(tmpdir(), "pv-lease-"));
  dirs.push(root);
  return new LocalDirectoryStore(root);
}
const fast: LockTiming = { ttlMs: 6000, refreshMs: 500, marginMs: 2000, pollMs: 200 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const key = (): string => `locks/backup-t-${process.pid}-${Math.random().toString(16).slice(2, 14)}`;

describe("lease self-fence", () => {
  it("fences when the wall clock shows a gap the monotonic clock slept through (host suspend)", async () => {
    const store = tempStore();
    let suspendedMs = 0;
    // a host that was suspended: performance.now() did not advance, Date.now() did
    const clock = { mono: () => performance.now(), wall: () => Date.now() + suspendedMs };
    const lease = new Lease(store, key(), () => lockBody("backup", "t", fast, new Date()), fast, { what: "test registration", clock });
    await lease.create();
    await sleep(300);
    expect(lease.lapsed()).toBeNull();
    suspendedMs = fast.ttlMs + 1000; // resumed after longer than the TTL: a prune may have removed us
    expect(lease.lapsed()).toMatch(/no successful refresh/);
    expect(lease.signal.aborted).toBe(true);
    await expect(lease.guard("publish", async () => "landed")).rejects.toThrow(LeaseLapsedError);
    await lease.release();
  });

  it("a registration removed by another process is noticed at the next refresh, never re-created", async () => {
    const store = tempStore();
    const registration = await BackupRegistration.start({ store }, "node-a", { timing: fast });
    const [own] = await listLocks(store);
    expect(own?.key).toBe(registration.key);
    await store.delete([registration.key]); // a prune judged it expired and removed it
    await sleep(fast.refreshMs * 3);
    expect(registration.lapsed()).toMatch(/removed or taken over/);
    expect(registration.signal.aborted).toBe(true);
    expect(await listLocks(store)).toEqual([]); // not written again
    expect(await registration.stop()).toBe(false);
  });

  it("a listing that does not show our own registration stops the backup (eventually consistent storage)", async () => {
    const store = new ListingLagStore(tempStore());
    await expect(BackupRegistration.start({ store }, "node-a", { timing: fast })).rejects.toThrow(InconsistentListingError);
    await expect(BackupRegistration.start({ store }, "node-a", { timing: fast })).rejects.toThrow(/listings are not consistent/);
    expect(await listLocks(store.inner)).toEqual([]); // nothing left behind
  });

  it("guard: a request that lands after the lapse is disowned; the object stays until it settles", async () => {
    const store = tempStore();
    const slow = new SlowPutStore(store);
    const lease = new Lease(slow, key(), () => lockBody("backup", "t", fast, new Date()), fast, { what: "test registration" });
    await lease.create();
    slow.delayMs = 8000; // refreshes hang longer than the limit from now on
    let stillThere = false;
    const request = lease.guard("publish the manifest", async (signal) => {
      // a server that ignores the cancellation and answers late
      await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
      stillThere = (await store.stat(lease.key)) !== null;
      return "landed";
    });
    await expect(request).rejects.toThrow(LeaseLapsedError);
    expect(stillThere).toBe(true); // a fence during a guarded request leaves the object in place
    await lease.release();
    expect(await store.stat(lease.key)).toBeNull();
  }, 30_000);

  it("registration refreshes never wait for upload tokens (bandwidth limit in debt)", async () => {
    const store = tempStore();
    const upload = new TokenBucket({ rate: 2000 }); // 2 kB/s
    const limited = new RateLimitedStore(store, { upload });
    const registration = await BackupRegistration.start({ store: limited }, "node-a", { timing: fast });
    // a 14 kB upload puts the bucket 7 s in debt: anything queued behind it waits that long
    const data = limited.put("chunks/aa/data", Buffer.alloc(14_000));
    await sleep(fast.ttlMs - fast.marginMs + 1500);
    expect(registration.lapsed()).toBeNull();
    expect(await registration.stop()).toBe(true);
    await data.catch(() => undefined);
  }, 40_000);
});

/** A store whose listings of locks/ lag behind its writes (fault injection). */
class ListingLagStore implements ObjectStore {
  constructor(readonly inner: ObjectStore) {}
  get location(): string {
    return this.inner.location;
  }
  put = (k: string, body: Uint8Array, options?: PutOptions) => this.inner.put(k, body, options);
  get = (k: string) => this.inner.get(k);
  getRange = (k: string, offset: number, length: number) => this.inner.getRange(k, offset, length);
  stat = (k: string) => this.inner.stat(k);
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (prefix.startsWith("locks/")) return; // the new objects are not listed yet
    yield* this.inner.list(prefix);
  }
  delete = (keys: readonly string[]) => this.inner.delete(keys);
  close = () => this.inner.close();
}

/** Puts after `delayMs` is set hang that long (fault injection). */
class SlowPutStore implements ObjectStore {
  delayMs = 0;
  constructor(private readonly inner: ObjectStore) {}
  get location(): string {
    return this.inner.location;
  }
  async put(k: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.delayMs > 0) await sleep(this.delayMs);
    return this.inner.put(k, body, options);
  }
  get = (k: string) => this.inner.get(k);
  getRange = (k: string, offset: number, length: number) => this.inner.getRange(k, offset, length);
  stat = (k: string) => this.inner.stat(k);
  list = (prefix: string) => this.inner.list(prefix);
  delete = (keys: readonly string[]) => this.inner.delete(keys);
  close = () => this.inner.close();
}
