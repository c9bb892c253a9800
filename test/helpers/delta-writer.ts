/**
 * Simulates the ploop kernel driver writing into the current top image of a disk (the
 * way a running container changes its disk): the cluster is reused if the top already
 * maps it, otherwise appended at the end of the file; data is written and flushed before
 * the BAT entry (the kernel's crash-safe order), then CIF_Empty is cleared.
 *
 * Deliberately written against the raw byte layout (docs/ploop.md 1.2/1.3) rather than with
 * src/ploop/format.ts, so a bug there cannot hide in both the fixture and the reader.
 */
import { open, readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";

const TOP = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";
const IN_USE = 0x746f6e59;

/** Top image path of a descriptor, found with plain regexes (independent of descriptor.ts). */
export async function topImagePath(descriptorPath: string): Promise<string> {
  const xml = await readFile(descriptorPath, "utf8");
  const top = (/<TopGUID>\s*([^<\s]+)\s*<\/TopGUID>/.exec(xml)?.[1] ?? TOP).toLowerCase();
  for (const m of xml.matchAll(/<Image>([\s\S]*?)<\/Image>/g)) {
    const guid = /<GUID>\s*([^<\s]+)\s*<\/GUID>/.exec(m[1]!)?.[1]?.toLowerCase();
    const file = /<File>\s*([^<]+?)\s*<\/File>/.exec(m[1]!)?.[1];
    if (guid === top && file !== undefined) return isAbsolute(file) ? file : resolve(dirname(descriptorPath), file);
  }
  throw new Error(`${descriptorPath}: no image for top ${top}`);
}

export interface WriteClusterOptions {
  /** Leave the image marked in use (m_DiskInUse = "Ynot"), as a running kernel does. */
  inUse?: boolean;
}

/**
 * Write `data` (at most one cluster; a shorter buffer is zero-padded on a new cluster,
 * written at the cluster start on a reused one) into virtual cluster `clusterIndex` of
 * the descriptor's top image. Returns the file cluster used.
 */
export async function writeClusterToTop(descriptorPath: string, clusterIndex: number, data: Uint8Array, options: WriteClusterOptions = {}): Promise<number> {
  const path = await topImagePath(descriptorPath);
  const fh = await open(path, "r+");
  try {
    const h = Buffer.alloc(64);
    await fh.read(h, 0, 64, 0);
    const sig = h.toString("latin1", 0, 16);
    const version = sig === "WithouFreSpacExt" ? 2 : sig === "WithoutFreeSpace" ? 1 : 0;
    if (version === 0) throw new Error(`${path}: not a ploop image`);
    const clusterSectors = h.readUInt32LE(0x1c);
    const clusterBytes = clusterSectors * 512;
    const entries = h.readUInt32LE(0x20);
    if (clusterIndex < 0 || clusterIndex >= entries) throw new Error(`${path}: cluster ${clusterIndex} outside the disk (${entries})`);
    if (data.length > clusterBytes) throw new Error(`data larger than a cluster (${clusterBytes})`);
    const slot = Buffer.alloc(4);
    await fh.read(slot, 0, 4, 64 + 4 * clusterIndex);
    const entry = slot.readUInt32LE(0);
    let fileCluster: number;
    if (entry !== 0) {
      fileCluster = version === 2 ? entry : entry / clusterSectors;
      await fh.write(data, 0, data.length, fileCluster * clusterBytes);
    } else {
      const size = (await fh.stat()).size;
      fileCluster = Math.ceil(size / clusterBytes);
      const full = Buffer.alloc(clusterBytes);
      full.set(data);
      await fh.write(full, 0, clusterBytes, fileCluster * clusterBytes);
    }
    await fh.sync();
    slot.writeUInt32LE(version === 2 ? fileCluster : fileCluster * clusterSectors, 0);
    await fh.write(slot, 0, 4, 64 + 4 * clusterIndex);
    const flags = h.readUInt32LE(0x34) & ~0x1; // has data now: CIF_Empty off
    h.writeUInt32LE(flags, 0x34);
    if (options.inUse) h.writeUInt32LE(IN_USE, 0x2c);
    await fh.write(h, 0x2c, 12, 0x2c);
    await fh.sync();
    return fileCluster;
  } finally {
    await fh.close();
  }
}

/** Set or clear the in-use marker of an image (what a kernel open / clean close does). */
export async function setImageInUse(imagePath: string, inUse: boolean): Promise<void> {
  const fh = await open(imagePath, "r+");
  try {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(inUse ? IN_USE : 0, 0);
    await fh.write(b, 0, 4, 0x2c);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
