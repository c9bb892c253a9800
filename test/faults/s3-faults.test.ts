/**
 * Backups and restores through a fault-injecting proxy in front of the test S3 server
 * (test/helpers/fault-proxy.ts): 500s, 503 SlowDown, connections reset while sending and
 * while receiving, bodies cut short, stalls and delays. Every run either succeeds and
 * then restores bit-identical to the real ploop's flattening (restore and check also
 * through the proxy), or fails cleanly: exit 1, one line, and no manifest.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, runCli } from "../helpers/cli.js";
import { MODERATE_FAULTS } from "../helpers/fault-proxy.js";
import { sha256File } from "../ploop/fixtures.js";
import { expectCleanFailure, proxiedRepo, visibleEntries, type ProxiedRepo } from "./harness.js";

const CHUNK_GET = /^\/[^/]+\/repo\/chunks\//;

describe("backup, restore and check through moderate S3 faults", () => {
  let p: ProxiedRepo;
  let work: string;
  const outcomes: string[] = [];

  beforeAll(async () => {
    p = await proxiedRepo("faults", { seed: 20240611 });
    work = await mkdtemp(join(tmpdir(), "pv-faults-"));
  });
  afterAll(async () => {
    if (outcomes.length > 0) process.stderr.write(`faults suite: ${outcomes.join("; ")}\n`);
    await p?.close();
    await rm(work, { recursive: true, force: true });
  });

  // 101 twice (the second run stores nothing new: manifest-heavy), then 102 and 104
  it.each(["101", "102", "101", "104"])("backup of %s: succeeds and restores bit-identical, or fails cleanly", async (ct) => {
    p.proxy.setRates(MODERATE_FAULTS);
    p.proxy.resetCounters();
    const before = await p.repo.listKeys(`backups/${ct}/`);
    const b = await p.run(["backup", "--disk", descriptorOf(ct), "--json", "-q", "--threads", "1"]);
    const backupFaults = p.proxy.describe();
    const after = await p.repo.listKeys(`backups/${ct}/`);
    const newManifests = after.filter((k) => k.endsWith("/manifest") && !before.includes(k));
    if (b.code !== 0) {
      outcomes.push(`${ct}: backup failed cleanly (${backupFaults})`);
      expectCleanFailure(b);
      expect(newManifests).toEqual([]);
      return;
    }
    expect(b.stderr).toBe(""); // -q: silent on success, however many retries it took
    const [result] = jsonLines<{ backup: string; status: string }>(b.stdout);
    expect(result!.status).toBe("ok");
    expect(newManifests).toEqual([`backups/${ct}/${result!.backup}/manifest`]);

    p.proxy.resetCounters();
    const target = join(work, `${ct}-${result!.backup}.raw`);
    const r = await p.run(["restore", `${ct}/${result!.backup}`, "--format", "raw", "--target", target]);
    const restoreFaults = p.proxy.describe();
    expect(r.code, `${r.stderr}\n${restoreFaults}`).toBe(0);
    expect(await sha256File(target)).toBe(corpus().flatSha256[ct]);
    await rm(target);

    p.proxy.resetCounters();
    const c = await p.run(["check", "--read-data", "-q"]);
    expect(c.code, `${c.stderr}\n${p.proxy.describe()}`).toBe(0);
    outcomes.push(`${ct}: ok (backup ${backupFaults}; restore ${restoreFaults}; check ${p.proxy.describe()})`);
  });

  it("injected faults of every kind along the way", () => {
    // each run resets the counters; the outcomes record them: at least some of each kind overall
    const all = outcomes.join(" ");
    for (const kind of ["error500", "slowDown503", "resetRequest", "resetResponse", "truncate", "stall", "delay"]) {
      expect(all, all).toContain(`${kind}=`);
    }
  });

  it("with one attempt per request and heavy faults, backup and restore fail cleanly: no manifest, no target", async () => {
    p.proxy.setRates({ error500: 0.1, resetRequest: 0.1, resetResponse: 0.1, truncate: 0.1 });
    const before = await p.repo.listKeys("backups/");
    const b = await p.run(["backup", "--disk", descriptorOf("103"), "--threads", "1"], { AWS_MAX_ATTEMPTS: "1" });
    expectCleanFailure(b, /103|chunks\/|backups\/|S3|config/);
    expect((await p.repo.listKeys("backups/")).filter((k) => k.endsWith("/manifest"))).toEqual(before.filter((k) => k.endsWith("/manifest")));

    const dir = join(work, "heavy");
    for (const format of ["raw", "ploop"]) {
      const r = await p.run(["restore", "101:latest", "--format", format, "--target", join(dir, "t")], { AWS_MAX_ATTEMPTS: "1" });
      expectCleanFailure(r);
      await expect(stat(join(dir, "t"))).rejects.toThrow();
    }
    expect(await visibleEntries(dir).catch(() => [])).toEqual([]);
  });
});

describe("targeted faults", () => {
  let p: ProxiedRepo;
  let work: string;
  let backupId: string;

  beforeAll(async () => {
    p = await proxiedRepo("targeted", { seed: 7 });
    work = await mkdtemp(join(tmpdir(), "pv-targeted-"));
    const b = await p.run(["backup", "--disk", descriptorOf("101"), "--json", "-q"]);
    expect(b.code, b.stderr).toBe(0);
    backupId = jsonLines<{ backup: string }>(b.stdout)[0]!.backup;
  });
  afterAll(async () => {
    await p?.close();
    await rm(work, { recursive: true, force: true });
  });

  async function restoreOk(label: string): Promise<void> {
    const target = join(work, `${label}.raw`);
    const r = await p.run(["restore", `101/${backupId}`, "--format", "raw", "--target", target]);
    expect(r.code, `${r.stderr}\n${p.proxy.describe()}`).toBe(0);
    expect(await sha256File(target)).toBe(corpus().flatSha256["101"]);
    await rm(target);
  }

  it("a GET body cut short (Content-Length larger than the body, then close) is detected and fetched again", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "GET" && CHUNK_GET.test(req.path) && req.occurrence === 0 ? "truncate" : null));
    await restoreOk("truncated");
    expect(p.proxy.counters.truncate).toBeGreaterThan(50);
  });

  it("a GET body reset midway is fetched again", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "GET" && CHUNK_GET.test(req.path) && req.occurrence === 0 ? "resetResponse" : null));
    await restoreOk("reset");
    expect(p.proxy.counters.resetResponse).toBeGreaterThan(50);
  });

  it("a chunk damaged in transit is read a second time; damaged twice, the restore fails naming chunk and backup", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "GET" && CHUNK_GET.test(req.path) && req.occurrence === 0 ? "corrupt" : null));
    await restoreOk("corrupt-once");
    expect(p.proxy.counters.corrupt).toBeGreaterThan(50);

    const [victimKey] = (await p.repo.listKeys("chunks/")).slice(-1);
    const victim = victimKey!.split("/").pop()!;
    p.proxy.setDecide((req) => (req.method === "GET" && req.path.endsWith(`/${victim}`) ? "corrupt" : null));
    const dir = join(work, "corrupt-twice");
    for (const format of ["raw", "ploop"]) {
      const r = await p.run(["restore", `101/${backupId}`, "--format", format, "--target", join(dir, format)]);
      expectCleanFailure(r, new RegExp(`chunk ${victim}.*101/${backupId}`));
    }
    expect(await visibleEntries(dir)).toEqual([]);
  });

  it("stalled requests and bodies are abandoned after the idle timeout and retried", async () => {
    p.proxy.resetCounters();
    let n = 0;
    p.proxy.setDecide((req) => (req.method === "GET" && CHUNK_GET.test(req.path) && req.occurrence === 0 && n++ % 8 === 0 ? "stall" : null));
    const started = Date.now();
    await restoreOk("stalled");
    expect(p.proxy.counters.stall).toBeGreaterThan(5);
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it("503 SlowDown and 500 on every first attempt: backup and restore still complete", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.occurrence === 0 ? (req.method === "PUT" ? "slowDown503" : "error500") : null));
    const b = await p.run(["backup", "--disk", descriptorOf("102"), "--json", "-q"]);
    expect(b.code, `${b.stderr}\n${p.proxy.describe()}`).toBe(0);
    expect(p.proxy.counters.slowDown503).toBeGreaterThan(10);
    const id = jsonLines<{ backup: string }>(b.stdout)[0]!.backup;
    const target = join(work, "slowdown.raw");
    const r = await p.run(["restore", `102/${id}`, "--format", "raw", "--target", target]);
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(target)).toBe(corpus().flatSha256["102"]);
    await rm(target);
  });

  it("a manifest PUT that lands but whose answer is lost counts as written (no false failure, one manifest)", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "PUT" && req.path.endsWith("/manifest") && req.occurrence === 0 ? "resetResponse" : null));
    const before = (await p.repo.listKeys("backups/104/")).length;
    const b = await p.run(["backup", "--disk", descriptorOf("104"), "--json", "-q"]);
    expect(b.code, `${b.stderr}\n${p.proxy.describe()}`).toBe(0);
    expect(p.proxy.counters.resetResponse).toBe(1);
    const id = jsonLines<{ backup: string }>(b.stdout)[0]!.backup;
    const keys = await p.repo.listKeys("backups/104/");
    expect(keys.length - before).toBe(2); // manifest + descriptor
    expect(keys).toContain(`backups/104/${id}/manifest`);

    // the same for a truncated answer to the manifest PUT
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "PUT" && req.path.endsWith("/manifest") && req.occurrence === 0 ? "truncate" : null));
    const again = await p.run(["backup", "--disk", descriptorOf("104"), "--json", "-q"]);
    expect(again.code, `${again.stderr}\n${p.proxy.describe()}`).toBe(0);
    expect(p.proxy.counters.truncate).toBe(1);
  });

  it("init whose config PUT lands but loses its answer succeeds, and a second init is refused", async () => {
    const other = ["--repo", `${p.repo.url}2`, "--state-dir", p.repo.stateDir];
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "PUT" && req.path.endsWith("/repo2/config") && req.occurrence === 0 ? "resetResponse" : null));
    const init = await runCli(["init", ...other], { env: p.env });
    expect(init.code, init.stderr).toBe(0);
    expect(p.proxy.counters.resetResponse).toBe(1);
    expectCleanFailure(await runCli(["init", ...other], { env: p.env }), /already exists/);
  });
});
