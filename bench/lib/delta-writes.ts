/**
 * A running container's writes, as the ploop kernel driver makes them: into the top
 * delta of the chain, cluster by cluster (copy-on-write: the first write to a cluster
 * above a snapshot stores the whole cluster in the top), data flushed before the BAT
 * entry. Written against the raw byte layout (docs/ploop.md 1.2/1.3), not with
 * src/ploop/format.ts, so a bug there cannot hide in both the bench and the reader.
 */
import { open, readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";

/** The file of the descriptor's TopGUID image, found with plain regexes. */
export async function topImagePath(descriptorPath: string): Promise<string> {
  const xml = await readFile(descriptorPath, "utf8");
  const top = /<TopGUID>\s*([^<\s]+)\s*<\/TopGUID>/.exec(xml)?.[1]?.toLowerCase();
  if (top === undefined) throw new Error(`${descriptorPath}: no <TopGUID>`);
  for (const m of xml.matchAll(/<Image>([\s\S]*?)<\/Image>/g)) {
    const guid = /<GUID>\s*([^<\s]+)\s*<\/GUID>/.exec(m[1]!)?.[1]?.toLowerCase();
    const file = /<File>\s*([^<]+?)\s*<\/File>/.exec(m[1]!)?.[1];
    if (guid === top && file !== undefined) return isAbsolute(file) ? file : resolve(dirname(descriptorPath), file);
  }
  throw new Error(`${descriptorPath}: no image for top ${top}`);
}

/** Writes whole clusters into one ploop image (the top delta); close() when done. */
export class TopDeltaWriter {
  private constructor(
    private readonly fh: Awaited<ReturnType<typeof open>>,
    private readonly path: string,
    private readonly version: 1 | 2,
    readonly clusterBytes: number,
    private readonly entries: number,
    private fileClusters: number,
  ) {}

  static async open(imagePath: string): Promise<TopDeltaWriter> {
    const fh = await open(imagePath, "r+");
    const h = Buffer.alloc(64);
    await fh.read(h, 0, 64, 0);
    const sig = h.toString("latin1", 0, 16);
    const version = sig === "WithouFreSpacExt" ? 2 : sig === "WithoutFreeSpace" ? 1 : 0;
    if (version === 0) {
      await fh.close();
      throw new Error(`${imagePath}: not a ploop image`);
    }
    const clusterBytes = h.readUInt32LE(0x1c) * 512;
    const entries = h.readUInt32LE(0x20);
    const size = (await fh.stat()).size;
    return new TopDeltaWriter(fh, imagePath, version, clusterBytes, entries, Math.ceil(size / clusterBytes));
  }

  /** Write one whole virtual cluster: reuse the top's copy if it has one, else append. */
  async writeCluster(clusterIndex: number, data: Uint8Array): Promise<void> {
    if (data.length !== this.clusterBytes) throw new Error(`${this.path}: a cluster is ${this.clusterBytes} bytes, got ${data.length}`);
    if (clusterIndex < 0 || clusterIndex >= this.entries) throw new Error(`${this.path}: cluster ${clusterIndex} outside the disk (${this.entries})`);
    const clusterSectors = this.clusterBytes / 512;
    const slot = Buffer.alloc(4);
    await this.fh.read(slot, 0, 4, 64 + 4 * clusterIndex);
    const entry = slot.readUInt32LE(0);
    if (entry !== 0) {
      const fileCluster = this.version === 2 ? entry : entry / clusterSectors;
      await this.fh.write(data, 0, data.length, fileCluster * this.clusterBytes);
      return;
    }
    const fileCluster = this.fileClusters++;
    await this.fh.write(data, 0, data.length, fileCluster * this.clusterBytes);
    await this.fh.datasync();
    slot.writeUInt32LE(this.version === 2 ? fileCluster : fileCluster * clusterSectors, 0);
    await this.fh.write(slot, 0, 4, 64 + 4 * clusterIndex);
  }

  /** Clear CIF_Empty (the image has data now), flush, close. */
  async close(): Promise<void> {
    try {
      const flags = Buffer.alloc(4);
      await this.fh.read(flags, 0, 4, 0x34);
      flags.writeUInt32LE(flags.readUInt32LE(0) & ~0x1, 0);
      await this.fh.write(flags, 0, 4, 0x34);
      await this.fh.sync();
    } finally {
      await this.fh.close();
    }
  }
}
