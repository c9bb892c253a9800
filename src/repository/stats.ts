/**
 * What a repository holds and what dedup and compression save (`ploopvault stats`).
 *
 *   logical bytes   the disks' sizes, summed over backups (what raw restores would write)
 *   data bytes      the allocated data in them (chunk-covered bytes, holes left out)
 *   unique bytes    the data of each distinct chunk once (what dedup leaves)
 *   stored bytes    the chunk objects as stored (what compression leaves; from a listing
 *                   of chunks/, so it is what the bucket bills, before per-object overhead)
 *   dedup ratio     data / unique;   compression ratio   unique / stored
 *
 * Per group (container and host) the same figures over the group's backups: its stored
 * bytes count every chunk it references, so chunks shared with other groups count in
 * each of them (the total counts them once). Memory: one id table over the repository's
 * chunks (~45 bytes per chunk) plus one per group over the group's chunks.
 */
import { decodeManifest, type ManifestEntry } from "../manifest/format.js";
import { TaskLimiter } from "../util/limiter.js";
import { ChunkIdHashSet } from "./chunk-id-set.js";
import type { ManifestCache } from "./known-chunks.js";
import { CHUNKS_PREFIX, chunkKey } from "./layout.js";
import type { BackupRef, Repository } from "./repository.js";

export interface Figures {
  backups: number;
  logicalBytes: number;
  dataBytes: number;
  uniqueChunks: number;
  uniqueBytes: number;
  storedBytes: number;
  /** data / unique (1 = no dedup). */
  dedupRatio: number;
  /** unique / stored (1 = incompressible). */
  compressionRatio: number;
}

export interface GroupFigures extends Figures {
  ct: string;
  host: string;
}

export interface RepositoryStats {
  total: Figures;
  groups: GroupFigures[];
  /** Chunk objects no selected backup references (left by interrupted backups, or not selected). */
  unreferencedChunks: number;
  unreferencedBytes: number;
  /** Referenced by a manifest but not listed under chunks/ (run check). */
  missingChunks: number;
}

export interface StatsOptions {
  cache: ManifestCache;
  ct?: string;
  host?: string;
  concurrency?: number;
}

class Tally {
  backups = 0;
  logicalBytes = 0;
  dataBytes = 0;
  readonly ids = new ChunkIdHashSet(1 << 12);
  uniqueBytes = 0;
  storedBytes = 0;

  addBackup(logicalBytes: number, entries: readonly ManifestEntry[], storedSize: (id: Uint8Array) => number | null): void {
    this.backups++;
    this.logicalBytes += logicalBytes;
    for (const e of entries) {
      if (e.kind !== "chunk") continue;
      this.dataBytes += e.length;
      const before = this.ids.size;
      this.ids.add(e.id);
      if (this.ids.size === before) continue;
      this.uniqueBytes += e.length;
      this.storedBytes += storedSize(e.id) ?? 0;
    }
  }

  figures(): Figures {
    return {
      backups: this.backups,
      logicalBytes: this.logicalBytes,
      dataBytes: this.dataBytes,
      uniqueChunks: this.ids.size,
      uniqueBytes: this.uniqueBytes,
      storedBytes: this.storedBytes,
      dedupRatio: ratio(this.dataBytes, this.uniqueBytes),
      compressionRatio: ratio(this.uniqueBytes, this.storedBytes),
    };
  }
}

function ratio(a: number, b: number): number {
  return b === 0 ? 1 : a / b;
}

const HEX_ID = /^[0-9a-f]{64}$/;

export async function repositoryStats(repo: Repository, options: StatsOptions): Promise<RepositoryStats> {
  // the stored size of every chunk object, by id
  const stored = new ChunkIdHashSet(1 << 16);
  let sizes = new Float64Array(1 << 16);
  const scratch = Buffer.alloc(32);
  for await (const info of repo.store.list(CHUNKS_PREFIX)) {
    const name = info.key.slice(info.key.lastIndexOf("/") + 1);
    if (!HEX_ID.test(name) || info.key !== chunkKey(name)) continue;
    scratch.write(name, "hex");
    const index = stored.add(scratch);
    if (index >= sizes.length) {
      const grown = new Float64Array(sizes.length * 2);
      grown.set(sizes);
      sizes = grown;
    }
    sizes[index] = info.size;
  }
  const storedSize = (id: Uint8Array): number | null => {
    const index = stored.indexOf(id);
    return index < 0 ? null : sizes[index]!;
  };

  const total = new Tally();
  const groups = new Map<string, { ct: string; host: string; tally: Tally }>();
  const limiter = new TaskLimiter(options.concurrency ?? 8);
  for (const ref of await repo.listBackups(options.ct)) {
    await limiter.submit(async () => {
      const manifest = await readManifest(ref, options.cache);
      const { host } = manifest.metadata;
      if (options.host !== undefined && host !== options.host) return;
      const key = JSON.stringify([ref.ct, host]);
      let group = groups.get(key);
      if (group === undefined) groups.set(key, (group = { ct: ref.ct, host, tally: new Tally() }));
      // synchronous: tallies of parallel fetches never interleave
      group.tally.addBackup(manifest.metadata.disk.logicalBytes, manifest.entries, storedSize);
      total.addBackup(manifest.metadata.disk.logicalBytes, manifest.entries, storedSize);
    });
  }
  await limiter.drain();
  let missing = 0;
  for (let i = 0; i < total.ids.size; i++) if (storedSize(total.ids.id(i)) === null) missing++;

  let unreferencedChunks = 0;
  let unreferencedBytes = 0;
  for (let i = 0; i < stored.size; i++) {
    if (total.ids.has(stored.id(i))) continue;
    unreferencedChunks++;
    unreferencedBytes += sizes[i]!;
  }
  return {
    total: total.figures(),
    groups: [...groups.values()]
      .map((g) => ({ ct: g.ct, host: g.host, ...g.tally.figures() }))
      .sort((a, b) => (a.ct === b.ct ? (a.host < b.host ? -1 : a.host > b.host ? 1 : 0) : a.ct < b.ct ? -1 : 1)),
    unreferencedChunks,
    unreferencedBytes,
    missingChunks: missing,
  };

  async function readManifest(ref: BackupRef, cache: ManifestCache) {
    return decodeManifest(await cache.manifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
  }
}
