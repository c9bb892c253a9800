/** A LogicalDisk in memory for unit tests: clusters present or absent, like a ploop chain's BAT. */
import type { DataRun, LogicalDisk } from "../../src/ploop/disk.js";

export class MemoryDisk implements LogicalDisk {
  readonly descriptorPath = "/memory/DiskDescriptor.xml";
  readonly imagePaths = ["/memory/root.hds"];
  readonly images = [];
  readonly topGuid = "{00000000-0000-0000-0000-000000000000}";
  readonly inUseImages = [];
  readonly formatVersion = 2 as const;
  bytesRead = 0;

  /** `present[i]`: cluster i is allocated; absent clusters read as zeros. */
  constructor(
    readonly bytes: Buffer,
    readonly clusterBytes: number,
    readonly present: boolean[],
  ) {
    if (bytes.length !== present.length * clusterBytes) throw new Error("MemoryDisk: bytes and cluster map disagree");
  }

  get sizeBytes(): number {
    return this.bytes.length;
  }

  get allocatedClusters(): number {
    return this.present.filter(Boolean).length;
  }

  allocatedRuns(): DataRun[] {
    const runs: DataRun[] = [];
    for (let i = 0; i < this.present.length; i++) {
      if (!this.present[i]) continue;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.offset + last.length === i * this.clusterBytes) last.length += this.clusterBytes;
      else runs.push({ offset: i * this.clusterBytes, length: this.clusterBytes });
    }
    return runs;
  }

  clustersWrittenAbove(): Uint8Array | null {
    return null;
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    for (let done = 0; done < target.length; ) {
      const at = offset + done;
      const cluster = Math.floor(at / this.clusterBytes);
      const n = Math.min(target.length - done, (cluster + 1) * this.clusterBytes - at);
      if (this.present[cluster]) {
        target.set(this.bytes.subarray(at, at + n), done);
        this.bytesRead += n;
      } else {
        target.fill(0, done, done + n);
      }
      done += n;
    }
  }

  async close(): Promise<void> {}
}
