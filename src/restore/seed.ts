/**
 * restore --seed: an older copy of the same disk whose bytes can stand in for chunks, so a
 * restore fetches only what changed since (casync's "seed", restic's lack of one).
 *
 * What can be a seed: a raw disk image (a previous `restore --format raw`, `ploop
 * convert`ed or dd'd copy: positional reads, zeros past its end), a ploop image file
 * (root.hdd / root.hds: its BAT, unallocated clusters read as zeros), or a ploop disk (its
 * DiskDescriptor.xml, or the directory holding it: the whole chain as one disk, as backup
 * reads it). The restore target itself is a fine seed.
 *
 * A seed is only a guess: restore takes a range from it only when the range hashes to the
 * chunk id the manifest names (repo.chunkId: SHA-256, HMAC in an encrypted repository), so
 * a stale, shorter, longer or damaged seed, or another container's disk, costs fetches,
 * never a wrong byte.
 */
import { open, stat } from "node:fs/promises";
import { readFully } from "../util/positional-io.js";
import { join } from "node:path";
import { errorLine, PloopvaultError } from "../errors.js";
import { openLogicalDisk } from "../ploop/disk.js";
import { SIG_V1, SIG_V2 } from "../ploop/format.js";
import { openImage } from "../ploop/image.js";
import { DESCRIPTOR_FILE_NAME } from "../ploop/writer.js";

export type SeedKind = "raw" | "ploop-image" | "ploop-disk";

export interface Seed {
  readonly path: string;
  readonly kind: SeedKind;
  /** Logical size (a raw seed: its file size). */
  readonly size: number;
  /** Fill `target` with the seed's bytes at `offset`: zeros in its holes and past its end. */
  read(offset: number, target: Buffer): Promise<void>;
  close(): Promise<void>;
}

async function startsWith(path: string, signatures: readonly string[]): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const head = Buffer.alloc(16);
    const n = await readFully(fh, 0, head);
    return signatures.some((s) => n >= s.length && head.toString("latin1", 0, s.length) === s);
  } finally {
    await fh.close();
  }
}

async function rawSeed(path: string): Promise<Seed> {
  const fh = await open(path, "r");
  const size = (await fh.stat()).size;
  return {
    path,
    kind: "raw",
    size,
    async read(offset, target) {
      const got = offset >= size ? 0 : await readFully(fh, offset, target.length <= size - offset ? target : target.subarray(0, size - offset));
      target.fill(0, got);
    },
    close: () => fh.close(),
  };
}

async function ploopImageSeed(path: string): Promise<Seed> {
  const image = await openImage(path);
  const clusterBytes = image.clusterBytes;
  return {
    path,
    kind: "ploop-image",
    size: image.sizeBytes,
    async read(offset, target) {
      let pos = 0;
      while (pos < target.length) {
        const at = offset + pos;
        const cluster = Math.floor(at / clusterBytes);
        const n = Math.min(clusterBytes - (at - cluster * clusterBytes), target.length - pos);
        const fileOffset = at >= image.sizeBytes ? -1 : image.clusterOffset(cluster);
        if (fileOffset < 0) target.fill(0, pos, pos + n);
        else await image.readAt(fileOffset + (at - cluster * clusterBytes), target.subarray(pos, pos + n));
        pos += n;
      }
    },
    close: () => image.close(),
  };
}

async function ploopDiskSeed(descriptorPath: string): Promise<Seed> {
  const disk = await openLogicalDisk(descriptorPath);
  return {
    path: descriptorPath,
    kind: "ploop-disk",
    size: disk.sizeBytes,
    async read(offset, target) {
      const inside = Math.max(0, Math.min(target.length, disk.sizeBytes - offset));
      if (inside > 0) await disk.read(offset, target.subarray(0, inside));
      target.fill(0, inside);
    },
    close: () => disk.close(),
  };
}

async function openSeedOfKind(path: string): Promise<Seed> {
  const st = await stat(path);
  if (st.isDirectory()) return ploopDiskSeed(join(path, DESCRIPTOR_FILE_NAME));
  if (!st.isFile()) throw new Error("not a file or a ploop directory");
  if (await startsWith(path, [SIG_V1, SIG_V2])) return ploopImageSeed(path);
  if (await startsWith(path, ["<?xml", "<Parallels_disk_image"])) return ploopDiskSeed(path);
  return rawSeed(path);
}

/**
 * Open `path` as a seed of the kind its content says. Errors, opening or reading later,
 * are one line naming the seed (not the restore target).
 */
export async function openSeed(path: string): Promise<Seed> {
  let seed: Seed;
  try {
    seed = await openSeedOfKind(path);
  } catch (error) {
    throw new PloopvaultError(`cannot use seed ${path}: ${errorLine(error)}`, { cause: error });
  }
  return {
    path: seed.path,
    kind: seed.kind,
    size: seed.size,
    async read(offset, target) {
      try {
        await seed.read(offset, target);
      } catch (error) {
        throw new PloopvaultError(`cannot read seed ${path} at ${offset}: ${errorLine(error)}`, { cause: error });
      }
    },
    close: () => seed.close(),
  };
}
