/**
 * Small ploop container disks (48 MiB, 1 MiB clusters) made with the real ploop tool and
 * filled with seeded pseudo-random clusters, for tests that need several backups fast;
 * the real ploop's flattening (its SHA-256) is the oracle for restores.
 */
import { createCipheriv, createHash } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { sha256File } from "../ploop/fixtures.js";
import { writeClusterToTop } from "./delta-writer.js";
import { ploopFlatten, ploopInit } from "./ploop-tool.js";

const MIB = 1 << 20;

/** 1 MiB of seeded pseudo-random (incompressible) data. */
export function seededCluster(seed: number): Buffer {
  const key = createHash("sha256").update(`small-disk-${seed}`).digest();
  const c = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(MIB)), c.final()]);
}

/**
 * Four disks that share data the way containers of one host do: 102 starts like 101, 103
 * holds a run of 101's data at other offsets, 104 is 101 "the next day" (two clusters
 * rewritten). Cluster index -> seed.
 */
export const SMALL_LAYOUT: Record<string, [number, number][]> = {
  "101": Array.from({ length: 12 }, (_, i): [number, number] => [i, 100 + i]),
  "102": [...Array.from({ length: 6 }, (_, i): [number, number] => [i, 100 + i]), ...Array.from({ length: 6 }, (_, i): [number, number] => [20 + i, 200 + i])],
  "103": Array.from({ length: 8 }, (_, i): [number, number] => [30 + i, 102 + i]),
  "104": Array.from({ length: 12 }, (_, i): [number, number] => [i, i === 3 || i === 8 ? 400 + i : 100 + i]),
};

export interface SmallPloopDisk {
  descriptor: string;
  /** SHA-256 of the disk as the real ploop flattens it. */
  sha: string;
}

/** Build the disks of `layout` under DIR/private/<ct>/root.hdd. */
export async function buildSmallDisks(dir: string, layout: Record<string, [number, number][]> = SMALL_LAYOUT): Promise<Map<string, SmallPloopDisk>> {
  const disks = new Map<string, SmallPloopDisk>();
  for (const [ct, clusters] of Object.entries(layout)) {
    const hdd = join(dir, "private", ct, "root.hdd");
    await mkdir(hdd, { recursive: true });
    const descriptor = await ploopInit(join(hdd, "root.hds"), { size: "48M", version: 2 });
    for (const [index, seed] of clusters) await writeClusterToTop(descriptor, index, seededCluster(seed));
    const flat = join(dir, `${ct}.flat`);
    await ploopFlatten(descriptor, flat);
    disks.set(ct, { descriptor, sha: await sha256File(flat) });
    await rm(flat);
  }
  return disks;
}
