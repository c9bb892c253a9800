/** A LogicalDisk in memory for unit tests: clusters present or absent, like a ploop chain's BAT. */
import { randomBytes } from "node:crypto";
import type { BackupSource } from "../../src/backup/pipeline.js";
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

const CLUSTER = 64 << 10;

/** A disk of `clusters` random 64 KiB clusters, every fifth one (shifted by `seed`) a hole. */
export function diskWith(clusters: number, seed: number): MemoryDisk {
  const bytes = Buffer.alloc(clusters * CLUSTER);
  const present: boolean[] = [];
  for (let i = 0; i < clusters; i++) {
    const allocated = (i * 7 + seed) % 5 !== 0;
    present.push(allocated);
    if (allocated) randomBytes(CLUSTER).copy(bytes, i * CLUSTER);
  }
  return new MemoryDisk(bytes, CLUSTER, present);
}

/** A full (not incremental) backup source of container `ct` reading `disk`. */
export function source(disk: MemoryDisk, ct: string): BackupSource {
  return { disk, ct, previous: null, descriptorXml: Buffer.from("<Parallels_disk_image/>"), containerConfig: null, snapshotGuid: null, sourceFormatVersion: 2 };
}
