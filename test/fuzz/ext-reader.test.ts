/**
 * Fuzzing the filesystem reader (src/fs): real mkfs images (ext4 with and without
 * metadata_csum, ext3 block maps, inline data; GPT and MBR tables) with bytes damaged where
 * the reader actually looks (every byte range a clean walk reads is recorded, mutations
 * land there), then opened, walked (ls -R), read (file contents, symlinks, xattrs) and
 * checked (check --fs) in full: each run either works or fails with a one-line
 * PloopvaultError, never a TypeError/RangeError, a crash or a hang. Partition tables and
 * the path escaping get their own properties.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkRange, type BlockDevice } from "../../src/fs/block-device.js";
import { ExtFilesystem } from "../../src/fs/ext/filesystem.js";
import { checkFilesystem } from "../../src/fs/fsck.js";
import { findExtFilesystem } from "../../src/fs/partitions.js";
import { displayName, parsePath, walkTree } from "../../src/fs/walk.js";
import { dataRuns } from "../../src/files/content.js";
import { attemptAsync, runs } from "./oracle.js";

/** An image in memory that records which byte ranges were read. */
class RecordingDevice implements BlockDevice {
  readonly ranges: [number, number][] = [];
  constructor(readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length, "image");
    this.ranges.push([offset, length]);
    return Promise.resolve(Buffer.from(this.data.subarray(offset, offset + length)));
  }
}

const MAX_READ_PER_FILE = 1 << 20;

/** Everything a user can do with the filesystem, in full. */
async function exercise(device: BlockDevice): Promise<number> {
  const found = await findExtFilesystem(device, "fuzzed disk");
  const fs = await ExtFilesystem.open(found.device, found.label);
  let entries = 0;
  const root = await fs.root();
  for await (const item of walkTree(fs, { components: [], inode: root }, { recursive: true, includeStart: true })) {
    entries++;
    await fs.xattrs(item.inode);
    if (item.inode.type === "symlink") await fs.readlink(item.inode);
    if (item.inode.type === "file") {
      await dataRuns(fs, item.inode);
      await fs.read(item.inode, 0, Math.min(item.inode.size, MAX_READ_PER_FILE));
    }
  }
  await checkFilesystem(fs);
  return entries;
}

interface Base {
  name: string;
  image: Buffer;
  /** Byte ranges a clean exercise() reads that are not file content: where damage matters. */
  metadata: [number, number][];
}

const bases: Base[] = [];
let work: string;

async function buildImage(name: string, mkfs: string[], table: "none" | "gpt" | "mbr"): Promise<Buffer> {
  const tree = join(work, `${name}-tree`);
  await mkdir(join(tree, "d", "e"), { recursive: true });
  for (let i = 0; i < 60; i++) await writeFile(join(tree, "d", `file-with-a-longer-name-${i}`), `${i}\n`.repeat(i));
  await writeFile(join(tree, "d", "e", "big"), Buffer.alloc(300 * 1024, 7)); // past the double indirect block at 1 KiB
  await writeFile(join(tree, "tiny"), "tiny\n");
  await execa("ln", ["-s", "d/e/big", join(tree, "fast")]);
  await execa("ln", ["-s", `d/${"x".repeat(90)}`, join(tree, "slow")]);
  await execa("ln", [join(tree, "tiny"), join(tree, "d", "hard")]);
  const raw = join(work, `${name}.raw`);
  const sizeMiB = 6;
  await execa("truncate", ["-s", `${sizeMiB}M`, raw]);
  let offset = 0;
  if (table === "gpt") await execa("sgdisk", ["-n", "1:2048:+4M", raw]);
  if (table === "mbr") await execa("sfdisk", ["-q", raw], { input: "label: dos\nstart=2048, size=8192, type=83\n" });
  if (table !== "none") offset = 1 << 20;
  const env = { E2FSPROGS_FAKE_TIME: "1700000000" };
  await execa(mkfs[0]!, ["-q", "-F", "-b", "1024", ...mkfs.slice(1), "-E", `offset=${offset}`, "-d", tree, raw, "4096"], { env });
  const spec = offset === 0 ? raw : `${raw}?offset=${offset}`;
  await execa("debugfs", ["-w", "-f", "-", spec], { input: 'ea_set /tiny user.a "value a"\nea_set -f /dev/null /d/e user.empty\n', env });
  await execa("e2fsck", ["-fyD", spec], { env, reject: false });
  return readFile(raw);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-fuzz-ext-"));
  const images: [string, string[], "none" | "gpt" | "mbr"][] = [
    ["ext4-csum-gpt", ["mkfs.ext4", "-O", "metadata_csum,64bit"], "gpt"],
    ["ext4-nocsum", ["mkfs.ext4", "-O", "^metadata_csum,^64bit,uninit_bg"], "none"],
    ["ext3-mbr", ["mkfs.ext3", "-I", "128"], "mbr"],
    ["ext4-inline", ["mkfs.ext4", "-O", "inline_data,^metadata_csum"], "none"],
  ];
  for (const [name, mkfs, table] of images) {
    const image = await buildImage(name, mkfs, table);
    const recorder = new RecordingDevice(image);
    // what a clean walk reads, minus file contents (those are read last, past the metadata)
    const found = await findExtFilesystem(recorder, name);
    const fs = await ExtFilesystem.open(found.device, found.label);
    for await (const item of walkTree(fs, { components: [], inode: await fs.root() }, { recursive: true, includeStart: true })) {
      await fs.xattrs(item.inode);
      if (item.inode.type === "symlink") await fs.readlink(item.inode);
      if (item.inode.type === "file") await dataRuns(fs, item.inode);
    }
    bases.push({ name, image, metadata: recorder.ranges });
    expect(await exercise(new RecordingDevice(image)), name).toBeGreaterThan(60);
  }
}, 120_000);

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

const INTERESTING = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff];

/** Damage within what the reader reads: flipped bytes and interesting little-endian values. */
function damageArb(base: Base): fc.Arbitrary<{ at: number; bytes: Buffer }[]> {
  const edit = fc
    .tuple(
      fc.nat({ max: base.metadata.length - 1 }),
      fc.nat(),
      fc.oneof(
        fc.integer({ min: 1, max: 255 }).map((x) => ({ flip: x })),
        fc.tuple(fc.constantFrom(1, 2, 4), fc.constantFrom(...INTERESTING)).map(([width, value]) => ({ width, value })),
      ),
    )
    .map(([range, pos, change]) => {
      const [start, length] = base.metadata[range]!;
      const at = start + (pos % length);
      if ("flip" in change) return { at, bytes: Buffer.from([base.image[at]! ^ change.flip]) };
      const b = Buffer.alloc(4);
      b.writeUInt32LE(change.value >>> 0);
      return { at, bytes: b.subarray(0, change.width) };
    });
  return fc.array(edit, { minLength: 1, maxLength: 4 });
}

describe("ext reader on damaged images", () => {
  for (const name of ["ext4-csum-gpt", "ext4-nocsum", "ext3-mbr", "ext4-inline"]) {
    it(`${name}: every damaged image reads or fails with one clear line`, async () => {
      const base = bases.find((b) => b.name === name)!;
      let failures = 0;
      await fc.assert(
        fc.asyncProperty(damageArb(base), async (edits) => {
          await new Promise((resolve) => setImmediate(resolve)); // let vitest's RPC run between runs
          const image = Buffer.from(base.image);
          for (const e of edits) e.bytes.copy(image, e.at, 0, Math.min(e.bytes.length, image.length - e.at));
          const outcome = await attemptAsync(() => exercise(new RecordingDevice(image)));
          if (!outcome.ok) {
            failures++;
            if (process.env.PLOOPVAULT_FUZZ_SHOW === "1") process.stderr.write(`${outcome.error.message.replace(/\d+/g, "N")}\n`);
          }
        }),
        { numRuns: runs(150) },
      );
      // the damage lands where it matters: most runs must fail (with a clear line)
      expect(failures).toBeGreaterThan(0);
    }, 300_000);
  }

  it("random bytes as a disk: no filesystem found, or a clear line", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 8192 }), fc.boolean(), async (bytes, withMagic) => {
        await new Promise((resolve) => setImmediate(resolve));
        const image = Buffer.alloc(Math.max(4096, bytes.length));
        Buffer.from(bytes).copy(image);
        if (withMagic) image.writeUInt16LE(0xef53, 1024 + 0x38);
        await attemptAsync(() => exercise(new RecordingDevice(image)));
      }),
      { numRuns: runs(300) },
    );
  });
});

describe("partition tables", () => {
  it("damaged GPT and MBR tables are read or refused with one clear line", async () => {
    const gpt = bases.find((b) => b.name === "ext4-csum-gpt")!.image.subarray(0, 1 << 20);
    const mbr = bases.find((b) => b.name === "ext3-mbr")!.image.subarray(0, 1 << 20);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(gpt, mbr),
        fc.array(fc.tuple(fc.nat({ max: 2 * 512 + 128 * 4 - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        async (base, edits) => {
          await new Promise((resolve) => setImmediate(resolve));
          const image = Buffer.alloc(8 << 20);
          base.copy(image);
          for (const [at, v] of edits) image[at < 1024 ? at : 1024 + (at - 1024)] = v;
          await attemptAsync(() => findExtFilesystem(new RecordingDevice(image), "fuzzed disk"));
        },
      ),
      { numRuns: runs(400) },
    );
  });
});

describe("paths shown to people", () => {
  it("parsePath(displayName(name)) gives back the name's bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 40 }), (bytes) => {
        const name = Buffer.from(bytes.map((b) => (b === 0x2f || b === 0 ? 0x41 : b)));
        const shown = displayName(name);
        expect(shown).not.toMatch(/[\x00-\x1f\x7f]/);
        expect(parsePath(shown).equals(name)).toBe(true);
      }),
      { numRuns: runs(2000) },
    );
  });
});
