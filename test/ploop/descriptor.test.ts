import { mkdir, readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PloopFormatError } from "../../src/errors.js";
import { chainFor, normaliseGuid, parseDescriptor, renderDescriptor, type DiskDescriptor } from "../../src/ploop/descriptor.js";
import { NONE_GUID, TOP_GUID } from "../../src/ploop/format.js";
import { DESCRIPTOR_FILE_NAME, writeDescriptorFile } from "../../src/ploop/writer.js";
import { ploopInit, ploopOk, ploopSnapshot, ploopSnapshotList } from "../helpers/ploop-tool.js";
import { scratchDir } from "./fixtures.js";

const S1 = "{11111111-1111-1111-1111-111111111111}";
const S2 = "{22222222-2222-2222-2222-222222222222}";
const S3 = "{3333aaaa-3333-3333-3333-333333333333}";

function expectFormatError(fn: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, String(pattern)).toBeInstanceOf(PloopFormatError);
  expect((caught as Error).message).toMatch(pattern);
  expect((caught as Error).message).not.toContain("\n");
}

/** A minimal descriptor around given Storage/Snapshots bodies. */
function xml(storage: string, snapshots: string, params = "<Disk_size>204800</Disk_size>"): string {
  return `<?xml version="1.0"?><Parallels_disk_image><Disk_Parameters>${params}</Disk_Parameters><StorageData>${storage}</StorageData><Snapshots>${snapshots}</Snapshots></Parallels_disk_image>`;
}
const image = (guid: string, file: string, type = "Compressed"): string => `<Image><GUID>${guid}</GUID><Type>${type}</Type><File>${file}</File></Image>`;
const shot = (guid: string, parent: string, extra = ""): string => `<Shot><GUID>${guid}</GUID><ParentGUID>${parent}</ParentGUID>${extra}</Shot>`;
const storage = (body: string, bs = "2048"): string => `<Storage><Start>0</Start><End>204800</End><Blocksize>${bs}</Blocksize>${body}</Storage>`;

describe("parseDescriptor on descriptors written by the real ploop", () => {
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  beforeAll(async () => {
    ({ dir, cleanup } = await scratchDir("dd"));
  });
  afterAll(() => cleanup());

  it("single image (ploop init), and our renderer reproduces it", async () => {
    await mkdir(join(dir, "one"));
    const dd = await ploopInit(join(dir, "one", "root.hds"), { size: "100M" });
    const text = await readFile(dd, "utf8");
    const d = parseDescriptor(text, dd);
    expect(d).toEqual<DiskDescriptor>({
      descriptorPath: dd,
      mode: "expanded",
      diskSizeSectors: 204800,
      blocksizeSectors: 2048,
      images: [{ guid: TOP_GUID, file: "root.hds", type: "Compressed" }],
      shots: [{ guid: TOP_GUID, parentGuid: NONE_GUID, temporary: false }],
      topGuid: TOP_GUID,
    });
    expect(chainFor(d)).toEqual([{ guid: TOP_GUID, file: "root.hds", type: "Compressed" }]);
  });

  it("two snapshots (ploop snapshot): chain order, snapshot views, byte-identical rendering", async () => {
    await mkdir(join(dir, "chain"));
    const dd = await ploopInit(join(dir, "chain", "root.hds"), { size: "100M" });
    await ploopSnapshot(dd, S1);
    await ploopSnapshot(dd, S2.toUpperCase()); // ploop keeps the case it is given
    const text = await readFile(dd, "utf8");
    const d = parseDescriptor(text, dd);
    const chain = chainFor(d);
    expect(chain.map((c) => c.guid)).toEqual([S1, S2, TOP_GUID]);
    expect(chain[0]!.file).toBe("root.hds");
    // Same chain as ploop's own view (top first there).
    const listed = await ploopSnapshotList(dd, TOP_GUID);
    expect(listed.map((l) => l.guid).reverse()).toEqual(chain.map((c) => c.guid));
    expect(listed.map((l) => l.file).reverse()).toEqual(chain.map((c) => join(dir, "chain", c.file)));
    expect(chainFor(d, S2).map((c) => c.guid)).toEqual([S1, S2]);
    expect(chainFor(d, "22222222-2222-2222-2222-222222222222").map((c) => c.guid)).toEqual([S1, S2]);
    expect(chainFor(d, S1).map((c) => c.guid)).toEqual([S1]);
    const rendered = renderDescriptor({ sizeSectors: 204800, clusterSectors: 2048, images: chain.map((c) => ({ guid: c.guid, file: c.file })) });
    expect(rendered).toBe(text.replace(S2.toUpperCase(), S2).replace(S2.toUpperCase(), S2));
  });

  it("a snapshot tree (ploop snapshot-switch): follows ParentGUID, not <Image> order", async () => {
    await mkdir(join(dir, "tree"));
    const dd = await ploopInit(join(dir, "tree", "root.hds"), { size: "100M" });
    await ploopSnapshot(dd, S1);
    await ploopSnapshot(dd, S2);
    await ploopOk(["snapshot-switch", "-u", S1, dd]);
    const d = parseDescriptor(await readFile(dd, "utf8"), dd);
    expect(d.images.map((i) => i.guid)).toEqual([S1, S2, TOP_GUID]);
    expect(chainFor(d).map((c) => c.guid)).toEqual([S1, TOP_GUID]);
    expect(chainFor(d, S2).map((c) => c.guid)).toEqual([S1, S2]);
  });

  it("writeDescriptorFile is atomic and ploop reads what it writes", async () => {
    const d = join(dir, "written");
    await mkdir(d);
    await ploopInit(join(d, "root.hds"), { size: "100M" }); // an image for ploop to look at
    const path = await writeDescriptorFile(d, { imageFile: "root.hds", sizeBytes: 100 << 20, clusterBytes: 1 << 20 });
    expect(path).toBe(join(d, DESCRIPTOR_FILE_NAME));
    expect((await readdir(d)).filter((f) => f.includes(".tmp"))).toEqual([]);
    const listed = await ploopSnapshotList(path);
    expect(listed).toEqual([{ guid: TOP_GUID, parentGuid: NONE_GUID, file: join(d, "root.hds") }]);
    const info = await ploopOk(["info", "-s", path]);
    expect(info).toMatch(/size:\s+204800/);
  });
});

describe("parseDescriptor validation", () => {
  const one = storage(image(TOP_GUID, "root.hds"));
  const oneShot = `<TopGUID>${TOP_GUID}</TopGUID>${shot(TOP_GUID, NONE_GUID)}`;

  it("accepts GUIDs in any case and normalises them", () => {
    const d = parseDescriptor(
      xml(
        storage(image(S3.toUpperCase(), "a") + image(TOP_GUID.toUpperCase(), "b")),
        `<TopGUID>${TOP_GUID.toUpperCase()}</TopGUID>${shot(S3.toUpperCase(), NONE_GUID)}${shot(TOP_GUID, S3.toUpperCase())}`,
      ),
      "DD.xml",
    );
    expect(chainFor(d).map((c) => c.guid)).toEqual([S3, TOP_GUID]);
    expect(normaliseGuid("3333AAAA-3333-3333-3333-333333333333")).toBe(S3);
    expect(normaliseGuid("nope")).toBeNull();
  });

  it("accepts an old single-image descriptor without <Shot>, an empty Disk_Parameters, and no TopGUID", () => {
    const d = parseDescriptor(xml(one, "", ""), "DD.xml");
    expect(d.diskSizeSectors).toBeUndefined();
    expect(d.shots).toEqual([{ guid: TOP_GUID, parentGuid: NONE_GUID, temporary: false }]);
    expect(d.topGuid).toBe(TOP_GUID);
    const d2 = parseDescriptor(xml(storage(image(S1, "a") + image(S2, "b")), shot(S1, NONE_GUID) + shot(S2, S1)), "DD.xml");
    expect(d2.topGuid).toBe(S2);
  });

  it("raw mode: any Plain image makes the base raw, deltas stay ploop1 (as ploop reads it)", () => {
    // ploop 1.15 writes Plain for every image of a raw-mode disk, deltas included.
    const d = parseDescriptor(
      xml(
        storage(image(S1, "root.hds", "Plain") + image(TOP_GUID, "delta", "Plain")),
        `<TopGUID>${TOP_GUID}</TopGUID>${shot(S1, NONE_GUID, "<Temporary/>")}${shot(TOP_GUID, S1)}`,
      ),
      "DD.xml",
    );
    expect(d.mode).toBe("raw");
    expect(d.images.map((i) => i.type)).toEqual(["Plain", "Plain"]);
    expect(d.shots[0]!.temporary).toBe(true);
    expect(chainFor(d).map((c) => c.type)).toEqual(["Plain", "Compressed"]);
    expect(chainFor(d, S1).map((c) => c.type)).toEqual(["Plain"]);
    const odd = parseDescriptor(
      xml(storage(image(S1, "root.hds") + image(TOP_GUID, "delta", "Plain")), `${shot(S1, NONE_GUID)}${shot(TOP_GUID, S1)}`),
      "DD.xml",
    );
    expect(chainFor(odd).map((c) => c.type)).toEqual(["Plain", "Compressed"]);
  });

  it("malformed XML: one line naming the file", () => {
    expectFormatError(
      () => parseDescriptor("<Parallels_disk_image><Disk_Parameters></Parallels_disk_image>", "/vz/101/root.hdd/DiskDescriptor.xml"),
      /^\/vz\/101\/root\.hdd\/DiskDescriptor\.xml: malformed XML: .*line 1/,
    );
    expectFormatError(() => parseDescriptor("", "DiskDescriptor.xml"), /^DiskDescriptor\.xml: malformed XML/);
    expectFormatError(() => parseDescriptor("garbage\nmore", "DiskDescriptor.xml"), /^DiskDescriptor\.xml: malformed XML/);
    expectFormatError(() => parseDescriptor("<a/><b/>", "DiskDescriptor.xml"), /^DiskDescriptor\.xml: malformed XML: expected one root element, found 2/);
  });

  it("rejects structural problems", () => {
    const cases: [string, RegExp][] = [
      [`<?xml version="1.0"?><R><StorageData>${one}</StorageData><Snapshots>${oneShot}</Snapshots></R>`, /<R> has no <Disk_Parameters>/],
      [`<R><Disk_Parameters/><StorageData>${one}</StorageData></R>`, /<R> has no <Snapshots>/],
      [xml(one + one, oneShot), /exactly one <Storage>.*found 2/],
      [xml("", oneShot), /exactly one <Storage>.*found 0/],
      [xml(`<Storage>${image(TOP_GUID, "a")}</Storage>`, oneShot), /<Storage> has no <Blocksize>/],
      [xml(storage(image(TOP_GUID, "a"), "1000"), oneShot), /<Blocksize> 1000 is not a valid cluster size/],
      [xml(storage(image(TOP_GUID, "a"), "x"), oneShot), /<Blocksize> in <Storage> is "x"/],
      [xml(storage(""), oneShot), /<Storage> has no <Image>/],
      [xml(storage(image("{1234}", "a")), oneShot), /<Image\/GUID> "\{1234\}" is not a GUID/],
      [xml(storage(image("11111111-1111-1111-1111-111111111111", "a")), oneShot), /is not a GUID/],
      [xml(storage(`<Image><GUID>${TOP_GUID}</GUID></Image>`), oneShot), /has no <File>/],
      [xml(storage(image(TOP_GUID, "a") + image(TOP_GUID, "b")), oneShot + shot(TOP_GUID, NONE_GUID)), /listed twice/],
      [xml(storage(image(S1, "a") + image(TOP_GUID, "b")), oneShot), /2 <Image> but 1 <Shot>/],
      [xml(one, `<TopGUID>${S1}</TopGUID>${shot(TOP_GUID, NONE_GUID)}`), /<TopGUID> \{1111.*has no <Image>/],
      [
        xml(storage(image(S1, "a") + image(TOP_GUID, "b")), `<TopGUID>${TOP_GUID}</TopGUID>${shot(S1, NONE_GUID)}${shot(TOP_GUID, S2)}`),
        /has parent \{2222.*which has no <Image>/,
      ],
      [xml(storage(image(S1, "a") + image(TOP_GUID, "b")), `<TopGUID>${TOP_GUID}</TopGUID>${shot(S1, TOP_GUID)}${shot(TOP_GUID, S1)}`), /loops at/],
      [xml(one, `<TopGUID>${TOP_GUID}</TopGUID>${shot(TOP_GUID, NONE_GUID, "<Temporary/>")}`), /top image .* is marked temporary/],
      [xml(one, oneShot, "<Disk_size>1</Disk_size><Disk_size>2</Disk_size>"), /<Disk_size> appears more than once/],
    ];
    for (const [text, re] of cases)
      expectFormatError(() => parseDescriptor(text, "dd/DiskDescriptor.xml"), new RegExp(`^dd/DiskDescriptor\\.xml: .*${re.source}`));
  });

  it("chainFor: unknown snapshot, and round trip of a rendered chain", () => {
    const d = parseDescriptor(
      renderDescriptor({ sizeSectors: 204800, clusterSectors: 512, images: [{ guid: S1, file: "root.hds" }, { guid: S2, file: "d1" }, { file: "d2" }] }),
      "x.xml",
    );
    expect(d.blocksizeSectors).toBe(512);
    expect(chainFor(d)).toEqual([
      { guid: S1, file: "root.hds", type: "Compressed" },
      { guid: S2, file: "d1", type: "Compressed" },
      { guid: TOP_GUID, file: "d2", type: "Compressed" },
    ]);
    expectFormatError(() => chainFor(d, S3), /^x\.xml: snapshot \{3333aaaa.* is not in the descriptor/);
    expect(() => renderDescriptor({ sizeSectors: 204800, clusterSectors: 512, images: [{ file: "a" }, { file: "b" }] })).toThrow(RangeError);
  });

  it("escapes file names when rendering", () => {
    const d = parseDescriptor(renderDescriptor({ sizeSectors: 2048, clusterSectors: 2048, images: [{ file: "a&b<c>.hds" }] }), "x.xml");
    expect(d.images[0]!.file).toBe("a&b<c>.hds");
  });
});
