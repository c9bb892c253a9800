/**
 * Incremental backups keep the snapshot of the last backup: the container then writes into
 * a delta above it, whose BAT is exactly the list of clusters written since that backup.
 * This file records, per container, which snapshot of ours is kept on purpose (recovery
 * must never merge it) and the fingerprint of the frozen images at and below it, so the
 * next backup can tell whether it may trust "unwritten = unchanged".
 *   <state dir>/kept/<ct>.json   (written atomically)
 */
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { chainFor, parseDescriptor } from "../ploop/descriptor.js";
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

  /**
   * Write the record atomically. `durable: false` skips both fsyncs, for an update whose
   * loss in a crash is harmless: the file then holds the previous record, or none at all
   * (get() treats an unreadable one as absent), and the next backup reads the whole disk.
   */
  async put(kept: KeptSnapshot, options: { durable?: boolean } = {}): Promise<void> {
    const durable = options.durable !== false;
    await mkdir(this.dir, { recursive: true, mode: 0o700 }); // the state dir is owner-only
    const target = this.path(kept.ct);
    const temp = `${target}.tmp-${process.pid}`;
    const fh = await open(temp, "w", 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(kept, null, 2)}\n`);
      if (durable) await syncCounted(fh, "kept");
    } finally {
      await fh.close();
    }
    await rename(temp, target);
    if (!durable) return;
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

/**
 * The images of the chain of `topGuid` (default: the live top), base first, with their
 * paths spelled as openLogicalDisk spells them, from the descriptor alone (no image is
 * opened).
 */
export async function descriptorChainImages(descriptorPath: string, topGuid?: string): Promise<{ guid: string; path: string }[]> {
  const ddPath = resolve(descriptorPath);
  const dd = parseDescriptor(await readFile(ddPath, "utf8"), ddPath);
  return chainFor(dd, topGuid ?? dd.topGuid).map((image) => ({
    guid: image.guid,
    path: isAbsolute(image.file) ? image.file : resolve(dirname(ddPath), image.file),
  }));
}

/** Stamps of the images at and below `guid` in a chain (base first: LogicalDisk.images, descriptorChainImages). */
export async function stampImagesAtAndBelow(
  images: LogicalDisk["images"] | readonly { guid: string; path: string }[],
  guid: string,
): Promise<ImageStamp[] | null> {
  const k = images.findIndex((image) => image.guid === guid.toLowerCase());
  if (k < 0) return null;
  const stamps: ImageStamp[] = [];
  for (const image of images.slice(0, k + 1)) {
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
