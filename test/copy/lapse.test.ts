/**
 * A copy publishes through the same guard as a backup (docs/prune.md): if its
 * registration on the destination lapses around a manifest PUT, that manifest is
 * withdrawn, the copy publishes nothing more and exits non-zero; the destination stays
 * sound and the next run completes the copy. RGW through a fault proxy: once the first
 * manifest PUT is seen, the registration's refreshes hang and the PUT's answer is held
 * until after the lapse (the manifest has landed by then).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, localRepo, runCli, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { buildSmallDisks, type SmallPloopDisk } from "../helpers/small-ploop-disks.js";
import { proxiedRepo, type ProxiedRepo } from "../faults/harness.js";
import { sha256File } from "../ploop/fixtures.js";

const CTS = ["101", "102", "103", "104"];

describe("copy whose destination registration lapses around a manifest PUT (RGW through a fault proxy)", () => {
  let work: string;
  let source: RepoTarget;
  let disks = new Map<string, SmallPloopDisk>();
  let destination: ProxiedRepo | null = null;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-copy-lapse-"));
    disks = await buildSmallDisks(work);
    source = await localRepo();
    expect((await runCli(["init", ...source.args])).code).toBe(0);
    for (const ct of CTS) {
      const r = await runCli(["backup", ...source.args, "--disk", disks.get(ct)!.descriptor, "--name", ct, "-q"]);
      expect(r.code, r.stderr).toBe(0);
    }
  }, 240_000);
  afterAll(async () => {
    await destination?.close();
    await source?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("the manifest lands, its answer comes after the lapse: withdrawn, nothing published, exit 1; the re-run copies everything", async () => {
    const proxied = await proxiedRepo("copylapse", { stallMs: 60_000, delayMs: [9000, 9000] });
    destination = proxied;
    let manifestSent = false;
    proxied.proxy.setDecide((request) => {
      if (request.method === "PUT" && /\/backups\/[^/]+\/[^/]+\/manifest$/.test(request.path) && !manifestSent) {
        manifestSent = true;
        return "holdResponse";
      }
      if (manifestSent && request.method === "PUT" && request.path.includes("/locks/backup-")) return "stall";
      return null;
    });
    const lock = { PLOOPVAULT_LOCK_TTL: "6", PLOOPVAULT_LOCK_REFRESH: "1" };
    // the held answer must not look like a stalled connection (that would retry the PUT)
    const patient = { PLOOPVAULT_S3_IDLE_TIMEOUT_MS: "30000" };
    const copy = (env: Record<string, string>): Promise<CliResult> =>
      runCli(["copy", "--from", source.url, "--to", proxied.repo.url, "--state-dir", proxied.repo.stateDir, "--json"], { env, timeoutMs: 240_000 });
    const started = Date.now();
    const lapsed = await copy({ ...proxied.env, ...lock, ...patient });
    // A lapsed run stops at once: it does not wait out the refresh stalled for 60 s.
    expect(Date.now() - started, "the lapsed copy waited for its stalled registration refresh").toBeLessThan(40_000);
    proxied.proxy.setDecide(undefined);
    expect(proxied.proxy.counters.holdResponse).toBe(1);
    expect(lapsed.code, lapsed.stderr).toBe(1);
    expect(lapsed.stderr).toMatch(/lapsed/);
    const report = jsonLines<{ copied: number; failed: number }>(lapsed.stdout).at(-1)!;
    expect(report).toMatchObject({ copied: 0, failed: 4 });
    // the manifest that landed was withdrawn; no other was written
    expect((await proxied.repo.listKeys("backups/")).filter((k) => k.endsWith("/manifest"))).toEqual([]);
    const check = await runCli(["check", ...proxied.repo.args], { env: proxied.repo.env });
    expect(check.code, check.stderr).toBe(0);

    const again = await copy(proxied.repo.env);
    expect(again.code, again.stderr).toBe(0);
    expect(jsonLines<{ copied: number }>(again.stdout).at(-1)).toMatchObject({ copied: 4 });
    for (const ct of CTS) {
      const out = join(work, `${ct}.raw`);
      const r = await runCli(["restore", ...proxied.repo.args, ct, "--format", "raw", "--target", out, "-q"], { env: proxied.repo.env });
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(out), ct).toBe(disks.get(ct)!.sha);
      await rm(out);
    }
  }, 300_000);
});
