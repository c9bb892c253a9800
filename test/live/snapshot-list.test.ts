/**
 * The frozen chain is read from DiskDescriptor.xml (readSnapshotList) instead of running
 * `ploop snapshot-list` three times per container. These tests hold it to the real ploop
 * 1.15 (offline): for every GUID of the descriptor, in every state a backup meets (fresh
 * disk, after our snapshot, with users' snapshots above and below ours, after each kind
 * of snapshot-delete, a symlinked private area, an absolute <File>), our list must equal
 * what `ploop snapshot-list -H -o uuid,parent_uuid,fname -u GUID` prints (parsed by the
 * test's own helper, not by PloopCli).
 */
import { randomUUID } from "node:crypto";
import { readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SnapshotJournal } from "../../src/host/journal.js";
import { readSnapshotList, withFrozenDisk } from "../../src/host/snapshot-lifecycle.js";
import { parseDescriptor } from "../../src/ploop/descriptor.js";
import { ploopSnapshot, ploopSnapshotList, runPloop } from "../helpers/ploop-tool.js";
import { fillTop, makeDisk, realPloop, scratch, TOP } from "./fixtures.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ dir, cleanup } = await scratch("snapshot-list"));
});
afterEach(async () => {
  await cleanup();
});

/** Every GUID of the descriptor: our list and ploop's agree; returns how many were compared. */
async function expectSameAsPloop(dd: string): Promise<number> {
  const descriptor = parseDescriptor(await readFile(dd, "utf8"), dd);
  for (const image of descriptor.images) {
    const ours = await readSnapshotList(dd, image.guid);
    const ploops = await ploopSnapshotList(dd, image.guid);
    expect(ours, `chain of ${image.guid} in ${dd}`).toEqual(ploops);
  }
  return descriptor.images.length;
}

const userGuid = (): string => `{${randomUUID()}}`;

describe("readSnapshotList = ploop snapshot-list", () => {
  it("through snapshots (ours and users') and snapshot-deletes of every position", async () => {
    const dd = await makeDisk(join(dir, "root.hdd"));
    const journal = new SnapshotJournal(join(dir, "state"));
    const ploop = realPloop();
    expect(await expectSameAsPloop(dd)).toBe(1);

    const userBelow = userGuid();
    await ploopSnapshot(dd, userBelow);
    await fillTop(dd, 0, 2, "a");
    const ours1 = journal.newSnapshotGuid();
    await ploop.snapshot(dd, ours1);
    await fillTop(dd, 1, 2, "b");
    const userAbove = userGuid();
    await ploopSnapshot(dd, userAbove);
    const ours2 = journal.newSnapshotGuid();
    await ploop.snapshot(dd, ours2);
    expect(await expectSameAsPloop(dd)).toBe(5);
    expect((await readSnapshotList(dd, TOP)).map((e) => e.guid)).toEqual([TOP, ours2, userAbove, ours1, userBelow]);

    // a middle snapshot merged (the kept delta's usual fate), then the one just below the top
    expect(await ploop.snapshotDelete(dd, ours1)).toBe("deleted");
    expect(await expectSameAsPloop(dd)).toBe(4);
    expect(await ploop.snapshotDelete(dd, ours2)).toBe("deleted");
    expect(await expectSameAsPloop(dd)).toBe(3);
    // the base's snapshot: its child is merged into the base file
    expect(await ploop.snapshotDelete(dd, userBelow)).toBe("deleted");
    expect(await expectSameAsPloop(dd)).toBe(2);
  });

  it("a GUID that is not in the descriptor fails, as in ploop", async () => {
    const dd = await makeDisk(join(dir, "root.hdd"));
    const missing = userGuid();
    await expect(readSnapshotList(dd, missing)).rejects.toThrow(/not in the descriptor/);
    expect((await runPloop(["snapshot-list", "-H", "-u", missing, dd])).exitCode).not.toBe(0);
    await expect(readSnapshotList(join(dir, "nothing", "DiskDescriptor.xml"), TOP)).rejects.toThrow(/cannot read .*DiskDescriptor\.xml \(ENOENT\)/);
  });

  it("paths through a symlinked private area and an absolute <File>, as ploop spells them", async () => {
    const real = join(dir, "real", "root.hdd");
    const dd = await makeDisk(real);
    await ploopSnapshot(dd, userGuid());
    await symlink(join(dir, "real"), join(dir, "link"));
    const viaLink = join(dir, "link", "root.hdd", "DiskDescriptor.xml");
    expect(await expectSameAsPloop(viaLink)).toBe(2);
    expect((await readSnapshotList(viaLink, TOP))[0]!.file.startsWith(`${real}/`)).toBe(true);

    const xml = await readFile(dd, "utf8");
    await writeFile(dd, xml.replace("<File>root.hds</File>", `<File>${join(dir, "link", "root.hdd", "root.hds")}</File>`));
    expect(await readFile(dd, "utf8")).toContain(`<File>${dir}/link/`);
    expect(await expectSameAsPloop(viaLink)).toBe(2);
  });

  it("withFrozenDisk hands the reader the chain ploop lists for the snapshot", async () => {
    const dd = await makeDisk(join(dir, "root.hdd"));
    await ploopSnapshot(dd, userGuid());
    await fillTop(dd, 0, 1, "c");
    const journal = new SnapshotJournal(join(dir, "state"));
    const chain = await withFrozenDisk({ ct: "101", descriptorPath: dd, ploop: realPloop(), journal, log: () => undefined }, async (frozen) => {
      expect(frozen.chain).toEqual(await ploopSnapshotList(dd, frozen.snapshotGuid));
      await frozen.verifyUnchanged();
      return frozen.chain;
    });
    expect(chain).toHaveLength(2);
  });
});
