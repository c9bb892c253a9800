/**
 * S3Store under faults (src/uploader/s3.ts): the retry strategy (backoff with jitter,
 * longer for SlowDown, attempt and time budgets, adaptive hold), idle timeouts that turn a
 * stall into a retry, bodies cut short, and conditional puts whose answer was lost. Real
 * traffic goes through test/helpers/fault-proxy.ts in front of the test RGW; what was
 * stored is checked with the independent minio client.
 */
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { UsageError } from "../../src/errors.js";
import { openStore } from "../../src/uploader/open.js";
import { backoffDelay, S3RetryStrategy, S3Store, type S3StoreOptions } from "../../src/uploader/s3.js";
import { StoreError } from "../../src/uploader/store.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { getObject, listKeys, makeTestBucket, minioClient, putObject, removeTestBucket, testS3, testStoreOptions } from "../helpers/s3-server.js";

function sdkError(name: string, status: number | undefined, attempts = 1): Error {
  return Object.assign(new Error(`${name} message`), { name, $metadata: { ...(status === undefined ? {} : { httpStatusCode: status }), attempts } });
}

describe("retry strategy", () => {
  it("backs off with full jitter, longer and never near zero for throttling, capped", () => {
    expect(backoffDelay(0, false, () => 0)).toBe(0);
    expect(backoffDelay(0, false, () => 0.999)).toBeLessThanOrEqual(100);
    expect(backoffDelay(3, false, () => 0.999)).toBeLessThanOrEqual(800);
    expect(backoffDelay(20, false, () => 0.999)).toBeLessThanOrEqual(5000);
    expect(backoffDelay(0, true, () => 0)).toBe(500);
    expect(backoffDelay(0, true, () => 0.999)).toBeLessThanOrEqual(1000);
    expect(backoffDelay(20, true, () => 0.999)).toBeLessThanOrEqual(20_000);
    expect(backoffDelay(20, true, () => 0.999)).toBeGreaterThan(19_000);
  });

  it("retries transient and throttling errors up to maxAttempts, nothing else", async () => {
    const s = new S3RetryStrategy(3, "standard", 60_000);
    const t0 = await s.acquireInitialRetryToken("");
    const t1 = await s.refreshRetryTokenForRetry(t0, { errorType: "TRANSIENT", error: sdkError("InternalError", 500) } as never);
    expect(t1.getRetryCount()).toBe(1);
    expect(t1.getRetryDelay()).toBeLessThanOrEqual(100);
    const t2 = await s.refreshRetryTokenForRetry(t1, { errorType: "THROTTLING", error: sdkError("SlowDown", 503) } as never);
    expect(t2.getRetryDelay()).toBeGreaterThanOrEqual(500);
    await expect(s.refreshRetryTokenForRetry(t2, { errorType: "TRANSIENT", error: sdkError("InternalError", 500) } as never)).rejects.toThrow(/attempts/);
    await expect(s.refreshRetryTokenForRetry(t0, { errorType: "CLIENT_ERROR", error: sdkError("AccessDenied", 403) } as never)).rejects.toThrow(
      /not a retryable/,
    );
    // a bare 503 (no SlowDown code) is throttling too
    const t = await s.refreshRetryTokenForRetry(t0, { errorType: "TRANSIENT", error: sdkError("ServiceUnavailable", 503) } as never);
    expect(t.getRetryDelay()).toBeGreaterThanOrEqual(500);
  });

  it("starts no retry past the time budget", async () => {
    const s = new S3RetryStrategy(100, "standard", 300);
    const t0 = await s.acquireInitialRetryToken("");
    await expect(s.refreshRetryTokenForRetry(t0, { errorType: "THROTTLING", error: sdkError("SlowDown", 503) } as never)).rejects.toThrow(/time/);
  });

  it("adaptive: a throttled request holds back new requests of the client for its backoff", async () => {
    const s = new S3RetryStrategy(5, "adaptive", 60_000);
    const t0 = await s.acquireInitialRetryToken("");
    const t1 = await s.refreshRetryTokenForRetry(t0, { errorType: "THROTTLING", error: sdkError("SlowDown", 503) } as never);
    const started = Date.now();
    await s.acquireInitialRetryToken("");
    expect(Date.now() - started).toBeGreaterThanOrEqual(t1.getRetryDelay() - 20);
    const standard = new S3RetryStrategy(5, "standard", 60_000);
    await standard.refreshRetryTokenForRetry(await standard.acquireInitialRetryToken(""), {
      errorType: "THROTTLING",
      error: sdkError("SlowDown", 503),
    } as never);
    const t = Date.now();
    await standard.acquireInitialRetryToken("");
    expect(Date.now() - t).toBeLessThan(50);
  });

  it("openStore takes attempts, mode and timeouts from the environment and refuses bad values", async () => {
    const saved = { ...process.env };
    try {
      process.env.AWS_MAX_ATTEMPTS = "0";
      await expect(openStore("s3://bucket/x", { endpoint: "http://127.0.0.1:1" })).rejects.toThrow(UsageError);
      process.env.AWS_MAX_ATTEMPTS = "3";
      process.env.AWS_RETRY_MODE = "sometimes";
      await expect(openStore("s3://bucket/x", { endpoint: "http://127.0.0.1:1" })).rejects.toThrow(/AWS_RETRY_MODE/);
      process.env.AWS_RETRY_MODE = "standard";
      process.env.PLOOPVAULT_S3_IDLE_TIMEOUT_MS = "soon";
      await expect(openStore("s3://bucket/x", { endpoint: "http://127.0.0.1:1" })).rejects.toThrow(/PLOOPVAULT_S3_IDLE_TIMEOUT_MS/);
      process.env.PLOOPVAULT_S3_IDLE_TIMEOUT_MS = "1000";
      process.env.PLOOPVAULT_S3_DIRECT = "no";
      await expect(openStore("s3://bucket/x", { endpoint: "http://127.0.0.1:1" })).rejects.toThrow(/PLOOPVAULT_S3_DIRECT/);
      process.env.PLOOPVAULT_S3_DIRECT = "0";
      expect(await openStore("s3://bucket/x", { endpoint: "http://127.0.0.1:1" })).toBeInstanceOf(S3Store);
    } finally {
      process.env = saved;
    }
  });
});

describe("conditional puts whose answer was lost (SDK send() stubbed)", () => {
  const store = (): S3Store =>
    // direct requests off: get() and put() go through the stubbed send() too (s3-direct.test.ts)
    new S3Store({ bucket: "bkt", prefix: "p", endpoint: "http://127.0.0.1:1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, direct: false });
  afterEach(() => {
    vi.restoreAllMocks();
  });
  const bodyOf = (bytes: Buffer): { transformToByteArray(): Promise<Uint8Array> } => ({ transformToByteArray: async () => new Uint8Array(bytes) });

  it("412 after a retried attempt: our object landed if the stored one is identical", async () => {
    const mine = Buffer.from("manifest bytes");
    const send = vi.spyOn(S3Client.prototype, "send");
    send.mockImplementation(async (command: unknown) => {
      if (command instanceof PutObjectCommand) throw sdkError("PreconditionFailed", 412, 2);
      if (command instanceof GetObjectCommand) return { ContentLength: mine.length, Body: bodyOf(mine) } as never;
      throw new Error("unexpected command");
    });
    await store().put("backups/1/x/manifest", mine, { ifAbsent: true });
    // someone else's object: exists
    send.mockImplementation(async (command: unknown) => {
      if (command instanceof PutObjectCommand) throw sdkError("PreconditionFailed", 412, 2);
      return { ContentLength: 5, Body: bodyOf(Buffer.from("other")) } as never;
    });
    await expect(store().put("backups/1/x/manifest", mine, { ifAbsent: true })).rejects.toMatchObject({ kind: "exists" });
  });

  it("412 on the first attempt is 'exists' without looking (nothing of ours can be there)", async () => {
    const send = vi.spyOn(S3Client.prototype, "send").mockRejectedValue(sdkError("PreconditionFailed", 412, 1));
    await expect(store().put("config", Buffer.from("c"), { ifAbsent: true })).rejects.toMatchObject({ kind: "exists" });
    expect(send).toHaveBeenCalledTimes(1);
  });

  it("a put that fails for good is checked: identical object stored means success, otherwise the error", async () => {
    const mine = Buffer.from("config");
    const send = vi.spyOn(S3Client.prototype, "send");
    send.mockImplementation(async (command: unknown) => {
      if (command instanceof PutObjectCommand) throw sdkError("InternalError", 500, 6);
      return { ContentLength: mine.length, Body: bodyOf(mine) } as never;
    });
    await store().put("config", mine, { ifAbsent: true });
    send.mockImplementation(async (command: unknown) => {
      if (command instanceof PutObjectCommand) throw sdkError("InternalError", 500, 6);
      throw sdkError("NoSuchKey", 404);
    });
    const error = await store()
      .put("config", mine, { ifAbsent: true })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect((error as StoreError).message).toMatch(/InternalError \(HTTP 500, 6 attempts\)/);
  });
});

describe("S3Store through the fault proxy (real RGW)", () => {
  let bucket: string;
  let proxy: FaultProxy;
  const open = (options: Partial<S3StoreOptions> = {}): S3Store =>
    new S3Store(testStoreOptions(bucket, "faults", { endpoint: proxy.url, idleTimeoutMs: 1000, ...options }));

  beforeAll(async () => {
    bucket = await makeTestBucket("s3faults");
    proxy = await startFaultProxy({ target: testS3().endpoint, seed: 3, stallMs: 20_000 });
  });
  afterAll(async () => {
    await proxy.close();
    await removeTestBucket(bucket);
  });
  afterEach(() => {
    proxy.setRates({});
    proxy.setDecide(undefined);
    proxy.resetCounters();
  });

  it.each([
    ["direct requests", true],
    ["requests through the SDK", false],
  ])("every kind of fault on the first attempt (%s): puts, gets, ranges, stats and lists still give the exact bytes", async (_label, direct) => {
    const kinds = ["error500", "slowDown503", "resetRequest", "resetResponse", "truncate", "stall"] as const;
    let n = 0;
    proxy.setDecide((req) => (req.occurrence === 0 ? kinds[n++ % kinds.length]! : null));
    const store = open({ direct });
    try {
      const bodies = new Map(Array.from({ length: 12 }, (_, i) => [`obj/${i}`, randomBytes(1000 + i * 50_000)] as const));
      await Promise.all([...bodies].map(([k, b]) => store.put(k, b)));
      for (const [k, b] of bodies) expect((await getObject(bucket, `faults/${k}`)).equals(b)).toBe(true);
      for (const [k, b] of bodies) expect((await store.get(k)).equals(b)).toBe(true);
      const [k0, b0] = [...bodies][5]!;
      expect((await store.getRange(k0, 100, 5000)).equals(b0.subarray(100, 5100))).toBe(true);
      expect((await store.stat(k0))?.size).toBe(b0.length);
      const keys: string[] = [];
      for await (const info of store.list("obj/")) keys.push(info.key);
      expect(keys.sort()).toEqual([...bodies.keys()].sort());
      for (const kind of kinds) expect(proxy.counters[kind], proxy.describe()).toBeGreaterThan(0);
    } finally {
      await store.close();
    }
  });

  it("a conditional put that landed but lost its answer succeeds once, and exists after", async () => {
    proxy.setDecide((req) => (req.method === "PUT" && req.occurrence === 0 ? "resetResponse" : null));
    const store = open();
    try {
      await store.put("cond/manifest", Buffer.from("mine"), { ifAbsent: true });
      expect(proxy.counters.resetResponse).toBe(1);
      expect((await getObject(bucket, "faults/cond/manifest")).toString()).toBe("mine");
      await expect(store.put("cond/manifest", Buffer.from("mine"), { ifAbsent: true })).rejects.toMatchObject({ kind: "exists" });
      await putObject(bucket, "faults/cond/other", "theirs");
      proxy.resetCounters();
      await expect(store.put("cond/other", Buffer.from("mine"), { ifAbsent: true })).rejects.toMatchObject({ kind: "exists" });
    } finally {
      await store.close();
    }
  });

  it("a server that keeps answering SlowDown: fails after maxAttempts with one line, within the budget", async () => {
    proxy.setRates({ slowDown503: 1 });
    const store = open({ maxAttempts: 3, retryMode: "standard" });
    try {
      const started = Date.now();
      const error = await store.get("obj/1").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect((error as StoreError).message).toMatch(/SlowDown \(HTTP 503, 3 attempts\)/);
      expect((error as StoreError).message).not.toContain("\n");
      expect(proxy.counters.slowDown503).toBe(3);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1000); // two throttling backoffs of >= 500 ms
    } finally {
      await store.close();
    }
    proxy.resetCounters();
    const budgeted = open({ maxAttempts: 50, retryBudgetMs: 3000, retryMode: "standard" });
    try {
      const started = Date.now();
      await expect(budgeted.get("obj/1")).rejects.toBeInstanceOf(StoreError);
      expect(Date.now() - started).toBeLessThan(3000 + 2000);
      expect(proxy.counters.slowDown503).toBeLessThan(10);
    } finally {
      await budgeted.close();
    }
  });

  it("a server that stalls every time: fails after maxAttempts idle timeouts, not never", async () => {
    proxy.setRates({ stall: 1 });
    const store = open({ maxAttempts: 2, idleTimeoutMs: 500 });
    try {
      const started = Date.now();
      const error = await store.get("obj/2").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect((error as StoreError).message).toMatch(/timed out/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await store.close();
    }
  });

  /** Multipart uploads of `bucket` not completed nor aborted, under `prefix` (independent client). */
  async function incompleteUploads(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    const stream = minioClient().listIncompleteUploads(bucket, prefix, true);
    for await (const upload of stream as AsyncIterable<{ key: string }>) keys.push(upload.key);
    return keys;
  }
  const multipart = { multipartThresholdBytes: 12 << 20, multipartPartBytes: 5 << 20 };
  const isPart = (req: { method: string; url: string }, part: number): boolean =>
    req.method === "PUT" && new RegExp(`[?&]partNumber=${part}(&|$)`).test(req.url);

  it("a large object goes up in parts; faults in the middle retry those parts only, nothing is left over", async () => {
    const body = randomBytes((23 << 20) + 12_345); // 5 parts of 5 MiB
    const parts: number[] = [];
    proxy.setDecide((req) => {
      const part = /[?&]partNumber=(\d+)/.exec(req.url);
      if (req.method === "PUT" && part !== null) parts.push(Number(part[1]));
      if (isPart(req, 3) && req.occurrence === 0) return "resetRequest";
      if (isPart(req, 4) && req.occurrence === 0) return "error500";
      return null;
    });
    const store = open(multipart);
    try {
      await store.put("big/manifest", body, { ifAbsent: true });
    } finally {
      await store.close();
    }
    expect((await getObject(bucket, "faults/big/manifest")).equals(body)).toBe(true);
    expect(proxy.counters.resetRequest + proxy.counters.error500, proxy.describe()).toBe(2);
    // each part sent once, parts 3 and 4 once more: no whole-object retry
    expect(parts.sort((a, b) => a - b)).toEqual([1, 2, 3, 3, 4, 4, 5]);
    expect(await incompleteUploads("faults/big/")).toEqual([]);
  });

  it("a part that fails for good aborts the upload: one line naming the object, nothing stored, no parts left", async () => {
    proxy.setDecide((req) => (isPart(req, 2) ? "error500" : null));
    const store = open({ ...multipart, maxAttempts: 2 });
    try {
      const error = await store.put("big/failed", randomBytes(16 << 20), { ifAbsent: true }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect((error as StoreError).message).toMatch(/big\/failed/);
      expect((error as StoreError).message).not.toMatch(/\n/);
    } finally {
      await store.close();
    }
    // the abort is sent after the failed part; give it a moment
    for (let i = 0; i < 50 && (await incompleteUploads("faults/big/failed")).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await incompleteUploads("faults/big/failed")).toEqual([]);
    expect(await listKeys(bucket, "faults/big/failed")).toEqual([]);
  });

  it("a large conditional put: refused before any part is sent when the object exists; a lost completion answer still succeeds", async () => {
    await putObject(bucket, "faults/big/existing", "theirs");
    const store = open(multipart);
    try {
      await expect(store.put("big/existing", randomBytes(13 << 20), { ifAbsent: true })).rejects.toMatchObject({ kind: "exists" });
      expect(proxy.counters.forwarded, "only the HEAD").toBe(1);
      expect((await getObject(bucket, "faults/big/existing")).toString()).toBe("theirs");
      // CompleteMultipartUpload lands, its answer is lost; the retry finds no such upload
      proxy.setDecide((req) => (req.method === "POST" && req.url.includes("uploadId=") && req.occurrence === 0 ? "resetResponse" : null));
      const body = randomBytes(13 << 20);
      await store.put("big/completed", body, { ifAbsent: true });
      expect(proxy.counters.resetResponse).toBe(1);
      expect((await getObject(bucket, "faults/big/completed")).equals(body)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("bodies cut short every time: reported naming the object after maxAttempts", async () => {
    proxy.setDecide((req) => (req.method === "GET" ? "truncate" : null));
    const store = open({ maxAttempts: 3 });
    try {
      const error = await store.get("obj/3").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect((error as StoreError).message).toMatch(/obj\/3/);
      expect(proxy.counters.truncate).toBeGreaterThanOrEqual(3);
    } finally {
      await store.close();
    }
    expect(await listKeys(bucket, "faults/obj/3")).toEqual(["faults/obj/3"]);
  });
});
