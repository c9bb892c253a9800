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
import { jsonLines } from "../helpers/cli.js";
import { MODERATE_FAULTS } from "../helpers/fault-proxy.js";
import { sha256File } from "../ploop/fixtures.js";
import { expectCleanFailure, proxiedRepo, visibleEntries, type ProxiedRepo } from "./harness.js";

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

  // 101, then 104 (101 a day later: mostly known chunks, many manifests read)
  it.each(["101", "104"])("backup of %s: succeeds and restores bit-identical, or fails cleanly", async (ct) => {
    p.proxy.setRates(MODERATE_FAULTS);
    p.proxy.resetCounters();
    const before = await p.repo.listKeys(`backups/${ct}/`);
    const b = await p.run(["backup", "--disk", descriptorOf(ct), "--json", "-q"]);
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
    const b = await p.run(["backup", "--disk", descriptorOf("103")], { AWS_MAX_ATTEMPTS: "1" });
    expectCleanFailure(b, /103|chunks\/|backups\/|locks\/|S3|config/); // any request may be the one that fails
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
