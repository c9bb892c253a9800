/**
 * The store features the prune protocol relies on, against both backends (the local
 * directory store and the suite's Ceph RGW): etags from stat(), compare-and-swap with
 * ifMatch (of several writers holding the same etag exactly one wins), modification times
 * from the storage side. What was stored is read back with an independent reader (the
 * filesystem, the minio client).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LocalDirectoryStore } from "../../src/uploader/local.js";
import { S3Store } from "../../src/uploader/s3.js";
import { StoreError, type ObjectStore } from "../../src/uploader/store.js";
import { getObject, makeTestBucket, testStoreOptions } from "../helpers/s3-server.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Target {
  store: ObjectStore;
  raw(key: string): Promise<Buffer>;
}

async function target(kind: "local" | "s3"): Promise<Target> {
  if (kind === "local") {
    const dir = mkdtempSync(join(tmpdir(), "pv-cas-"));
    dirs.push(dir);
    return { store: new LocalDirectoryStore(dir), raw: async (key) => readFileSync(join(dir, ...key.split("/"))) };
  }
  const bucket = await makeTestBucket("cas");
  const store = new S3Store(testStoreOptions(bucket, "r"));
  return { store, raw: (key) => getObject(bucket, `r/${key}`) };
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (error) {
    if (error instanceof StoreError) return error.kind;
    throw error;
  }
}

describe.each(["local", "s3"] as const)("conditional overwrite (ifMatch), %s store", (kind) => {
  it("replaces only the version it names; a missing object is 'changed'", async () => {
    const { store, raw } = await target(kind);
    await store.put("locks/prune", Buffer.from("v1"));
    const v1 = await store.stat("locks/prune");
    expect(v1?.etag).toBeTruthy();
    expect(v1?.modified).toBeInstanceOf(Date);
    await store.put("locks/prune", Buffer.from("v2"), { ifMatch: v1!.etag! });
    expect((await raw("locks/prune")).toString()).toBe("v2");
    const v2 = await store.stat("locks/prune");
    expect(v2!.etag).not.toBe(v1!.etag);
    expect(await kindOf(store.put("locks/prune", Buffer.from("v3"), { ifMatch: v1!.etag! }))).toBe("changed");
    expect((await raw("locks/prune")).toString()).toBe("v2");
    expect(await kindOf(store.put("locks/none", Buffer.from("x"), { ifMatch: v1!.etag! }))).toBe("changed");
    expect(await store.stat("locks/none")).toBeNull();
    // list() reports modification times on the storage clock
    const listed = [];
    for await (const info of store.list("locks/")) listed.push(info);
    expect(listed.map((i) => i.key)).toEqual(["locks/prune"]);
    expect(Math.abs(listed[0]!.modified!.getTime() - v2!.modified!.getTime())).toBeLessThan(1500);
    await store.close();
  });

  it("of several writers taking over the same version exactly one wins", async () => {
    const { store, raw } = await target(kind);
    for (let round = 0; round < 5; round++) {
      await store.put("locks/prune", Buffer.from(`stale ${round}`));
      const stale = (await store.stat("locks/prune"))!.etag!;
      const outcomes = await Promise.all(
        Array.from({ length: 6 }, (_, i) => kindOf(store.put("locks/prune", Buffer.from(`taker ${round}.${i}`), { ifMatch: stale }))),
      );
      expect(outcomes.filter((o) => o === "ok")).toHaveLength(1);
      expect(outcomes.filter((o) => o !== "ok").every((o) => o === "changed")).toBe(true);
      expect((await raw("locks/prune")).toString()).toBe(`taker ${round}.${outcomes.indexOf("ok")}`);
    }
    await store.close();
  });

  it("a takeover racing with conditional creates: exactly one winner", async () => {
    const { store, raw } = await target(kind);
    for (let round = 0; round < 8; round++) {
      await store.delete(["locks/prune"]);
      await store.put("locks/prune", Buffer.from("stale"));
      const stale = (await store.stat("locks/prune"))!.etag!;
      const taker = kindOf(store.put("locks/prune", Buffer.from("taker"), { ifMatch: stale }));
      const creators = Array.from({ length: 3 }, (_, i) => kindOf(store.put("locks/prune", Buffer.from(`creator ${i}`), { ifAbsent: true })));
      const outcomes = await Promise.all([taker, ...creators]);
      const names = ["taker", "creator 0", "creator 1", "creator 2"];
      const winners = names.filter((_, i) => outcomes[i] === "ok");
      expect(winners, outcomes.join(",")).toHaveLength(1);
      expect((await raw("locks/prune")).toString()).toBe(winners[0]);
    }
    await store.close();
  });
});
