/**
 * The ObjectStore contract (src/uploader/store.ts), run against both backends:
 * LocalDirectoryStore on a temp directory and S3Store on the suite's S3 server (Ceph RGW).
 * What a store claims to have written is checked with an independent reader: the
 * filesystem for the local store, the `minio` client for S3.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CostTally, withCostTally } from "../../src/util/cost-tally.js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { DeleteObjectsCommand, type GetObjectCommand, type PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { fsStoreError, LocalDirectoryStore } from "../../src/uploader/local.js";
import { MemoryStore } from "../../src/uploader/memory.js";
import { openStore, parseRepoUrl } from "../../src/uploader/open.js";
import { S3Store, type S3StoreOptions } from "../../src/uploader/s3.js";
import { StoreError, type ObjectInfo, type ObjectStore, type StoreErrorKind } from "../../src/uploader/store.js";
import { UsageError } from "../../src/errors.js";
import {
  freePort,
  getObject,
  listKeys,
  makeTestBucket,
  objectSize,
  putObject,
  removeObject,
  removeTestBucket,
  testS3,
  testStoreOptions,
} from "../helpers/s3-server.js";

// The SDK's "node >= 22 soon" warning must never reach stderr. Listen before any S3 client
// exists (each test file runs in a fresh process, so the SDK has not warned yet).
const warnings: string[] = [];
process.on("warning", (w) => warnings.push(`${w.name}: ${w.message}`));

/** A store under test plus an independent view of what it stored. */
interface Harness {
  store: ObjectStore;
  /** Raw object body as the backend holds it, or null. */
  raw(key: string): Promise<Buffer | null>;
  /** Write an object behind the store's back. */
  rawPut(key: string, body: Buffer): Promise<void>;
  rawDelete(key: string): Promise<void>;
  /** Every object key the backend holds for this store (temp files excluded). */
  rawKeys(): Promise<string[]>;
  /** The same kind of store whose container (directory/bucket) does not exist. */
  missingContainer(): ObjectStore;
  cleanup(): Promise<void>;
}

const tempDirs: string[] = [];
function tempDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `pv-store-${label}-`));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function walkFiles(root: string, rel = ""): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
    const key = rel === "" ? entry.name : `${rel}/${entry.name}`;
    if (entry.isDirectory()) out.push(...walkFiles(root, key));
    else out.push(key);
  }
  return out;
}

async function localHarness(): Promise<Harness> {
  const root = join(tempDir("local"), "repo");
  mkdirSync(root);
  const store = new LocalDirectoryStore(root);
  return {
    store,
    raw: async (key) => {
      const path = join(root, ...key.split("/"));
      return existsSync(path) ? readFileSync(path) : null;
    },
    rawPut: async (key, body) => {
      const path = join(root, ...key.split("/"));
      mkdirSync(join(path, ".."), { recursive: true });
      writeFileSync(path, body);
    },
    rawDelete: async (key) => rmSync(join(root, ...key.split("/")), { force: true }),
    rawKeys: async () =>
      walkFiles(root)
        .filter((k) => !k.split("/").some((s) => s.startsWith(".tmp-")))
        .sort(),
    missingContainer: () => new LocalDirectoryStore(join(root, "..", "does-not-exist")),
    cleanup: async () => store.close(),
  };
}

async function memoryHarness(): Promise<Harness> {
  const store = new MemoryStore("contract");
  // the test's own view of the objects: reached through a second, independent handle
  // would be impossible in memory, so the raw accessors use the store's public contract
  // only where the contract suite checks effects (raw reads, raw keys, raw deletes)
  return {
    store,
    raw: async (key) => ((await store.stat(key)) === null ? null : store.get(key)),
    rawPut: (key, body) => store.put(key, body),
    rawDelete: (key) => store.delete([key]),
    rawKeys: async () => {
      const keys: string[] = [];
      for await (const info of store.list("")) keys.push(info.key);
      return keys.sort();
    },
    missingContainer: () => new MemoryStore("missing", false),
    cleanup: async () => store.close(),
  };
}

const S3_PREFIX = "repo/one";

function s3Store(bucket: string, overrides: Partial<S3StoreOptions> = {}): S3Store {
  return new S3Store(testStoreOptions(bucket, S3_PREFIX, overrides));
}

async function s3Harness(): Promise<Harness> {
  const bucket = await makeTestBucket("store");
  const store = s3Store(bucket);
  const full = (key: string): string => `${S3_PREFIX}/${key}`;
  return {
    store,
    raw: async (key) => ((await objectSize(bucket, full(key))) === null ? null : getObject(bucket, full(key))),
    rawPut: (key, body) => putObject(bucket, full(key), body),
    rawDelete: (key) => removeObject(bucket, full(key)),
    rawKeys: async () => (await listKeys(bucket, `${S3_PREFIX}/`)).map((k) => k.slice(S3_PREFIX.length + 1)),
    missingContainer: () => s3Store(`pv-missing-${randomBytes(6).toString("hex")}`),
    cleanup: async () => {
      await store.close();
      await removeTestBucket(bucket);
    },
  };
}

async function collect(iterable: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of iterable) out.push(info);
  return out;
}

async function listed(store: ObjectStore, prefix: string): Promise<string[]> {
  return (await collect(store.list(prefix))).map((i) => i.key).sort();
}

/** The StoreError a promise rejects with (fails the test if it resolves or throws something else). */
async function storeErrorOf(promise: Promise<unknown> | (() => Promise<unknown>)): Promise<StoreError> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    if (error instanceof StoreError) return error;
    throw new Error(`expected a StoreError, got ${String(error)}`, { cause: error });
  }
  throw new Error("expected a StoreError, but the operation succeeded");
}

async function expectKind(promise: Promise<unknown>, kind: StoreErrorKind): Promise<StoreError> {
  const error = await storeErrorOf(promise);
  expect(error.kind, error.message).toBe(kind);
  return error;
}

async function parallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const ODD_KEYS = [
  "odd/with space",
  "odd/plus+sign",
  "odd/percent%20not-a-space",
  "odd/amp&lt;<tag>\"quote\"'apos'",
  "odd/hash#and?query=1;x",
  "odd/ünïcödé/日本語/emoji-🦀",
  "odd/tilde~star*paren(1)[2]{3}",
  "odd/trailing-dot.",
  "odd/..dots-but-not-a-segment",
  "odd/back\\slash",
  `odd/${"x".repeat(200)}`,
  ".hidden/file",
];

describe.each([
  { name: "MemoryStore", make: memoryHarness },
  { name: "LocalDirectoryStore", make: localHarness },
  { name: "S3Store (Ceph RGW)", make: s3Harness },
])("$name contract", ({ make }) => {
  let h: Harness;
  let store: ObjectStore;
  beforeAll(async () => {
    // one container per describe; each test uses its own key prefix
    h = await make();
    store = h.store;
  });
  afterAll(async () => {
    await h?.cleanup();
  });

  it("put then get returns the exact bytes; the backend holds them", async () => {
    const bodies = [Buffer.alloc(0), Buffer.from("x"), randomBytes(1024 * 1024 + 3)];
    for (const [i, body] of bodies.entries()) {
      await store.put(`rt/obj-${i}`, body);
      expect((await store.get(`rt/obj-${i}`)).equals(body)).toBe(true);
      expect((await h.raw(`rt/obj-${i}`))?.equals(body)).toBe(true);
    }
    // a Uint8Array view into a larger buffer stores only the view
    const big = randomBytes(100);
    await store.put("rt/view", new Uint8Array(big.buffer, big.byteOffset + 10, 20));
    expect((await h.raw("rt/view"))?.equals(big.subarray(10, 30))).toBe(true);
  });

  it("put overwrites unless ifAbsent; ifAbsent on an existing key is kind 'exists' and changes nothing", async () => {
    await store.put("ow/a", Buffer.from("one"));
    await store.put("ow/a", Buffer.from("two"));
    expect((await store.get("ow/a")).toString()).toBe("two");

    await store.put("ow/b", Buffer.from("first"), { ifAbsent: true });
    const error = await expectKind(store.put("ow/b", Buffer.from("second"), { ifAbsent: true }), "exists");
    expect(error.key).toBe("ow/b");
    expect(error.message).toContain("ow/b");
    expect((await h.raw("ow/b"))?.toString()).toBe("first");
    expect(await h.rawKeys()).not.toContain(expect.stringMatching(/tmp/));
  });

  it("concurrent ifAbsent puts of one key: exactly one wins", async () => {
    const bodies = Array.from({ length: 8 }, (_, i) => Buffer.from(`writer-${i}-${randomBytes(8).toString("hex")}`));
    const results = await Promise.allSettled(bodies.map((b) => store.put("race/key", b, { ifAbsent: true })));
    const winners = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
    expect(winners).toHaveLength(1);
    for (const r of results) if (r.status === "rejected") expect((r.reason as StoreError).kind).toBe("exists");
    expect((await store.get("race/key")).equals(bodies[winners[0]!]!)).toBe(true);
  });

  it("getRange returns exactly the range, fewer bytes only at the end", async () => {
    const body = randomBytes(10_000);
    await store.put("range/obj", body);
    expect((await store.getRange("range/obj", 0, 100)).equals(body.subarray(0, 100))).toBe(true);
    expect((await store.getRange("range/obj", 1234, 4321)).equals(body.subarray(1234, 1234 + 4321))).toBe(true);
    expect((await store.getRange("range/obj", 9_990, 100)).equals(body.subarray(9_990))).toBe(true);
    expect((await store.getRange("range/obj", 0, 10_000)).equals(body)).toBe(true);
    expect(await store.getRange("range/obj", 10_000, 5)).toHaveLength(0);
    expect(await store.getRange("range/obj", 20_000, 5)).toHaveLength(0);
    expect(await store.getRange("range/obj", 5, 0)).toHaveLength(0);
    await store.put("range/empty", Buffer.alloc(0));
    expect(await store.getRange("range/empty", 0, 10)).toHaveLength(0);
    await expectKind(store.getRange("range/missing", 0, 10), "not-found");
    await expectKind(store.getRange("range/missing", 0, 0), "not-found");
  });

  it("stat gives size and time; null for a missing key", async () => {
    const before = Date.now();
    await store.put("stat/obj", randomBytes(777));
    const info = await store.stat("stat/obj");
    expect(info).toMatchObject({ key: "stat/obj", size: 777 });
    expect(info?.modified).toBeInstanceOf(Date);
    expect(Math.abs(info!.modified!.getTime() - before)).toBeLessThan(120_000);
    expect(await store.stat("stat/missing")).toBeNull();
    expect(await store.stat("stat/obj/below-an-object")).toBeNull();
  });

  it("get of a missing key is kind 'not-found' naming the key", async () => {
    const error = await expectKind(store.get("nf/nothing-here"), "not-found");
    expect(error.key).toBe("nf/nothing-here");
    expect(error.message).toContain("nf/nothing-here");
    await expectKind(store.get("nf"), "not-found");
  });

  it("list yields every key under a string prefix exactly once, with sizes", async () => {
    const keys = ["ls/a", "ls/b/c", "ls/b/d/e", "ls/bb", "ls/c/x", "lsx/not-under-ls-slash"];
    for (const [i, key] of keys.entries()) await store.put(key, Buffer.alloc(i + 1, 1));
    const all = await collect(store.list("ls/"));
    expect(all.map((i) => i.key).sort()).toEqual(["ls/a", "ls/b/c", "ls/b/d/e", "ls/bb", "ls/c/x"]);
    for (const info of all) expect(info.size).toBe(keys.indexOf(info.key) + 1);
    expect(await listed(store, "ls/b")).toEqual(["ls/b/c", "ls/b/d/e", "ls/bb"]);
    expect(await listed(store, "ls/b/")).toEqual(["ls/b/c", "ls/b/d/e"]);
    expect(await listed(store, "ls")).toEqual([...keys].sort());
    expect(await listed(store, "ls/nothing/")).toEqual([]);
    expect(await listed(store, "nothing-at-all/")).toEqual([]);
    expect(await listed(store, "ls/a")).toEqual(["ls/a"]);
    const everything = await listed(store, "");
    expect(everything).toEqual(expect.arrayContaining(keys));
    expect(everything).toEqual(await h.rawKeys());
  });

  it("lists and batch-deletes more than 1000 keys (pagination, several delete batches)", async () => {
    const keys = Array.from({ length: 1100 }, (_, i) => `many/${(i % 7).toString()}/${i.toString().padStart(5, "0")}`);
    await parallel(keys, 16, (key) => store.put(key, Buffer.from(key)));
    const seen = await collect(store.list("many/"));
    expect(seen).toHaveLength(1100);
    expect(new Set(seen.map((i) => i.key)).size).toBe(1100);
    expect(seen.map((i) => i.key).sort()).toEqual([...keys].sort());
    for (const info of seen) expect(info.size).toBe(info.key.length);
    // delete all but two, plus keys that do not exist (not an error)
    const doomed = keys.slice(2);
    await store.delete([...doomed, "many/missing-1", "many/9/missing-2"]);
    expect(await listed(store, "many/")).toEqual(keys.slice(0, 2).sort());
    expect((await h.rawKeys()).filter((k) => k.startsWith("many/"))).toEqual(keys.slice(0, 2).sort());
    await store.delete([]);
    await store.delete(keys.slice(0, 2));
    expect(await listed(store, "many/")).toEqual([]);
  });

  it("odd key names round-trip through put, get, list and delete", async () => {
    for (const key of ODD_KEYS) await store.put(key, Buffer.from(`body of ${key}`));
    for (const key of ODD_KEYS) {
      expect((await store.get(key)).toString()).toBe(`body of ${key}`);
      expect((await h.raw(key))?.toString()).toBe(`body of ${key}`);
      expect((await store.stat(key))?.size).toBe(Buffer.byteLength(`body of ${key}`));
    }
    const oddListed = [...(await listed(store, "odd/")), ...(await listed(store, ".hidden/"))].sort();
    expect(oddListed).toEqual([...ODD_KEYS].sort());
    expect(await listed(store, "odd/with ")).toEqual(["odd/with space"]);
    await store.delete(ODD_KEYS);
    expect(await listed(store, "odd/")).toEqual([]);
    for (const key of ODD_KEYS) expect(await h.raw(key)).toBeNull();
  });

  it("rejects invalid keys and prefixes", async () => {
    for (const key of ["", "/abs", "trailing/", "a//b", "a/../b", "./a", "a/.", ".."]) {
      await expectKind(store.put(key, Buffer.from("x")), "io");
      await expectKind(store.get(key), "io");
    }
    await expect(collect(store.list("/abs"))).rejects.toBeInstanceOf(StoreError);
    await expect(collect(store.list("a/../"))).rejects.toBeInstanceOf(StoreError);
  });

  it("delete of missing keys is not an error; get after delete is not-found", async () => {
    await store.put("del/x", Buffer.from("x"));
    await store.delete(["del/x", "del/never", "del/deeper/never"]);
    await expectKind(store.get("del/x"), "not-found");
    expect(await store.stat("del/x")).toBeNull();
    expect(await h.raw("del/x")).toBeNull();
  });

  it("sees objects changed behind its back (no caching that could hide corruption)", async () => {
    await store.put("behind/obj", Buffer.from("original"));
    await h.rawPut("behind/obj", Buffer.from("corrupted!"));
    expect((await store.get("behind/obj")).toString()).toBe("corrupted!");
    expect((await store.stat("behind/obj"))?.size).toBe(10);
    await h.rawDelete("behind/obj");
    await expectKind(store.get("behind/obj"), "not-found");
  });

  it("a missing container is kind 'no-container' for every operation", async () => {
    const missing = h.missingContainer();
    try {
      const error = await expectKind(missing.get("config"), "no-container");
      expect(error.message).toMatch(/does not exist/);
      await expectKind(missing.getRange("config", 0, 10), "no-container");
      await expectKind(missing.put("config", Buffer.from("x")), "no-container");
      await expectKind(missing.put("config", Buffer.from("x"), { ifAbsent: true }), "no-container");
      await expectKind(missing.stat("config"), "no-container");
      await expectKind(collect(missing.list("")), "no-container");
      await expectKind(missing.delete(["config"]), "no-container");
    } finally {
      await missing.close();
    }
  });

  it("ensureContainer creates the container, and is idempotent", async () => {
    const missing = h.missingContainer();
    try {
      await missing.ensureContainer?.();
      await missing.ensureContainer?.();
      await missing.put("config", Buffer.from("hello"), { ifAbsent: true });
      expect((await missing.get("config")).toString()).toBe("hello");
      expect(await listed(missing, "")).toEqual(["config"]);
    } finally {
      await missing.delete(["config"]);
      await missing.close();
      if (missing instanceof S3Store) await removeTestBucket(missing.bucket);
    }
  });
});

describe("LocalDirectoryStore specifics", () => {
  it("deferNameSync: each body is fsynced at once, each directory once at flush() (not once per object)", async () => {
    const root = tempDir("defer");
    const store = new LocalDirectoryStore(root);
    const dirs = ["chunks/aa", "chunks/bb", "chunks/cc"];
    for (const d of dirs) await store.put(`${d}/first`, Buffer.from("x")); // the directories exist now
    const tally = new CostTally();
    await withCostTally(tally, async () => {
      for (let i = 0; i < 12; i++) await store.put(`${dirs[i % 3]}/obj${i}`, Buffer.from(`body ${i}`), { deferNameSync: true });
    });
    expect(tally.get("fsync store").count).toBe(12); // the bodies, no directory yet
    await withCostTally(tally, () => store.flush());
    expect(tally.get("fsync store").count).toBe(15); // + one per directory
    await withCostTally(tally, () => store.flush());
    expect(tally.get("fsync store").count).toBe(15); // nothing left to flush
    const plain = new CostTally();
    await withCostTally(plain, () => store.put("chunks/aa/plain", Buffer.from("y")));
    expect(plain.get("fsync store").count).toBe(2); // without the option: body and directory at once
    for (let i = 0; i < 12; i++) expect((await store.get(`${dirs[i % 3]}/obj${i}`)).toString()).toBe(`body ${i}`);
  });

  it("put is atomic: concurrent readers see the old or the new body, never a partial one, and no temp files", async () => {
    const root = tempDir("atomic");
    const store = new LocalDirectoryStore(root);
    const a = Buffer.alloc(16 << 20, 0xaa);
    const b = Buffer.alloc(16 << 20, 0xbb);
    await store.put("big/obj", a);
    let writing = true;
    const writer = (async () => {
      try {
        for (let i = 0; i < 6; i++) await store.put("big/obj", i % 2 === 0 ? b : a);
      } finally {
        writing = false;
      }
    })();
    let reads = 0;
    while (writing) {
      const viaFs = readFileSync(join(root, "big", "obj"));
      expect(viaFs.length).toBe(a.length);
      expect(viaFs[0] === viaFs[viaFs.length - 1] && viaFs.equals(viaFs[0] === 0xaa ? a : b)).toBe(true);
      const viaStore = await store.get("big/obj");
      expect(viaStore.equals(a) || viaStore.equals(b)).toBe(true);
      expect((await listed(store, "")).every((k) => k === "big/obj")).toBe(true);
      reads++;
    }
    await writer;
    expect(reads).toBeGreaterThan(0);
    expect(readdirSync(join(root, "big"))).toEqual(["obj"]);
  });

  it("a new key never appears half-written", async () => {
    const root = tempDir("atomic-new");
    const store = new LocalDirectoryStore(root);
    const body = Buffer.alloc(32 << 20, 0x5a);
    const put = store.put("fresh/obj", body);
    let done = false;
    void put.finally(() => (done = true));
    while (!done) {
      try {
        const seen = readFileSync(join(root, "fresh", "obj"));
        expect(seen.length).toBe(body.length);
      } catch (error) {
        expect((error as NodeJS.ErrnoException).code).toBe("ENOENT");
      }
      await new Promise((r) => setImmediate(r));
    }
    await put;
    expect(readFileSync(join(root, "fresh", "obj")).equals(body)).toBe(true);
  });

  it("leftover temp files of a crashed put are invisible; temp-like key segments are refused", async () => {
    const root = tempDir("leftover");
    const store = new LocalDirectoryStore(root);
    await store.put("chunks/ab/ab01", Buffer.from("chunk"));
    writeFileSync(join(root, "chunks", "ab", ".tmp-0123456789abcdef"), "half a chu");
    writeFileSync(join(root, ".tmp-fedcba9876543210"), "half a config");
    expect(await listed(store, "")).toEqual(["chunks/ab/ab01"]);
    expect(await listed(store, "chunks/ab/")).toEqual(["chunks/ab/ab01"]);
    await expectKind(store.put("chunks/ab/.tmp-x", Buffer.from("x")), "io");
    await expectKind(store.get(".tmp-fedcba9876543210"), "io");
  });

  it("delete removes directories it emptied, never the root", async () => {
    const root = tempDir("rmdir");
    const store = new LocalDirectoryStore(root);
    await store.put("backups/101/b1/manifest", Buffer.from("m"));
    await store.put("backups/101/b1/DiskDescriptor.xml", Buffer.from("d"));
    await store.put("backups/102/b2/manifest", Buffer.from("m"));
    await store.delete(["backups/101/b1/manifest", "backups/101/b1/DiskDescriptor.xml"]);
    expect(readdirSync(join(root, "backups"))).toEqual(["102"]);
    await store.delete(["backups/102/b2/manifest"]);
    expect(readdirSync(root)).toEqual([]);
    await store.put("backups/103/b3/manifest", Buffer.from("again"));
    expect(await listed(store, "")).toEqual(["backups/103/b3/manifest"]);
  });

  it("a key below an existing object fails with kind 'io', not a crash", async () => {
    const store = new LocalDirectoryStore(tempDir("conflict"));
    await store.put("a/b", Buffer.from("file"));
    const error = await expectKind(store.put("a/b/c", Buffer.from("x")), "io");
    expect(error.message).toContain("a/b");
    await expectKind(store.get("a/b/c"), "not-found");
  });

  it("maps filesystem errors to one line naming the path", () => {
    const enospc = fsStoreError(
      Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }),
      "write",
      "/srv/repo/chunks/ab/x",
      "chunks/ab/x",
    );
    expect(enospc.kind).toBe("io");
    expect(enospc.message).toBe("cannot write /srv/repo/chunks/ab/x: no space left on device");
    expect(enospc.key).toBe("chunks/ab/x");
    expect(fsStoreError(Object.assign(new Error("x"), { code: "EACCES" }), "read", "/srv/repo/config").message).toBe(
      "cannot read /srv/repo/config: permission denied",
    );
    expect(fsStoreError(Object.assign(new Error("x"), { code: "EROFS" }), "write", "/srv/repo/config").message).toBe(
      "cannot write /srv/repo/config: read-only file system",
    );
  });

  describe("on a real full / read-only filesystem (tmpfs; needs root and mount)", () => {
    let mountPoint: string | null = null;
    beforeAll(() => {
      const dir = tempDir("mnt");
      try {
        execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", dir], { stdio: "ignore" });
        mountPoint = dir;
      } catch {
        mountPoint = null;
      }
    });
    afterAll(() => {
      if (mountPoint !== null) execFileSync("umount", [mountPoint], { stdio: "ignore" });
    });

    it("ENOSPC is kind 'io' saying 'no space left on device', and leaves no temp file", async (ctx) => {
      if (mountPoint === null) return ctx.skip();
      const store = new LocalDirectoryStore(mountPoint);
      const error = await expectKind(store.put("chunks/ab/big", randomBytes(1 << 20)), "io");
      expect(error.message).toContain("no space left on device");
      expect(error.message).toContain(mountPoint);
      expect(walkFiles(mountPoint)).toEqual([]);
      await store.put("small", Buffer.from("still works"));
      expect((await store.get("small")).toString()).toBe("still works");
    });

    it("EROFS is kind 'io' saying 'read-only file system'", async (ctx) => {
      if (mountPoint === null) return ctx.skip();
      execFileSync("mount", ["-o", "remount,ro", mountPoint]);
      try {
        const store = new LocalDirectoryStore(mountPoint);
        const error = await expectKind(store.put("config", Buffer.from("x")), "io");
        expect(error.message).toContain("read-only file system");
        expect(error.message).toContain(mountPoint);
      } finally {
        execFileSync("mount", ["-o", "remount,rw", mountPoint]);
      }
    });
  });
});

describe("S3Store specifics", () => {
  let bucket: string;
  beforeAll(async () => {
    bucket = await makeTestBucket("s3only");
  });
  afterAll(async () => {
    await removeTestBucket(bucket);
  });
  afterEach(() => {
    // nothing the SDK printed as a process warning (NodeVersionSupportWarning, socket warnings)
    expect(warnings).toEqual([]);
  });

  it("stores under the prefix exactly what it was given (checked with the minio client)", async () => {
    const store = s3Store(bucket, { prefix: "/team/repo/" });
    try {
      expect(store.location).toBe(`s3://${bucket}/team/repo`);
      const body = randomBytes(300_000);
      await store.put("chunks/ab/abcdef", body);
      expect(await listKeys(bucket, "team/")).toEqual(["team/repo/chunks/ab/abcdef"]);
      expect((await getObject(bucket, "team/repo/chunks/ab/abcdef")).equals(body)).toBe(true);
      // objects outside the prefix are not the store's
      await putObject(bucket, "team/other", "x");
      await putObject(bucket, "team/repo-sibling/y", "y");
      expect(await listed(store, "")).toEqual(["chunks/ab/abcdef"]);
    } finally {
      await store.close();
    }
  });

  it("without a prefix, keys are stored at the bucket root", async () => {
    const rootBucket = await makeTestBucket("root");
    const store = s3Store(rootBucket, { prefix: "" });
    try {
      await store.put("config", Buffer.from("c"));
      expect(await listKeys(rootBucket)).toEqual(["config"]);
      expect(store.location).toBe(`s3://${rootBucket}`);
    } finally {
      await store.close();
      await removeTestBucket(rootBucket);
    }
  });

  it("wrong credentials are kind 'auth' for every operation", async () => {
    const s3 = testS3();
    const badSecret = s3Store(bucket, { credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: "wrong-secret" } });
    const badKey = s3Store(bucket, { credentials: { accessKeyId: "NO-SUCH-KEY", secretAccessKey: "whatever" } });
    try {
      for (const store of [badSecret, badKey]) {
        const error = await expectKind(store.get("config"), "auth");
        expect(error.message).toMatch(/access denied|SignatureDoesNotMatch|InvalidAccessKeyId/);
        await expectKind(store.put("config", Buffer.from("x")), "auth");
        await expectKind(store.stat("config"), "auth");
        await expectKind(collect(store.list("")), "auth");
        await expectKind(store.delete(["config"]), "auth");
      }
    } finally {
      await badSecret.close();
      await badKey.close();
    }
  });

  it("an unreachable endpoint is kind 'unreachable' within seconds, naming the endpoint", async () => {
    const port = await freePort(); // nothing listens there
    const endpoint = `http://127.0.0.1:${port}`;
    const store = s3Store(bucket, { endpoint });
    try {
      const started = Date.now();
      const error = await expectKind(store.get("config"), "unreachable");
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(error.message).toContain(endpoint);
      await expectKind(store.put("config", Buffer.from("x")), "unreachable");
      await expectKind(collect(store.list("")), "unreachable");
    } finally {
      await store.close();
    }
  });

  it("a missing bucket names the bucket and the endpoint", async () => {
    const store = s3Store("pv-no-such-bucket-here");
    try {
      const error = await expectKind(store.get("config"), "no-container");
      expect(error.message).toBe(`bucket pv-no-such-bucket-here does not exist at ${testS3().endpoint}`);
    } finally {
      await store.close();
    }
  });

  it("openStore builds an S3Store from s3:// URLs with the endpoint option or AWS_ENDPOINT_URL", async () => {
    const s3 = testS3();
    const saved = { ...process.env };
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    process.env.AWS_ENDPOINT_URL = s3.endpoint;
    delete process.env.AWS_PROFILE;
    try {
      const viaEnv = await openStore(`s3://${bucket}/via-env`);
      expect(viaEnv).toBeInstanceOf(S3Store);
      expect(viaEnv.location).toBe(`s3://${bucket}/via-env`);
      await viaEnv.put("k", Buffer.from("v"));
      await viaEnv.close();
      delete process.env.AWS_ENDPOINT_URL;
      const viaOption = await openStore(`s3://${bucket}/via-env`, { endpoint: s3.endpoint });
      expect((await viaOption.get("k")).toString()).toBe("v");
      await viaOption.close();
      expect(await listKeys(bucket, "via-env/")).toEqual(["via-env/k"]);
    } finally {
      process.env = saved;
    }
  });
});

/** An error shaped like the SDK's service exceptions. */
function sdkError(name: string, status?: number, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(`${name} message`), {
    name,
    ...(status === undefined ? {} : { $metadata: { httpStatusCode: status, attempts: 1 } }),
    ...extra,
  });
}

function body(bytes: Buffer): { transformToByteArray(): Promise<Uint8Array> } {
  return { transformToByteArray: async () => new Uint8Array(bytes) };
}

describe("S3Store paths a real server rarely takes (SDK send() stubbed)", () => {
  const store = (): S3Store =>
    // direct requests off: get() and put() go through the stubbed send() too (s3-direct.test.ts)
    new S3Store({ bucket: "bkt", prefix: "p", endpoint: "http://127.0.0.1:1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, direct: false });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("deletes in batches of at most 1000, each key once", async () => {
    const batches: string[][] = [];
    vi.spyOn(S3Client.prototype, "send").mockImplementation(async (command: unknown) => {
      if (!(command instanceof DeleteObjectsCommand)) throw new Error("unexpected command");
      batches.push(command.input.Delete!.Objects!.map((o) => o.Key!));
      return { Errors: [{ Key: "p/missing", Code: "NoSuchKey" }] };
    });
    const keys = Array.from({ length: 2500 }, (_, i) => `k/${i}`);
    await store().delete([...keys, "k/0"]);
    expect(batches.map((b) => b.length).sort()).toEqual([1000, 1000, 500]);
    expect(batches.flat().sort()).toEqual(keys.map((k) => `p/${k}`).sort());
  });

  it("fails a delete when the server reports per-key errors (other than NoSuchKey)", async () => {
    vi.spyOn(S3Client.prototype, "send").mockResolvedValue({
      Errors: [
        { Key: "p/k/1", Code: "AccessDenied", Message: "denied" },
        { Key: "p/k/2", Code: "AccessDenied" },
      ],
    } as never);
    const denied = await expectKind(store().delete(["k/1", "k/2", "k/3"]), "auth");
    expect(denied.message).toContain("2 of 3 objects");
    expect(denied.message).toContain("k/1");
    vi.spyOn(S3Client.prototype, "send").mockResolvedValue({ Errors: [{ Key: "p/k/1", Code: "InternalError" }] } as never);
    await expectKind(store().delete(["k/1"]), "io");
  });

  it("retries a conditional put on 409 ConditionalRequestConflict; 501 says conditional writes are unsupported", async () => {
    const send = vi.spyOn(S3Client.prototype, "send");
    send.mockRejectedValueOnce(sdkError("ConditionalRequestConflict", 409)).mockResolvedValueOnce({} as never);
    await store().put("config", Buffer.from("x"), { ifAbsent: true });
    expect(send).toHaveBeenCalledTimes(2);
    expect((send.mock.calls[0]![0] as PutObjectCommand).input.IfNoneMatch).toBe("*");
    send.mockReset().mockRejectedValue(sdkError("NotImplemented", 501));
    const error = await expectKind(store().put("config", Buffer.from("x"), { ifAbsent: true }), "io");
    expect(error.message).toMatch(/does not support conditional writes/);
  });

  it("re-reads a body cut short by the connection", async () => {
    const full = Buffer.from("0123456789");
    const send = vi.spyOn(S3Client.prototype, "send");
    send
      .mockResolvedValueOnce({ ContentLength: 10, Body: body(full.subarray(0, 4)) } as never)
      .mockResolvedValueOnce({ ContentLength: 10, Body: body(full) } as never);
    expect((await store().get("k")).equals(full)).toBe(true);
    expect(send).toHaveBeenCalledTimes(2);
    expect((send.mock.calls[0]![0] as GetObjectCommand).input.Key).toBe("p/k");
    send.mockReset().mockResolvedValue({ ContentLength: 10, Body: body(full.subarray(0, 4)) } as never);
    await expectKind(store().get("k"), "io");
  });

  it("maps SDK errors to kinds with one-line messages", async () => {
    const cases: [Error, StoreErrorKind, RegExp][] = [
      [sdkError("NoSuchKey", 404), "not-found", /not found/],
      [sdkError("NoSuchBucket", 404), "no-container", /^bucket bkt does not exist at http:\/\/127\.0\.0\.1:1$/],
      [sdkError("NotFound", 404), "io", /HTTP 404 without an S3 error code/],
      [sdkError("InvalidAccessKeyId", 403), "auth", /unknown access key \(InvalidAccessKeyId\): check AWS_ACCESS_KEY_ID/],
      [sdkError("Forbidden", 403), "auth", /access denied/],
      [sdkError("CredentialsProviderError"), "auth", /no S3 credentials found/],
      [Object.assign(new Error("getaddrinfo ENOTFOUND x"), { code: "ENOTFOUND" }), "unreachable", /host not found/],
      [new AggregateError([Object.assign(new Error("refused"), { code: "ECONNREFUSED" })]), "unreachable", /connection refused/],
      [sdkError("TimeoutError", undefined, { $metadata: { attempts: 4 } }), "unreachable", /timed out, 4 attempts/],
      [sdkError("InternalError", 500), "io", /InternalError \(HTTP 500\)/],
    ];
    const send = vi.spyOn(S3Client.prototype, "send");
    for (const [error, kind, message] of cases) {
      send.mockReset().mockRejectedValue(error);
      const e = await expectKind(store().get("config"), kind);
      expect(e.message).toMatch(message);
      expect(e.message).not.toContain("\n");
    }
  });
});

describe("openStore / parseRepoUrl", () => {
  it("parses the URL forms of the design", () => {
    expect(parseRepoUrl("s3://bucket")).toEqual({ kind: "s3", bucket: "bucket", prefix: "" });
    expect(parseRepoUrl("s3://bucket/")).toEqual({ kind: "s3", bucket: "bucket", prefix: "" });
    expect(parseRepoUrl("s3://my.bucket-1/a/b/")).toEqual({ kind: "s3", bucket: "my.bucket-1", prefix: "a/b" });
    expect(parseRepoUrl("file:///srv/repo")).toEqual({ kind: "local", path: "/srv/repo" });
    expect(parseRepoUrl("file:///srv/with%20space")).toEqual({ kind: "local", path: "/srv/with space" });
    expect(parseRepoUrl("file://relative/dir")).toEqual({ kind: "local", path: "relative/dir" });
    expect(parseRepoUrl("/srv/repo")).toEqual({ kind: "local", path: "/srv/repo" });
    expect(parseRepoUrl("repo-dir")).toEqual({ kind: "local", path: "repo-dir" });
  });

  it("refuses bad URLs with a UsageError", async () => {
    for (const url of [
      "",
      "s3://",
      "s3:///prefix",
      "s3://UPPER_bad!/x",
      "s3://bucket/a//b",
      "s3://bucket/../x",
      "s3://bucket/x?y=1",
      "http://example.com/repo",
      "ftp://x/y",
      "file://",
    ]) {
      expect(() => parseRepoUrl(url), url).toThrow(UsageError);
    }
    await expect(openStore("s3://bucket", { endpoint: "not a url" })).rejects.toThrow(UsageError);
    await expect(openStore("s3://bucket", { endpoint: "ftp://127.0.0.1:21" })).rejects.toThrow(UsageError);
  });

  it("opens a LocalDirectoryStore for paths and file:// URLs", async () => {
    const dir = tempDir("open");
    const store = await openStore(`file://${dir}`);
    expect(store).toBeInstanceOf(LocalDirectoryStore);
    expect(store.location).toBe(dir);
    await store.put("config", Buffer.from("c"));
    expect((await (await openStore(dir)).get("config")).toString()).toBe("c");
  });
});
