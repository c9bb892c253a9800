/**
 * Synthetic disks for the memory check: a full 1 GiB disk and a sparse 8 GiB disk with
 * 1 GiB of data spread over it. Content is seeded (AES-256-CTR keystream): half of the
 * clusters incompressible, half text-like (16 symbols, ~2x compressible), so nearly every
 * chunk is new and goes through compression and upload: the worst case for memory.
 * Built once with the project's ploop writer and reused while the stamp matches.
 */
import { createCipheriv, createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createPloopImageWriter, writeDescriptorFile } from "../../src/ploop/writer.js";

const MIB = 1 << 20;
const CLUSTER = MIB;
const ALPHABET = Buffer.from("etaoinshrdlu \n.,");

export interface LargeDisk {
  name: string;
  descriptorPath: string;
  sizeBytes: number;
  dataBytes: number;
}

interface Spec {
  name: string;
  sizeBytes: number;
  /** Every `stride`-th cluster holds data. */
  stride: number;
}

export const LARGE_DISKS: readonly Spec[] = [
  { name: "1g", sizeBytes: 1024 * MIB, stride: 1 },
  { name: "8g", sizeBytes: 8192 * MIB, stride: 8 },
];

function clusterContent(disk: string, cluster: number, into: Buffer): void {
  const key = createHash("sha256").update(`ploopvault bench large disk ${disk}`).digest();
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(cluster, 12);
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const n = cipher.update(Buffer.alloc(CLUSTER)).copy(into);
  if (n !== CLUSTER) throw new Error("short keystream");
  if (cluster % 2 === 1) for (let i = 0; i < CLUSTER; i++) into[i] = ALPHABET[into[i]! & 15]!;
}

export async function ensureLargeDisk(spec: Spec, workDir: string, log: (line: string) => void): Promise<LargeDisk> {
  const dir = join(workDir, spec.name, "root.hdd");
  const descriptorPath = join(dir, "DiskDescriptor.xml");
  const clusters = spec.sizeBytes / CLUSTER;
  const allocated: number[] = [];
  for (let c = 0; c < clusters; c += spec.stride) allocated.push(c);
  const disk: LargeDisk = { name: spec.name, descriptorPath, sizeBytes: spec.sizeBytes, dataBytes: allocated.length * CLUSTER };
  const stampPath = join(workDir, spec.name, "stamp");
  const stamp = `v1 ${spec.sizeBytes} ${spec.stride}\n`;
  try {
    if ((await readFile(stampPath, "utf8")) === stamp) return disk;
  } catch {
    // build it
  }
  const started = performance.now();
  await rm(join(workDir, spec.name), { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const writer = await createPloopImageWriter(join(dir, "root.hds"), { sizeBytes: spec.sizeBytes, clusterBytes: CLUSTER, allocatedClusters: allocated });
  const buf = Buffer.allocUnsafe(CLUSTER);
  try {
    for (const c of allocated) {
      clusterContent(spec.name, c, buf);
      await writer.write(c * CLUSTER, buf);
    }
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writeDescriptorFile(dir, { imageFile: "root.hds", sizeBytes: spec.sizeBytes, clusterBytes: CLUSTER });
  await writeFile(stampPath, stamp);
  log(
    `built ${spec.name} disk (${spec.sizeBytes / MIB} MiB virtual, ${disk.dataBytes / MIB} MiB data) in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  return disk;
}
