/**
 * One fault at a time, aimed at a kind of request: bodies cut short, reset or damaged in
 * transit, stalls, SlowDown storms, and the ambiguous case of a conditional PUT that took
 * effect but whose answer was lost. Each must be survived without a false failure and
 * without a wrong byte.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { jsonLines, runCli } from "../helpers/cli.js";
import { sha256File } from "../ploop/fixtures.js";
import { expectCleanFailure, proxiedRepo, visibleEntries, type ProxiedRepo } from "./harness.js";

const CHUNK_GET = /^\/[^/]+\/repo\/chunks\//;

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

  it("GET bodies cut short (Content-Length larger than the body, then close) or reset midway are detected and fetched again", async () => {
    p.proxy.resetCounters();
    let n = 0;
    p.proxy.setDecide((req) =>
      req.method === "GET" && CHUNK_GET.test(req.path) && req.occurrence === 0 ? (n++ % 2 === 0 ? "truncate" : "resetResponse") : null,
    );
    await restoreOk("truncated");
    expect(p.proxy.counters.truncate).toBeGreaterThan(50);
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

  it("a manifest damaged in transit is fetched again and never cached (later runs on the host are not poisoned)", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) =>
      req.method === "GET" && req.path.endsWith(`/backups/101/${backupId}/manifest`) ? (req.occurrence === 0 ? "corrupt" : null) : null,
    );
    const stateDir = join(work, "fresh-state"); // no cached copy of the manifest yet
    for (const label of ["first", "second"]) {
      const target = join(work, `manifest-${label}.raw`);
      const r = await p.run(["restore", `101/${backupId}`, "--format", "raw", "--target", target, "--state-dir", stateDir]);
      expect(r.code, `${r.stderr}\n${p.proxy.describe()}`).toBe(0);
      expect(await sha256File(target)).toBe(corpus().flatSha256["101"]);
      await rm(target);
    }
    expect(p.proxy.counters.corrupt).toBe(1);
  });

  it("check reads a manifest damaged in transit once more and does not report a damaged backup", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "GET" && req.path.endsWith(`/backups/101/${backupId}/manifest`) && req.occurrence === 0 ? "corrupt" : null));
    const r = await p.run(["check", "--json"]);
    expect(r.code, `${r.stderr}\n${p.proxy.describe()}`).toBe(0);
    expect(p.proxy.counters.corrupt).toBe(1);
    // damaged on every read, it is reported, naming the backup
    p.proxy.setDecide((req) => (req.method === "GET" && req.path.endsWith(`/backups/101/${backupId}/manifest`) ? "corrupt" : null));
    const bad = await p.run(["check", "--json"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout + bad.stderr).toContain(`101/${backupId}`);
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

  it("503 SlowDown and 500 on first attempts (a third of them): backup and restore still complete", async () => {
    p.proxy.resetCounters();
    let n = 0;
    p.proxy.setDecide((req) => (req.occurrence === 0 && n++ % 3 === 0 ? (req.method === "PUT" ? "slowDown503" : "error500") : null));
    const b = await p.run(["backup", "--disk", descriptorOf("102"), "--json", "-q"]);
    expect(b.code, `${b.stderr}\n${p.proxy.describe()}`).toBe(0);
    expect(p.proxy.counters.slowDown503).toBeGreaterThan(3);
    const id = jsonLines<{ backup: string }>(b.stdout)[0]!.backup;
    const target = join(work, "slowdown.raw");
    const r = await p.run(["restore", `102/${id}`, "--format", "raw", "--target", target]);
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(target)).toBe(corpus().flatSha256["102"]);
    expect(p.proxy.counters.error500).toBeGreaterThan(3);
    await rm(target);
  });

  it("a manifest PUT that lands but whose answer is lost counts as written (no false failure, one manifest)", async () => {
    p.proxy.resetCounters();
    p.proxy.setDecide((req) => (req.method === "PUT" && req.path.endsWith("/manifest") && req.occurrence === 0 ? "resetResponse" : null));
    const manifests = async (): Promise<string[]> => (await p.repo.listKeys("backups/104/")).filter((k) => k.endsWith("/manifest"));
    const before = await manifests();
    const b = await p.run(["backup", "--disk", descriptorOf("104"), "--json", "-q"]);
    expect(b.code, `${b.stderr}\n${p.proxy.describe()}`).toBe(0);
    expect(p.proxy.counters.resetResponse).toBe(1);
    const id = jsonLines<{ backup: string }>(b.stdout)[0]!.backup;
    expect(await manifests()).toEqual([...before, `backups/104/${id}/manifest`].sort());

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
