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
 */
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { IntegrityError } from "../errors.js";
import { decodeManifest, chunkIds, verifyManifestEnvelope, type ManifestMetadata } from "../manifest/format.js";
import { loadMissingChunks } from "./missing-chunks.js";
import { ChunkIdSet, ChunkIdSetBuilder } from "./chunk-id-set.js";
import { writePrivateFileAtomic } from "../util/private-fs.js";
import { manifestKey } from "./layout.js";
import type { BackupRef, Repository } from "./repository.js";

/** A cache file lost in a crash is rebuilt or fetched again: no directory fsync per file. */
const CACHE = { syncDir: false };

interface IndexMeta {
  version: 1;
  manifests: string[];
}

export class ManifestCache {
  constructor(
    private readonly repo: Repository,
    readonly dir: string,
  ) {}

  static forRepository(repo: Repository, stateDir: string): ManifestCache {
    return new ManifestCache(repo, join(stateDir, "repos", repo.config.id));
  }

  /**
   * The plain manifest encoding (for decodeManifest), from the local cache or the
   * repository (then cached as stored). Encrypted manifests are authenticated each time.
   */
  async manifestObject(ref: BackupRef): Promise<Buffer> {
    const path = join(this.dir, "manifests", ref.ct, ref.id);
    const cached = await readFile(path).catch(() => null);
    // a cached copy that does not verify (damaged on the local disk) is fetched again
    const fromCache = cached === null ? null : this.verified(ref, cached);
    if (fromCache !== null) return fromCache;
    // verified before it is cached: a copy damaged in transit is fetched once more and never
    // kept (a cached bad copy would fail every later backup and restore on this host)
    let stored = await this.repo.getStoredManifestObject(ref);
    let plain = this.verified(ref, stored);
    if (plain === null) {
      stored = await this.repo.getStoredManifestObject(ref);
      plain = this.repo.openManifestObject(ref, stored);
      verifyManifestEnvelope(plain, `manifest of backup ${ref.ct}/${ref.id}`);
    }
    await writePrivateFileAtomic(path, stored, CACHE);
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

  /** Remember a manifest this process just wrote, as putManifest returned it (saves downloading it next time). */
  async remember(ref: BackupRef, object: Buffer): Promise<void> {
    await writePrivateFileAtomic(join(this.dir, "manifests", ref.ct, ref.id), object, CACHE);
  }

  async knownChunks(): Promise<ChunkIdSet> {
    const distrusted = await this.distrusted();
    const refs = (await this.repo.listBackups()).filter((r) => !distrusted.has(`${r.ct}/${r.id}`));
    const present = new Set(refs.map((r) => manifestKey(r.ct, r.id)));
    const idsPath = join(this.dir, "known-chunks.bin");
    const metaPath = join(this.dir, "known-chunks.json");
    let set = ChunkIdSet.empty();
    let merged = new Set<string>();
    try {
      const meta = JSON.parse(await readFile(metaPath, "utf8")) as IndexMeta;
      if (meta.version === 1 && meta.manifests.every((k) => present.has(k))) {
        set = ChunkIdSet.fromSortedBuffer(await readFile(idsPath));
        merged = new Set(meta.manifests);
      }
    } catch {
      // no usable cache: rebuild from all manifests
    }
    let changed = false;
    // one batched merge, not one per manifest (O(manifests x ids) on a rebuild)
    const builder = new ChunkIdSetBuilder(set);
    for (const ref of refs) {
      const key = manifestKey(ref.ct, ref.id);
      if (merged.has(key)) continue;
      const manifest = decodeManifest(await this.manifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
      builder.addAll(chunkIds(manifest.entries));
      merged.add(key);
      changed = true;
    }
    if (changed) set = builder.build();
    if (changed || merged.size !== present.size) {
      await writePrivateFileAtomic(idsPath, set.buffer, CACHE);
      const meta: IndexMeta = { version: 1, manifests: [...merged].filter((k) => present.has(k)) };
      await writePrivateFileAtomic(metaPath, Buffer.from(JSON.stringify(meta)), CACHE);
    }
    // chunks known to be missing or damaged are not trusted: backups upload them again
    const missing = await loadMissingChunks(this.repo.store);
    return set.without(missing.ids);
  }
}

