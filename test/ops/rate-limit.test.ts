/**
 * Bandwidth limits: the token-bucket store decorator holds its rate within 10% on 50 MiB
 * with concurrent requests, and the CLI's --limit-upload / --limit-read hold within 10% on
 * real backups of incompressible data. The CLI runs use a rate well below what this
 * machine's local repository manages unlimited (fsync per chunk: ~20 MiB/s on the CI VM),
 * so the limit, not the disk, sets the pace. The upload rate is measured where it
 * happens: from the modification times of the chunk files the local store wrote, so
 * process start-up and worker set-up (seconds on a loaded host) do not blur it.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseRate, RateLimitedStore, TokenBucket } from "../../src/uploader/rate-limit.js";
import type { ObjectInfo, ObjectStore } from "../../src/uploader/store.js";
import { StoreError } from "../../src/uploader/store.js";
import { jsonLines, localRepo, runCli, type RepoTarget } from "../helpers/cli.js";
import { NO_CONFIG, randomDisk } from "./util.js";

const MiB = 1 << 20;

/** A store in memory: the decorator's rate is then the only thing that takes time. */
class MemoryStore implements ObjectStore {
  readonly location = "memory:";
  readonly objects = new Map<string, Buffer>();
  async put(key: string, body: Uint8Array): Promise<void> {
    this.objects.set(key, Buffer.from(body));
  }
  async get(key: string): Promise<Buffer> {
    const body = this.objects.get(key);
    if (body === undefined) throw new StoreError("not-found", `${key} not found`, { key });
    return body;
  }
  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return (await this.get(key)).subarray(offset, offset + length);
  }
  async stat(key: string): Promise<ObjectInfo | null> {
    const body = this.objects.get(key);
    return body === undefined ? null : { key, size: body.length };
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for (const [key, body] of this.objects) if (key.startsWith(prefix)) yield { key, size: body.length };
  }
  async delete(keys: readonly string[]): Promise<void> {
    for (const k of keys) this.objects.delete(k);
  }
  async close(): Promise<void> {}
}

/** Run `count` tasks with at most `concurrency` at once. */
async function concurrently(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

describe("rate limits", () => {
  it("parses rates like sizes", () => {
    expect(parseRate("20M")).toBe(20 * MiB);
    expect(parseRate("20MiB/s")).toBe(20 * MiB);
    expect(parseRate("1.5G")).toBe(1.5 * 1024 * MiB);
    expect(parseRate("500k")).toBe(500 * 1024);
    expect(parseRate("1048576")).toBe(MiB);
    expect(parseRate("fast")).toBeNull();
    expect(parseRate("0")).toBeNull();
  });

  it("the store decorator holds 20 MiB/s within 10% on 50 MiB of concurrent uploads and downloads", async () => {
    const rate = 20 * MiB;
    const inner = new MemoryStore();
    const store = new RateLimitedStore(inner, { upload: new TokenBucket({ rate }), download: new TokenBucket({ rate }) });
    const body = Buffer.alloc(256 << 10, 7);
    const count = (50 * MiB) / body.length;
    const expected = (count * body.length) / rate;

    let t0 = performance.now();
    await concurrently(count, 8, (i) => store.put(`chunks/${i}`, body));
    const upSeconds = (performance.now() - t0) / 1000;
    expect(inner.objects.size).toBe(count);
    // The bucket may hold up to 0.25 s of tokens after a stall (a loaded machine): at most
    // 5 MiB of the 50, i.e. the 10% bound itself; allow timer jitter on top.
    expect(upSeconds).toBeGreaterThan(expected * 0.88);
    expect(upSeconds).toBeLessThan(expected * 1.1);

    t0 = performance.now();
    await concurrently(count, 8, async (i) => {
      expect((await store.get(`chunks/${i}`)).length).toBe(body.length);
    });
    const downSeconds = (performance.now() - t0) / 1000;
    expect(downSeconds).toBeGreaterThan(expected * 0.88);
    expect(downSeconds).toBeLessThan(expected * 1.1);
  });

  it("passes metadata calls through without waiting", async () => {
    const inner = new MemoryStore();
    await inner.put("a", Buffer.alloc(10));
    const store = new RateLimitedStore(inner, { upload: new TokenBucket({ rate: 1 }), download: new TokenBucket({ rate: 1 }) });
    const t0 = performance.now();
    expect(await store.stat("a")).toEqual({ key: "a", size: 10 });
    const keys: string[] = [];
    for await (const info of store.list("")) keys.push(info.key);
    expect(keys).toEqual(["a"]);
    await store.delete(["a"]);
    expect(performance.now() - t0).toBeLessThan(200);
    expect(store.location).toBe("memory:");
  });

  describe("through the CLI", () => {
    let repo: RepoTarget;
    let unlimited: RepoTarget;
    let work: string;
    let disk: string;

    beforeAll(async () => {
      repo = await localRepo();
      unlimited = await localRepo();
      work = await mkdtemp(join(tmpdir(), "pv-ops-rate-"));
      disk = await randomDisk(join(work, "200"), 16);
      for (const r of [repo, unlimited]) {
        const init = await runCli(["init", ...r.args], { env: NO_CONFIG });
        expect(init.code, init.stderr).toBe(0);
      }
    });
    afterAll(async () => {
      await repo.cleanup();
      await unlimited.cleanup();
      await rm(work, { recursive: true, force: true });
    });

    interface Result {
      newBytesStored: number;
      readBytes: number;
      seconds: number;
    }

    // 2 MiB/s: far below what even a loaded test machine writes, so the limit sets the pace
    const LIMIT = 2 * MiB;
    it("--limit-upload 2M: a backup of 16 MiB of random data uploads at 2 MiB/s (within 10%)", async () => {
      const free = await runCli(["backup", ...unlimited.args, "--disk", disk, "--json", "-q"], { env: NO_CONFIG });
      expect(free.code, free.stderr).toBe(0);
      const [f] = jsonLines<Result>(free.stdout);

      const limited = await runCli(["backup", ...repo.args, "--disk", disk, "--json", "-q", "--limit-upload", "2M"], { env: NO_CONFIG });
      expect(limited.code, limited.stderr).toBe(0);
      const [l] = jsonLines<Result>(limited.stdout);
      expect(l!.newBytesStored).toBeGreaterThan(16 * MiB); // random data: nothing saved
      const chunks = await Promise.all((await repo.listKeys("chunks/")).map((k) => stat(join(repo.url, k))));
      chunks.sort((a, b) => a.mtimeMs - b.mtimeMs);
      const span = (chunks[chunks.length - 1]!.mtimeMs - chunks[0]!.mtimeMs) / 1000;
      const bytes = chunks.slice(1).reduce((sum, c) => sum + c.size, 0); // the first one opens the window
      const rate = bytes / span;
      expect(rate).toBeGreaterThan(LIMIT * 0.9);
      expect(rate).toBeLessThan(LIMIT * 1.1);
      // and end to end, start-up included, it is no faster than the limit
      expect(l!.newBytesStored / l!.seconds).toBeLessThan(LIMIT * 1.1);
      // and it is the limit that set the pace, not the machine
      expect(f!.seconds).toBeLessThan(l!.seconds * 0.6);
    });

    it("--limit-read 4M: image reads run no faster than 4 MiB/s", async () => {
      // the data is in the repository already: reading is all this backup does
      const r = await runCli(["backup", ...repo.args, "--disk", disk, "--json", "-q", "--limit-read", "4M"], { env: NO_CONFIG });
      expect(r.code, r.stderr).toBe(0);
      const [res] = jsonLines<Result>(r.stdout);
      expect(res!.newBytesStored).toBe(0);
      // `seconds` includes set-up before the first read (worker threads, the known-chunk
      // index): the bound that protects containers is the upper one
      const rate = res!.readBytes / res!.seconds;
      expect(rate).toBeLessThan(4 * MiB * 1.1);
      expect(rate).toBeGreaterThan(4 * MiB * 0.6);
    });

    it("refuses a rate it cannot parse (exit 2)", async () => {
      const r = await runCli(["backup", ...repo.args, "--disk", disk, "--limit-upload", "lots"], { env: NO_CONFIG });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/--limit-upload: cannot parse rate "lots"/);
    });
  });
});
