/**
 * Partition tables made by the real tools: an MBR with an extended partition and logical
 * partitions (sfdisk), a GPT (sgdisk), and the choice of the ext filesystem among several.
 * Plus the checksums' published check values.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32, crc32c } from "../../src/fs/checksums.js";
import { ExtFilesystem } from "../../src/fs/ext/filesystem.js";
import { findExtFilesystem, readPartitionTable } from "../../src/fs/partitions.js";
import { BufferDevice } from "../helpers/raw-device.js";

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-partitions-"));
});

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

async function image(name: string, sizeMiB: number): Promise<string> {
  const raw = join(work, name);
  await execa("truncate", ["-s", `${sizeMiB}M`, raw]);
  return raw;
}

async function mkfsAt(raw: string, offsetBytes: number, sizeKiB: number, label: string): Promise<void> {
  await execa("mkfs.ext4", ["-q", "-F", "-b", "1024", "-L", label, "-E", `offset=${offsetBytes}`, raw, String(sizeKiB)]);
}

describe("partition tables", () => {
  it("MBR with logical partitions: numbered as Linux does, where sfdisk put them", async () => {
    const raw = await image("mbr.raw", 64);
    await execa("sfdisk", ["-q", raw], {
      input:
        "label: dos\nstart=2048, size=16384, type=83\nstart=20480, size=100000, type=5\nstart=22528, size=30000, type=83\nstart=55296, size=40000, type=83\n",
    });
    const dumped = JSON.parse((await execa("sfdisk", ["--json", raw])).stdout) as {
      partitiontable: { partitions: { node: string; start: number; size: number; type: string }[] };
    };
    const table = await readPartitionTable(new BufferDevice(await readFile(raw)), "disk");
    expect(table.kind).toBe("mbr");
    const expected = dumped.partitiontable.partitions
      .filter((p) => p.type !== "5")
      .map((p) => ({ number: Number(/(\d+)$/.exec(p.node)![1]), start: p.start * 512, size: p.size * 512 }));
    expect(table.partitions.map((p) => ({ number: p.number, start: p.start, size: p.size }))).toEqual(expected);
    expect(expected.map((p) => p.number)).toEqual([1, 5, 6]);

    // one ext filesystem, in logical partition 6: found without asking
    await mkfsAt(raw, 55296 * 512, 20000, "in-six");
    let found = await findExtFilesystem(new BufferDevice(await readFile(raw)), "disk");
    expect(found.partition?.number).toBe(6);
    expect(found.label).toBe("partition 6 of disk");
    expect((await ExtFilesystem.open(found.device, found.label)).sb.volumeName).toBe("in-six");

    // two: the operator chooses
    await mkfsAt(raw, 2048 * 512, 8192, "in-one");
    const both = new BufferDevice(await readFile(raw));
    await expect(findExtFilesystem(both, "disk")).rejects.toThrow("disk has ext filesystems in partitions 1, 6: choose one with --partition N");
    found = await findExtFilesystem(both, "disk", 1);
    expect((await ExtFilesystem.open(found.device, found.label)).sb.volumeName).toBe("in-one");
    await expect(findExtFilesystem(both, "disk", 3)).rejects.toThrow("disk has no partition 3 (MBR partitions: 1 (mbr 0x83), 5 (mbr 0x83), 6 (mbr 0x83))");
  });

  it("GPT: the partition ploop init makes, also when the primary header is damaged", async () => {
    const raw = await image("gpt.raw", 16);
    await execa("sgdisk", ["-n", "1:2048:+8M", "-t", "1:8300", raw]);
    await mkfsAt(raw, 2048 * 512, 8192, "gpt-fs");
    const data = await readFile(raw);
    const found = await findExtFilesystem(new BufferDevice(data), "disk");
    expect(found.partition).toEqual({ number: 1, start: 1 << 20, size: 8 << 20, type: "gpt 0FC63DAF-8483-4772-8E79-3D69D8477DE4" });
    data[512 + 20] = data[512 + 20]! ^ 0xff; // the primary header's CRC no longer matches: the backup one is used
    const again = await findExtFilesystem(new BufferDevice(data), "disk");
    expect(again.partition?.start).toBe(1 << 20);
  });

  it("a disk without a partition table is one filesystem", async () => {
    const raw = await image("whole.raw", 8);
    await mkfsAt(raw, 0, 8192, "whole");
    const found = await findExtFilesystem(new BufferDevice(await readFile(raw)), "disk");
    expect(found.partition).toBeNull();
    expect(found.label).toBe("disk");
  });
});

describe("checksums", () => {
  it("match the published check values", () => {
    const check = Buffer.from("123456789");
    expect(crc32c(check)).toBe(0xe3069283);
    expect(crc32(check)).toBe(0xcbf43926);
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  });
});
