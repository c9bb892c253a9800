/**
 * PloopCli against the real ploop 1.15 (offline, through scripts/ploop-offline), plus a
 * fake ploop for the LOCK path (real ploop waits 60 s before exit 23; see the slow test).
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newSnapshotGuid } from "../../src/host/journal.js";
import { imageMarkedInUse } from "../../src/host/snapshot-lifecycle.js";
import { PloopBinaryNotFoundError, PloopCli, PloopCommandError } from "../../src/host/ploop-cli.js";
import { setImageInUse, writeClusterToTop } from "../helpers/delta-writer.js";
import { holdFlock, makeDisk, PLOOP_OFFLINE, realPloop, scratch, script, TOP } from "./fixtures.js";

const NONE = "{00000000-0000-0000-0000-000000000000}";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ dir, cleanup } = await scratch("driver"));
});
afterEach(async () => {
  await cleanup();
});

describe("PloopCli with the real ploop", () => {
  it("snapshot, snapshot-list, snapshot-delete round trip", async () => {
    const dd = await makeDisk(dir);
    const ploop = realPloop();
    expect(await ploop.mountedDevice(dd)).toBeNull();
    const S = newSnapshotGuid();
    expect(S).toMatch(/^\{[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\}$/);

    await ploop.snapshot(dd, S);
    const frozen = await ploop.snapshotList(dd, S);
    expect(frozen).toEqual([{ guid: S, parentGuid: NONE, file: join(dir, "root.hds") }]);
    const live = await ploop.snapshotList(dd, TOP);
    expect(live).toHaveLength(2);
    expect(live[0]).toMatchObject({ guid: TOP, parentGuid: S });
    expect(live[0]!.file).toMatch(new RegExp(`^${dir}/root\\.hds\\.\\{[0-9a-f-]{36}\\}$`));
    expect(live[1]).toEqual(frozen[0]);
    // Upper-case / brace-less GUIDs are accepted and normalised.
    expect(await ploop.snapshotList(dd, S.slice(1, -1).toUpperCase())).toEqual(frozen);

    expect(await ploop.snapshotDelete(dd, S)).toBe("deleted");
    expect(await ploop.snapshotList(dd, TOP)).toEqual([{ guid: TOP, parentGuid: NONE, file: expect.stringMatching(/root\.hds/) as unknown as string }]);
    expect(await readFile(dd, "utf8")).not.toContain(S);
    // NOSNAP (43) is "absent", not an error.
    expect(await ploop.snapshotDelete(dd, S)).toBe("absent");
  });

  it("maps exit codes into one-line PloopCommandError messages", async () => {
    const dd = await makeDisk(dir);
    const ploop = realPloop();
    const S = newSnapshotGuid();
    // Unknown GUID in snapshot-list: 1.15 exits 1.
    const e1 = await ploop.snapshotList(dd, S).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(PloopCommandError);
    expect((e1 as PloopCommandError).ploopExitCode).toBe(1);
    expect((e1 as Error).message).toBe(`ploop snapshot-list on ${dd}: operation failed (or file creation failed) (exit 1): Can't find snapshot by uuid ${S}`);

    // Same GUID twice: PARAM (38).
    await ploop.snapshot(dd, S);
    const e38 = await ploop.snapshot(dd, S).catch((e: unknown) => e);
    expect((e38 as PloopCommandError).ploopExitCode).toBe(38);
    expect((e38 as Error).message).toMatch(new RegExp(`^ploop snapshot on ${dd}: invalid parameter \\(exit 38\\): .*already exist`));
    expect((e38 as PloopCommandError).args).toEqual(["snapshot", "-u", S, dd]);

    // Missing descriptor: DISKDESCR (39).
    const missing = join(dir, "nope", "DiskDescriptor.xml");
    const e39 = await ploop.snapshotDelete(missing, S).catch((e: unknown) => e);
    expect((e39 as Error).message).toMatch(
      new RegExp(`^ploop snapshot-delete on ${missing}: invalid or unreadable DiskDescriptor.xml \\(exit 39\\): .*No such file or directory$`),
    );

    // Image in use: OPEN (4), the state an interrupted offline merge leaves.
    const frozenImage = (await ploop.snapshotList(dd, S))[0]!.file;
    await writeClusterToTop(dd, 1, Buffer.from("x"));
    await setImageInUse(frozenImage, true);
    const e4 = await ploop.snapshotDelete(dd, S).catch((e: unknown) => e);
    expect((e4 as PloopCommandError).ploopExitCode).toBe(4);
    expect((e4 as Error).message).toBe(
      `ploop snapshot-delete on ${dd}: image in use or cannot be opened (exit 4): Error in merge_image (merge.c:443): open_delta: Device or resource busy`,
    );
    expect((e4 as Error).message).not.toContain("\n");
    await ploop.clearInUse(frozenImage);
    expect(await imageMarkedInUse(frozenImage)).toBe(false);
    expect(await ploop.snapshotDelete(dd, S)).toBe("deleted");
  });

  it("treats exit 23 from an unparsable descriptor as a descriptor error and does not retry", async () => {
    const bad = join(dir, "DiskDescriptor.xml");
    await writeFile(bad, "<x>");
    const ploop = new PloopCli({ bin: PLOOP_OFFLINE, lockRetries: 3, lockRetryDelayMs: 5000 });
    const t0 = Date.now();
    const e = await ploop.snapshot(bad, newSnapshotGuid()).catch((x: unknown) => x);
    expect(Date.now() - t0).toBeLessThan(4000);
    expect((e as PloopCommandError).ploopExitCode).toBe(23);
    expect((e as Error).message).toMatch(
      new RegExp(`^ploop snapshot on ${bad}: cannot read DiskDescriptor.xml \\(exit 23\\): Error in ploop_read_dd .*Can't parse`),
    );
  });

  it("refuses to delete the top GUID without running ploop", async () => {
    const ploop = new PloopCli({ bin: "/nonexistent/ploop" });
    await expect(ploop.snapshotDelete("/x/DiskDescriptor.xml", TOP)).rejects.toThrow(
      /^refusing to delete the top snapshot \{5fbaabe3-6958-40ff-92a7-860e329aab41\} of \/x\/DiskDescriptor.xml/,
    );
    await expect(ploop.snapshotDelete("/x/DiskDescriptor.xml", "5FBAABE3-6958-40FF-92A7-860E329AAB41")).rejects.toThrow(/refusing/);
    await expect(ploop.snapshotDelete("/x/DiskDescriptor.xml", "-F")).rejects.toThrow(/"-F" is not a snapshot GUID/);
  });

  it("says clearly when the ploop binary is missing", async () => {
    const ploop = new PloopCli({ bin: "/nonexistent/ploop" });
    const e = await ploop.snapshot("/x/DiskDescriptor.xml", newSnapshotGuid()).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PloopBinaryNotFoundError);
    expect((e as Error).message).toBe('ploop binary "/nonexistent/ploop" not found; install ploop or pass --ploop-bin');
    // The wrapper reports a missing ploop with exit 127.
    const viaWrapper = new PloopCli({ bin: PLOOP_OFFLINE, env: { PLOOP_BIN: "/nonexistent/ploop" } });
    await expect(viaWrapper.mountedDevice("/x/DiskDescriptor.xml")).rejects.toThrow(
      new RegExp(`^ploop binary "${PLOOP_OFFLINE}" not found \\(exit 127: .*\\); install ploop or pass --ploop-bin$`),
    );
  });

  it("retries LOCK (23) a bounded number of times, then reports it (fake ploop)", async () => {
    const calls = join(dir, "calls");
    const lck = join(dir, "DiskDescriptor.xml.lck");
    const fake = await script(
      dir,
      "ploop",
      `echo "$*" >> ${calls}\necho "Error in do_lock (lock.c:132): The ${lck} is locked: Resource temporarily unavailable" >&2\nexit 23`,
    );
    const lines: string[] = [];
    const ploop = new PloopCli({ bin: fake, lockRetries: 2, lockRetryDelayMs: 20, log: (l) => lines.push(l) });
    const dd = join(dir, "DiskDescriptor.xml");
    const S = newSnapshotGuid();
    const e = await ploop.snapshotDelete(dd, S).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PloopCommandError);
    expect((e as PloopCommandError).ploopExitCode).toBe(23);
    expect((e as Error).message).toBe(
      `ploop snapshot-delete on ${dd}: disk is locked by another ploop operation (exit 23): Error in do_lock (lock.c:132): The ${lck} is locked: Resource temporarily unavailable`,
    );
    expect((await readFile(calls, "utf8")).trim().split("\n")).toEqual(Array(3).fill(`snapshot-delete -u ${S} ${dd}`));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/retrying in 0 s \(1\/2\)$/);
  });

  it("succeeds when the lock goes away between retries (fake ploop)", async () => {
    const count = join(dir, "count");
    const fake = await script(
      dir,
      "ploop",
      `n=$(cat ${count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${count}\nif [ $n -lt 2 ]; then echo "Error in do_lock (lock.c:132): The x is locked: Resource temporarily unavailable" >&2; exit 23; fi\nprintf 'device:\\t\\t/dev/ploop12345\\n'`,
    );
    const ploop = new PloopCli({ bin: fake, lockRetries: 2, lockRetryDelayMs: 10 });
    expect(await ploop.mountedDevice(join(dir, "DiskDescriptor.xml"))).toBe("/dev/ploop12345");
  });

  it.skipIf(process.env.PLOOPVAULT_SLOW_TESTS !== "1")(
    "real ploop exits 23 after waiting 60 s for a held DiskDescriptor.xml.lck (slow)",
    async () => {
      const dd = await makeDisk(dir);
      const release = await holdFlock(`${dd}.lck`);
      try {
        const t0 = Date.now();
        const e = await realPloop({ lockRetries: 0 })
          .snapshotDelete(dd, newSnapshotGuid())
          .catch((x: unknown) => x);
        expect(Date.now() - t0).toBeGreaterThan(59_000);
        expect((e as Error).message).toBe(
          `ploop snapshot-delete on ${dd}: disk is locked by another ploop operation (exit 23): Error in do_lock (lock.c:132): The ${dd}.lck is locked: Resource temporarily unavailable`,
        );
      } finally {
        await release();
      }
    },
    90_000,
  );
});
