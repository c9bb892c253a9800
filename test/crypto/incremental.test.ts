/**
 * Container backups (snapshot, kept delta, incremental reuse of the previous manifest)
 * into an encrypted repository, through the CLI with the real ploop: the incremental
 * path reads the previous (sealed) manifest and reuses its keyed chunk ids, and every
 * backup restores bit-identical to the real ploop's flattening of its snapshot.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopFlatten } from "../helpers/ploop-tool.js";
import { fillTop, makeDisk } from "../live/fixtures.js";
import { sha256File } from "../ploop/fixtures.js";

interface Result {
  status: string;
  backup: string;
  snapshotGuid: string;
  mode: "incremental" | "full";
  readBytes: number;
  dataBytes: number;
  reusedChunks: number;
  newChunks: number;
}

describe("encrypted repository, container backups", () => {
  let repo: RepoTarget;
  let work: string;
  let privateRoot: string;
  const env = { PLOOPVAULT_PASSWORD: "incremental secret" };
  const args = (): string[] => [...repo.args, "--private-root", privateRoot, "--vzlist-bin", "/nonexistent/vzlist", "--ploop-bin", PLOOP_WRAPPER];

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-encincr-"));
    privateRoot = join(work, "private");
    const init = await runCli(["init", ...repo.args, "--chunk-avg", "16K", "--encrypt"], { env });
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  async function backupAndVerify(ct: string, dd: string): Promise<Result> {
    const b = await runCli(["backup", ...args(), ct, "--json"], { env });
    expect(b.code, b.stderr).toBe(0);
    const [r] = jsonLines<Result>(b.stdout);
    expect(r!.status).toBe("ok");
    const expected = join(work, `${ct}.expected`);
    await ploopFlatten(dd, expected, { topGuid: r!.snapshotGuid });
    const raw = join(work, `${ct}.raw`);
    const restore = await runCli(["restore", ...repo.args, `${ct}/${r!.backup}`, "--format", "raw", "--target", raw], { env });
    expect(restore.code, restore.stderr).toBe(0);
    expect(await sha256File(raw)).toBe(await sha256File(expected));
    await rm(raw);
    await rm(expected);
    return r!;
  }

  it("a full then an incremental backup, both restore exactly; nothing plaintext is stored", async () => {
    const ct = "401";
    const dir = join(privateRoot, ct, "root.hdd");
    await mkdir(dir, { recursive: true });
    const dd = await makeDisk(dir, { size: "32M" });
    await fillTop(dd, 0, 200, "SECRET-TAG");
    const first = await backupAndVerify(ct, dd);
    expect(first.mode).toBe("full");
    for (const c of [3, 77, 150, 400]) await writeClusterToTop(dd, c, randomBytes(64 << 10));
    const second = await backupAndVerify(ct, dd);
    expect(second.mode).toBe("incremental");
    expect(second.reusedChunks).toBeGreaterThan(0);
    expect(second.readBytes).toBeLessThan(second.dataBytes / 2);
    for (const key of await repo.listKeys("")) {
      const body = await repo.read(key);
      expect(body.includes(Buffer.from("SECRET-TAG")), key).toBe(false);
    }
    const check = await runCli(["check", ...repo.args, "--read-data"], { env });
    expect(check.code, check.stderr).toBe(0);
  });
});
