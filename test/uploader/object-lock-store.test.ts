/**
 * The S3 store's object-lock operations (src/uploader/store.ts contract) against Ceph RGW,
 * checked with the independent minio client: retentions as written, version listings
 * grouped by key with delete markers, reads of a given version, extensions that never
 * shorten, deletions that report what retention protects instead of failing, and a
 * refusal that is not about retention failing loudly. The local store refuses retention.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalDirectoryStore } from "../../src/uploader/local.js";
import { S3Store } from "../../src/uploader/s3.js";
import { StoreError } from "../../src/uploader/store.js";
import { applyAppendOnlyPolicies, listVersions, makeLockedBucket, nodeCredentials, retentionOf } from "../helpers/object-lock.js";
import { makeTestBucket, minioClient, testS3, testStoreOptions } from "../helpers/s3-server.js";

function store(bucket: string, credentials?: { accessKeyId: string; secretAccessKey: string }): S3Store {
  return new S3Store(testStoreOptions(bucket, "repo", { maxAttempts: 2, ...(credentials === undefined ? {} : { credentials }) }));
}

const seconds = (n: number): Date => new Date(Math.ceil((Date.now() + n * 1000) / 1000) * 1000);

describe("S3 store: object lock operations (RGW)", () => {
  let bucket: string;
  let s: S3Store;
  beforeAll(async () => {
    bucket = await makeLockedBucket("olstore");
    s = store(bucket);
  });
  afterAll(async () => {
    await s.close();
  });

  it("writes retentions, lists versions and delete markers by key, reads a given version", async () => {
    const until = seconds(3600);
    await s.put("chunks/aa/one", Buffer.from("first"), { retention: { mode: "governance", until } });
    const r = await retentionOf(bucket, "repo/chunks/aa/one");
    expect(r?.mode).toBe("GOVERNANCE");
    expect(r?.until.getTime()).toBe(until.getTime());
    // someone overwrites it and then deletes it without a version id
    await minioClient().putObject(bucket, "repo/chunks/aa/one", Buffer.from("junk"));
    await minioClient().removeObject(bucket, "repo/chunks/aa/one");
    await s.put("chunks/aa/two", Buffer.from("other"));
    const versions = [];
    for await (const v of s.listVersions("chunks/")) versions.push(v);
    expect(versions.map((v) => [v.key, v.deleteMarker, v.latest])).toEqual([
      ["chunks/aa/one", true, true],
      ["chunks/aa/one", false, false],
      ["chunks/aa/one", false, false],
      ["chunks/aa/two", false, true],
    ]);
    // the current version is a delete marker: not found; the versions under it are readable
    await expect(s.getVersion("chunks/aa/one")).rejects.toMatchObject({ kind: "not-found" });
    const first = await s.getVersion("chunks/aa/one", versions[2]!.versionId);
    expect(first.body.toString()).toBe("first");
    expect(first.versionId).toBe(versions[2]!.versionId);
    expect(first.retainUntil?.getTime()).toBe(until.getTime());
    expect((await s.getVersion("chunks/aa/one", versions[1]!.versionId)).retainUntil).toBeNull();
  });

  it("an object large enough for a multipart upload gets its retention too", async () => {
    const s3 = testS3();
    const small = new S3Store({
      bucket,
      prefix: "repo",
      endpoint: s3.endpoint,
      region: s3.region,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      maxAttempts: 2,
      multipartThresholdBytes: 6 << 20,
      multipartPartBytes: 5 << 20,
    });
    try {
      const until = seconds(3600);
      const body = Buffer.alloc(11 << 20, 7);
      await small.put("backups/101/big/manifest", body, { retention: { mode: "governance", until }, ifAbsent: true });
      const r = await retentionOf(bucket, "repo/backups/101/big/manifest");
      expect(r?.mode).toBe("GOVERNANCE");
      expect(r?.until.getTime()).toBe(until.getTime());
      expect((await small.get("backups/101/big/manifest")).equals(body)).toBe(true);
    } finally {
      await small.close();
    }
  });

  it("extends a retention and never shortens one; a hidden key is not-found", async () => {
    await s.put("backups/x/manifest", Buffer.from("m"), { retention: { mode: "governance", until: seconds(600) } });
    const later = seconds(7200);
    await s.extendRetention("backups/x/manifest", { mode: "governance", until: later });
    expect((await retentionOf(bucket, "repo/backups/x/manifest"))?.until.getTime()).toBe(later.getTime());
    // asking for less than what is in place is not an error and changes nothing
    await s.extendRetention("backups/x/manifest", { mode: "governance", until: seconds(60) });
    expect((await retentionOf(bucket, "repo/backups/x/manifest"))?.until.getTime()).toBe(later.getTime());
    await expect(s.extendRetention("chunks/aa/one", { mode: "governance", until: seconds(60) })).rejects.toMatchObject({ kind: "not-found" });
  });

  it("deletes versions for good, and reports the ones retention still protects", async () => {
    await s.put("chunks/bb/short", Buffer.from("short"), { retention: { mode: "governance", until: seconds(3) } });
    await s.put("chunks/bb/long", Buffer.from("long"), { retention: { mode: "governance", until: seconds(3600) } });
    await minioClient().removeObject(bucket, "repo/chunks/bb/short"); // a delete marker on top
    const all = (await listVersions(bucket, "repo/chunks/bb/")).map((v) => ({ key: v.key.slice("repo/".length), versionId: v.versionId }));
    expect(all).toHaveLength(3);
    const first = await s.deleteVersions(all);
    // the marker goes at once; both data versions are still retained
    expect(first.retained.map((r) => r.key).sort()).toEqual(["chunks/bb/long", "chunks/bb/short"]);
    expect((await listVersions(bucket, "repo/chunks/bb/")).filter((v) => v.deleteMarker)).toHaveLength(0);
    await new Promise((resolve) => setTimeout(resolve, 4500));
    const second = await s.deleteVersions(first.retained);
    expect(second.retained.map((r) => r.key)).toEqual(["chunks/bb/long"]);
    expect((await listVersions(bucket, "repo/chunks/bb/")).map((v) => v.key)).toEqual(["repo/chunks/bb/long"]);
  });

  it("tells an object-lock bucket from a plain one", async () => {
    expect(await s.bucketState()).toEqual({ objectLock: true, versioning: "enabled" });
    const plain = store(await makeTestBucket("olplain"));
    try {
      expect(await plain.bucketState()).toEqual({ objectLock: false, versioning: "off" });
    } finally {
      await plain.close();
    }
  });

  it("a deletion refused for another reason than retention (an append-only node's) fails as an auth error", async (ctx) => {
    const node = nodeCredentials();
    if (node === null) return ctx.skip();
    const locks = await makeTestBucket("olstorelocks");
    await applyAppendOnlyPolicies(bucket, locks, node.user);
    const s3 = testS3();
    const asNode = store(bucket, { accessKeyId: s3.node!.accessKeyId, secretAccessKey: s3.node!.secretAccessKey });
    try {
      await asNode.put("chunks/cc/free", Buffer.from("not retained"));
      const [v] = (await listVersions(bucket, "repo/chunks/cc/")).map((x) => ({ key: x.key.slice("repo/".length), versionId: x.versionId }));
      const error = await asNode.deleteVersions([v!]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect((error as StoreError).kind).toBe("auth");
      // RGW refuses the whole DeleteObjects request; AWS would refuse per key (then the key is named)
      expect((error as StoreError).message).toMatch(/cannot delete .*object versions in s3:\/\/.*(access denied|not under retention)/);
      expect(await listVersions(bucket, "repo/chunks/cc/")).toHaveLength(1);
    } finally {
      await asNode.close();
    }
  });

  it("a local directory refuses a retention, saying why", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pv-ol-local-"));
    try {
      const local = new LocalDirectoryStore(dir);
      await expect(local.put("chunks/aa/x", Buffer.from("x"), { retention: { mode: "governance", until: seconds(60) } })).rejects.toThrow(
        /Object Lock is not available for a local directory/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
