/**
 * Which chunks the repository already has, without a request per chunk: every chunk
 * referenced by a manifest exists (manifests are written last). Manifests are immutable,
 * so they are cached under the state dir, and the merged id set is cached too; only
 * manifests not seen before are downloaded. If any cached manifest has disappeared
 * (prune), the set is rebuilt: a chunk of a forgotten backup may be gone.
 *
 * Encrypted repositories: the cache keeps manifests as stored (sealed), so nothing in the
 * state dir is plaintext but the chunk ids (keyed HMACs); manifestObject() opens them.
 * The ids are in this repository's id space (its ChunkCodec computes them).
 *
 * Everything here is owner-only (files 0600, directories 0700, whatever the umask).
 *
 * Object-lock repositories: each known chunk also gets its lock time, the latest run basis
 * (metadata.objectLock.at) of the manifests referencing it, cached beside the set (4 bytes
 * per chunk): how long the chunk is retained follows from it (src/repository/object-lock.ts).
 */
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { IntegrityError } from "../errors.js";
import { decodeManifest, chunkIds, verifyManifestEnvelope, type ManifestMetadata } from "../manifest/format.js";
import { loadMissingChunks } from "./missing-chunks.js";
import { ChunkIdSet, ChunkIdSetBuilder, ChunkIdTimesBuilder } from "./chunk-id-set.js";
import { writePrivateFileAtomic } from "../util/private-fs.js";
import { noteCost } from "../util/cost-tally.js";
import { manifestKey } from "./layout.js";
import { BackupNotFoundError, type BackupRef, type Repository } from "./repository.js";

/** A cache file lost in a crash is rebuilt or fetched again: no directory fsync per file. */
const CACHE = { syncDir: false };

interface IndexMeta {
  version: 1;
  manifests: string[];
}

/** Object lock: the latest basis of the manifests referencing each known chunk. */
export interface ChunkLockTimes {
  /** Milliseconds since the epoch; 0 when no manifest with a basis references the chunk. */
  at(id: Uint8Array): number;
}

class SortedChunkLockTimes implements ChunkLockTimes {
  constructor(
    private readonly set: ChunkIdSet,
    private readonly seconds: Uint32Array,
  ) {}

  at(id: Uint8Array): number {
    const index = this.set.indexOf(id);
    return index < 0 ? 0 : this.seconds[index]! * 1000;
  }
}

/** A manifest's basis in whole seconds; never later than now (a forged or skewed future basis must not spare extensions). */
function lockSeconds(metadata: ManifestMetadata): number {
  const at = metadata.objectLock === undefined ? Number.NaN : Date.parse(metadata.objectLock.at);
  if (!Number.isFinite(at) || at <= 0) return 0;
  return Math.floor(Math.min(at, Date.now()) / 1000);
}

export class ManifestCache {
  /** forRun(): the set merged from the manifests, computed once (null: not yet, or not memoised). */
  private runSet: Promise<ChunkIdSet> | null = null;

  constructor(
    private readonly repo: Repository,
    readonly dir: string,
    private readonly oncePerRun = false,
  ) {}

  static forRepository(repo: Repository, stateDir: string): ManifestCache {
    return new ManifestCache(repo, join(stateDir, "repos", repo.config.id));
  }

  /**
   * The cache of one backup run (registered with the repository for the whole run, docs/prune.md):
   * the manifests are listed and merged into the known set once, by the run's first container,
   * not once per container (a listing of backups/ per container, each longer than the last).
   * Safe because the prune argument ("Why no referenced chunk is ever deleted") only needs the
   * set to be read after the registration's listing, while the registration lives: a chunk of
   * a manifest forgotten later in the run is not swept while this run is registered. Chunks this
   * run stores itself are in its storedThisRun. The missing/ records are still read per call
   * (a chunk `check` finds missing meanwhile is uploaded again by the next container). Not in an
   * object-lock repository, whose lock times must follow this run's own manifests.
   */
  static forRun(repo: Repository, stateDir: string): ManifestCache {
    return new ManifestCache(repo, join(stateDir, "repos", repo.config.id), repo.objectLock === null);
  }

  /**
   * The plain manifest encoding (for decodeManifest), from the local cache or the
   * repository (then cached as stored). Encrypted manifests are authenticated each time.
   */
  async manifestObject(ref: BackupRef): Promise<Buffer> {
    const started = performance.now();
    const path = join(this.dir, "manifests", ref.ct, ref.id);
    const cached = await readFile(path).catch(() => null);
    // a cached copy that does not verify (damaged on the local disk) is fetched again
    const fromCache = cached === null ? null : this.verified(ref, cached);
    if (fromCache !== null) {
      noteCost("manifest from cache", (performance.now() - started) / 1000);
      return fromCache;
    }
    // verified before it is cached: a copy damaged in transit is fetched once more and never
    // kept (a cached bad copy would fail every later backup and restore on this host)
    const { stored, plain } = await this.repo.readManifestObject(ref);
    await writePrivateFileAtomic(path, stored, CACHE);
    noteCost("manifest from store", (performance.now() - started) / 1000);
    return plain;
  }

  /** The opened manifest if `stored` authenticates and its checksum matches; null if it is damaged. */
  private verified(ref: BackupRef, stored: Buffer): Buffer | null {
    try {
      const plain = this.repo.openManifestObject(ref, stored);
      verifyManifestEnvelope(plain, `manifest of backup ${ref.ct}/${ref.id}`);
      return plain;
    } catch (error) {
      if (error instanceof IntegrityError) return null;
      throw error;
    }
  }

  /**
   * Never trust this backup's manifest again on this host, even if it is still listed
   * (a backup whose registration lapsed and whose manifest could not be withdrawn): its
   * chunks may be gone. The merged id set is dropped, so the next knownChunks() rebuilds
   * it without the manifest.
   */
  async distrust(ref: BackupRef): Promise<void> {
    await writePrivateFileAtomic(join(this.dir, "distrusted", ref.ct, ref.id), `${new Date().toISOString()}\n`);
    await rm(join(this.dir, "manifests", ref.ct, ref.id), { force: true });
    await rm(join(this.dir, "known-chunks.json"), { force: true });
    this.runSet = null;
  }

  /** "ct/id" of every distrusted backup. */
  private async distrusted(): Promise<Set<string>> {
    const out = new Set<string>();
    const root = join(this.dir, "distrusted");
    for (const ct of await readdir(root).catch(() => [] as string[])) {
      for (const id of await readdir(join(root, ct)).catch(() => [] as string[])) out.add(`${ct}/${id}`);
    }
    return out;
  }

  /**
   * A backup's metadata (host, time, sizes) for listings and for resolving
   * HOST/CT:latest. Decoding a large manifest costs a decompression, so the metadata of an
   * unencrypted repository is kept beside the cached manifest (an encrypted repository's
   * cache holds nothing in plaintext but chunk ids: it is decoded each time).
   */
  async metadata(ref: BackupRef): Promise<ManifestMetadata> {
    const path = join(this.dir, "metadata", ref.ct, `${ref.id}.json`);
    const name = `manifest of backup ${ref.ct}/${ref.id}`;
    if (!this.repo.encrypted) {
      const cached = await readFile(path, "utf8").catch(() => null);
      if (cached !== null) {
        try {
          const parsed = JSON.parse(cached) as ManifestMetadata;
          if (parsed.id === ref.id && parsed.ct === ref.ct) return parsed;
        } catch {
          // damaged cache file: decode again
        }
      }
    }
    const { metadata } = decodeManifest(await this.manifestObject(ref), name);
    if (!this.repo.encrypted) await writePrivateFileAtomic(path, JSON.stringify(metadata), CACHE);
    return metadata;
  }

  /**
   * Remember a manifest this process just wrote, as putManifest returned it (saves
   * downloading it next time). `chunkIds`: the chunks it references; a run's set (forRun)
   * takes them in, so the run's next containers know what this one stored (else their
   * chunk workers would compress again every chunk an earlier container already stored).
   */
  async remember(ref: BackupRef, object: Buffer, chunkIds?: readonly Uint8Array[]): Promise<void> {
    await writePrivateFileAtomic(join(this.dir, "manifests", ref.ct, ref.id), object, CACHE);
    const runSet = this.runSet;
    if (runSet !== null && chunkIds !== undefined) this.runSet = runSet.then((set) => set.withAdded(chunkIds));
  }

  async knownChunks(): Promise<ChunkIdSet> {
    return (await this.knownChunksWithLockTimes()).known;
  }

  /** The known set, and in an object-lock repository each chunk's lock time. */
  async knownChunksWithLockTimes(): Promise<{ known: ChunkIdSet; lockTimes: ChunkLockTimes | null }> {
    if (this.oncePerRun) {
      this.runSet ??= this.mergedManifests().then((merged) => merged.set);
      const set = await this.runSet.catch((error: unknown) => {
        this.runSet = null;
        throw error;
      });
      return { known: set.without((await loadMissingChunks(this.repo.store)).ids), lockTimes: null };
    }
    const { set, times, locked } = await this.mergedManifests();
    // chunks known to be missing or damaged are not trusted: backups upload them again
    const missing = await loadMissingChunks(this.repo.store);
    return {
      known: set.without(missing.ids),
      lockTimes: locked ? new SortedChunkLockTimes(set, times) : null,
    };
  }

  /** Every chunk the listed (and not distrusted) manifests reference, and in an object-lock repository their lock times. */
  private async mergedManifests(): Promise<{ set: ChunkIdSet; times: Uint32Array; locked: boolean }> {
    const locked = this.repo.objectLock !== null;
    const distrusted = await this.distrusted();
    const refs = (await this.repo.listBackups()).filter((r) => !distrusted.has(`${r.ct}/${r.id}`));
    const present = new Set(refs.map((r) => manifestKey(r.ct, r.id)));
    const idsPath = join(this.dir, "known-chunks.bin");
    const metaPath = join(this.dir, "known-chunks.json");
    const timesPath = join(this.dir, "known-chunks.times");
    let set = ChunkIdSet.empty();
    let times: Uint32Array = new Uint32Array(0);
    let merged = new Set<string>();
    try {
      const meta = JSON.parse(await readFile(metaPath, "utf8")) as IndexMeta;
      if (meta.version === 1 && meta.manifests.every((k) => present.has(k))) {
        const cached = ChunkIdSet.fromSortedBuffer(await readFile(idsPath));
        const cachedTimes: Uint32Array = locked ? timesOf(await readFile(timesPath)) : new Uint32Array(0);
        if (!locked || cachedTimes.length === cached.size) {
          set = cached;
          times = cachedTimes;
          merged = new Set(meta.manifests);
        }
      }
    } catch {
      // no usable cache: rebuild from all manifests
    }
    let changed = false;
    // one batched merge, not one per manifest (O(manifests x ids) on a rebuild)
    const builder = locked ? new ChunkIdTimesBuilder(set, times) : new ChunkIdSetBuilder(set);
    for (const ref of refs) {
      const key = manifestKey(ref.ct, ref.id);
      if (merged.has(key)) continue;
      let object: Buffer;
      try {
        object = await this.manifestObject(ref);
      } catch (error) {
        // forgotten by a prune since the listing: its chunks are not known (they may go)
        if (!(error instanceof BackupNotFoundError)) throw error;
        present.delete(key);
        continue;
      }
      const manifest = decodeManifest(object, `manifest of backup ${ref.ct}/${ref.id}`);
      if (builder instanceof ChunkIdTimesBuilder) {
        const at = lockSeconds(manifest.metadata);
        for (const id of chunkIds(manifest.entries)) builder.add(id, at);
      } else {
        builder.addAll(chunkIds(manifest.entries));
      }
      merged.add(key);
      changed = true;
    }
    if (changed) {
      if (builder instanceof ChunkIdTimesBuilder) ({ set, times } = builder.build());
      else set = builder.build();
    }
    if (changed || merged.size !== present.size) {
      await writePrivateFileAtomic(idsPath, set.buffer, CACHE);
      if (locked) await writePrivateFileAtomic(timesPath, Buffer.from(times.buffer, times.byteOffset, times.byteLength), CACHE);
      const meta: IndexMeta = { version: 1, manifests: [...merged].filter((k) => present.has(k)) };
      await writePrivateFileAtomic(metaPath, Buffer.from(JSON.stringify(meta)), CACHE);
    }
    return { set, times, locked };
  }
}

/** A cached times file as u32 values (a copy: file buffers need not be 4-byte aligned). */
function timesOf(buffer: Buffer): Uint32Array {
  if (buffer.length % 4 !== 0) return new Uint32Array(0);
  const out = new Uint32Array(buffer.length / 4);
  new Uint8Array(out.buffer).set(buffer);
  return out;
}
