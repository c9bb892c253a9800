/**
 * S3 servers that ignore If-None-Match / If-Match (issue 12, item 4). Only a 501 was
 * detected: a server that ignores the header overwrites, so a second `init` replaced an
 * existing config and two prunes could both hold the prune lock. Now `init` looks for a
 * config first, and `init` and `prune` probe once per repository (remembered in the state
 * dir) that the server refuses a second conditional create and a wrong If-Match.
 *
 * Fault injection: a store wrapper that drops the conditions (in-process, over a local
 * directory and over RGW), and the fault proxy answering 200 to refused conditional PUTs
 * (the CLI against RGW). The real path: the local store and RGW pass the probe.
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chunkerParamsForAverage } from "../../src/chunker/params.js";
import { newRepositoryConfig } from "../../src/repository/config.js";
import { requireConditionalWrites, type ConditionalWritesOptions } from "../../src/repository/conditional-writes.js";
import { createRepository } from "../../src/repository/create.js";
import { probeConditionalWrites } from "../../src/uploader/conditional-writes.js";
import { LocalDirectoryStore } from "../../src/uploader/local.js";
import { S3Store } from "../../src/uploader/s3.js";
import type { ObjectInfo, ObjectStore, PutOptions } from "../../src/uploader/store.js";
import { jsonLines, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { makeTestBucket, testS3, testStoreOptions } from "../helpers/s3-server.js";

/** Writes every put unconditionally, as a server that ignores If-None-Match / If-Match does. */
class IgnoresConditions implements ObjectStore {
  puts: { key: string; options: PutOptions | undefined }[] = [];
  constructor(readonly inner: ObjectStore) {}
  get location(): string {
    return this.inner.location;
  }
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    this.puts.push({ key, options });
    return this.inner.put(key, body);
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
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
  async ensureContainer(): Promise<void> {
    await this.inner.ensureContainer?.();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const params = chunkerParamsForAverage(64 << 10);
let probes = 0;
function probeOptions(stateDir: string, server: string): Omit<ConditionalWritesOptions, "purpose"> {
  return {
    stateDir,
    server,
    probeKey: `locks/probe-test-${process.pid}-${probes++}`,
    probeBody: (step) => Buffer.from(`${step} ${Date.now()} ${Math.random()}`),
    warn: () => undefined,
  };
}

describe.each(["local", "s3"] as const)("conditional writes, %s store", (kind) => {
  let work: string;
  let stores: ObjectStore[] = [];
  const newStore = async (): Promise<ObjectStore> => {
    let store: ObjectStore;
    if (kind === "local") {
      store = new LocalDirectoryStore(await mkdtemp(join(work, "repo-")));
    } else {
      store = new S3Store(testStoreOptions(await makeTestBucket("cas"), "repo"));
    }
    stores.push(store);
    return store;
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-cas-"));
  });
  afterAll(async () => {
    for (const s of stores) await s.close();
    stores = [];
    await rm(work, { recursive: true, force: true });
  });

  it("the real store passes the probe and leaves nothing behind", async () => {
    const store = await newStore();
    expect(await probeConditionalWrites(store, "locks/probe-x", (step) => Buffer.from(`${step} ${Math.random()}`))).toBeNull();
    expect(await store.stat("locks/probe-x")).toBeNull();
  });

  it("a store that ignores the conditions fails the probe", async () => {
    const store = new IgnoresConditions(await newStore());
    expect(await probeConditionalWrites(store, "locks/probe-x", (step) => Buffer.from(`${step} ${Math.random()}`))).toMatch(
      /accepted a second conditional create .* ignores If-None-Match/,
    );
    expect(await store.stat("locks/probe-x")).toBeNull();
  });

  it("init refuses an existing repository, even where the server would let it overwrite the config", async () => {
    const inner = await newStore();
    const stateDir = join(work, `state-${probes}`);
    const first = await createRepository(inner, newRepositoryConfig(params, 3, new Date()), probeOptions(stateDir, inner.location));
    const config = await inner.get("config");
    const store = new IgnoresConditions(inner);
    await expect(createRepository(store, newRepositoryConfig(params, 3, new Date()), probeOptions(stateDir, inner.location))).rejects.toThrow(
      `a repository already exists at ${inner.location}`,
    );
    expect(await inner.get("config")).toEqual(config);
    expect(store.puts).toEqual([]);
    expect(JSON.parse(config.toString()).id).toBe(first.config.id);
  });

  it("init on a server that ignores the conditions is refused before it writes a config", async () => {
    const inner = await newStore();
    const store = new IgnoresConditions(inner);
    await expect(createRepository(store, newRepositoryConfig(params, 3, new Date()), probeOptions(join(work, "state-x"), inner.location))).rejects.toThrow(
      /refusing init on .*: the server does not honour conditional writes \(it accepted a second conditional create/,
    );
    expect(await inner.stat("config")).toBeNull();
  });

  it("the probe runs once per repository and server; a failure is not remembered", async () => {
    const inner = await newStore();
    const stateDir = join(work, `state-once-${probes}`);
    const store = new IgnoresConditions(inner);
    const id = "0123456789abcdef0123456789abcdef";
    await expect(requireConditionalWrites(store, id, { ...probeOptions(stateDir, "server A"), purpose: "prune" })).rejects.toThrow(
      /refusing prune on server A/,
    );
    await expect(stat(join(stateDir, "repos", id, "conditional-writes.json"))).rejects.toThrow(/ENOENT/);
    // the real store: probed, remembered (owner-only), not probed again; another server is probed again
    const counting = { ...probeOptions(stateDir, "server A"), purpose: "prune" };
    let writes = 0;
    const spy = new IgnoresConditions(inner);
    spy.put = (key, body, options) => {
      writes++;
      return inner.put(key, body, options);
    };
    await requireConditionalWrites(spy, id, counting);
    expect(writes).toBe(3);
    const record = join(stateDir, "repos", id, "conditional-writes.json");
    expect(((await stat(record)).mode & 0o777).toString(8)).toBe("600");
    expect(JSON.parse(await readFile(record, "utf8"))).toMatchObject({ version: 1, server: "server A" });
    await requireConditionalWrites(spy, id, counting);
    expect(writes).toBe(3);
    await requireConditionalWrites(spy, id, { ...counting, server: "server B" });
    expect(writes).toBe(6);
  });
});

describe("through the CLI against RGW, behind a proxy that ignores conditional writes", () => {
  let proxy: FaultProxy;
  let repo: RepoTarget;
  const viaProxy = (args: string[]) => runCli([...args, ...repo.args], { env: { ...repo.env, AWS_ENDPOINT_URL: proxy.url } });
  const direct = (args: string[]) => runCli([...args, ...repo.args], { env: repo.env });

  beforeAll(async () => {
    proxy = await startFaultProxy({ target: testS3().endpoint, ignoreConditions: true });
    repo = await s3Repo("casproxy");
  });
  afterAll(async () => {
    await proxy.close();
    await repo.cleanup();
  });

  it("init is refused with one line and writes no config", async () => {
    const r = await viaProxy(["init"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/refusing init on s3:\/\/.* at http:\/\/127\.0\.0\.1:\d+: the server does not honour conditional writes/);
    expect(proxy.counters.conditionsIgnored).toBeGreaterThan(0);
    expect(await repo.listKeys("")).toEqual([]);
  });

  it("prune is refused on that server; snapshots still work; the real server passes", async () => {
    const init = await direct(["init"]);
    expect(init.code, init.stderr).toBe(0);
    const prune = await viaProxy(["prune", "--keep-last", "1"]);
    expect(prune.code, prune.stderr).toBe(1);
    expect(prune.stderr).toMatch(/refusing prune on s3:\/\/.*: the server does not honour conditional writes/);
    const snapshots = await viaProxy(["snapshots", "--json"]);
    expect(snapshots.code, snapshots.stderr).toBe(0);
    expect(jsonLines(snapshots.stdout)).toEqual([[]]);
    const ok = await direct(["prune", "--keep-last", "1"]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(await repo.listKeys("locks/")).toEqual([]);
  });
});
