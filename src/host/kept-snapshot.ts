/**
 * Incremental backups keep the snapshot of the last backup: the container then writes into
 * a delta above it, whose BAT is exactly the list of clusters written since that backup.
 * This file records, per container, which snapshot of ours is kept on purpose (recovery
 * must never merge it) and the fingerprint of the frozen images at and below it, so the
 * next backup can tell whether it may trust "unwritten = unchanged".
 *   <state dir>/kept/<ct>.json   (written atomically)
 */
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { PloopvaultError } from "../errors.js";
import type { LogicalDisk } from "../ploop/disk.js";
import { syncCounted } from "../util/cost-tally.js";

export interface ImageStamp {
  path: string;
  size: number;
  mtimeMs: number;
}

export interface KeptSnapshot {
  version: 1;
  ct: string;
  repositoryId: string;
  descriptorPath: string;
  snapshotGuid: string;
  backupId: string;
  /** Images at and below the kept snapshot after the previous one was merged; null = unknown. */
  frozenImages: ImageStamp[] | null;
  keptAt: string;
}

export class KeptSnapshots {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "kept");
  }

  private path(ct: string): string {
    return join(this.dir, `${ct}.json`);
  }

  async get(ct: string): Promise<KeptSnapshot | null> {
    let text: string;
    try {
      text = await readFile(this.path(ct), "utf8");
    } catch {
      return null;
    }
    try {
      const value = JSON.parse(text) as KeptSnapshot;
      return value.version === 1 && value.ct === ct && typeof value.snapshotGuid === "string" ? value : null;
    } catch {
      return null; // unreadable: treated as "no kept snapshot" (next backup reads everything)
    }
  }

  async put(kept: KeptSnapshot): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 }); // the state dir is owner-only
    const target = this.path(kept.ct);
    const temp = `${target}.tmp-${process.pid}`;
    const fh = await open(temp, "w", 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(kept, null, 2)}\n`);
      await syncCounted(fh, "kept");
    } finally {
      await fh.close();
    }
    await rename(temp, target);
    const dir = await open(this.dir, "r");
    try {
      await syncCounted(dir, "kept");
    } finally {
      await dir.close();
    }
  }

  async remove(ct: string): Promise<void> {
    await rm(this.path(ct), { force: true });
  }

  async list(): Promise<KeptSnapshot[]> {
    const { readdir } = await import("node:fs/promises");
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const out: KeptSnapshot[] = [];
    for (const name of names) {
      if (!name.endsWith(".json")) continue;
      const kept = await this.get(name.slice(0, -5));
      if (kept) out.push(kept);
    }
    return out;
  }
}

/** Stamps of the images at and below `guid` in the disk's chain (base first). */
export async function stampImagesAtAndBelow(disk: LogicalDisk, guid: string): Promise<ImageStamp[] | null> {
  const k = disk.images.findIndex((image) => image.guid === guid.toLowerCase());
  if (k < 0) return null;
  const stamps: ImageStamp[] = [];
  for (const image of disk.images.slice(0, k + 1)) {
    try {
      const s = await stat(image.path);
      stamps.push({ path: image.path, size: s.size, mtimeMs: s.mtimeMs });
    } catch (error) {
      throw new PloopvaultError(`${image.path}: cannot stat frozen image (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
    }
  }
  return stamps;
}

export function sameStamps(a: readonly ImageStamp[], b: readonly ImageStamp[]): boolean {
  return a.length === b.length && a.every((x, i) => x.path === b[i]!.path && x.size === b[i]!.size && x.mtimeMs === b[i]!.mtimeMs);
}
