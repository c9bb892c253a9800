/**
 * A repository: an ObjectStore plus the layout and formats on top of it. Knows nothing
 * about ploop; stages above it (backup, restore, prune) speak in chunks and manifests.
 */
import { IntegrityError, PloopvaultError } from "../errors.js";
import { decodeManifest, encodeManifest, type Manifest } from "../manifest/format.js";
import { isNotFound, StoreError, type ObjectStore } from "../uploader/store.js";
import { chunkKey, CONFIG_KEY, BACKUPS_PREFIX, backupPrefix, manifestKey, parseManifestKey, validateName } from "./layout.js";
import { decodeConfig, encodeConfig, type RepositoryConfig } from "./config.js";
import { decodeChunk, encodeChunk } from "./chunk-codec.js";

export interface BackupRef {
  ct: string;
  id: string;
}

export class Repository {
  private constructor(
    readonly store: ObjectStore,
    readonly config: RepositoryConfig,
  ) {}

  get location(): string {
    return this.store.location;
  }

  /** Create a new repository; refuses if a config already exists. */
  static async init(store: ObjectStore, config: RepositoryConfig): Promise<Repository> {
    try {
      await store.put(CONFIG_KEY, encodeConfig(config), { ifAbsent: true });
    } catch (error) {
      if (error instanceof StoreError && error.kind === "exists") {
        throw new PloopvaultError(`a repository already exists at ${store.location}`);
      }
      throw error;
    }
    return new Repository(store, config);
  }

  static async open(store: ObjectStore): Promise<Repository> {
    let body: Buffer;
    try {
      body = await store.get(CONFIG_KEY);
    } catch (error) {
      if (isNotFound(error)) {
        throw new PloopvaultError(`no ploopvault repository at ${store.location} (config object missing; run "ploopvault init" first)`);
      }
      throw error;
    }
    return new Repository(store, decodeConfig(body, `${store.location}/${CONFIG_KEY}`));
  }

  encodeChunk(plain: Uint8Array): Buffer {
    return encodeChunk(plain, this.config.compression.level);
  }

  async putChunkObject(idHex: string, object: Uint8Array): Promise<void> {
    await this.store.put(chunkKey(idHex), object);
  }

  /** Fetch, decompress and verify one chunk; names the backup in errors if given. */
  async getChunk(idHex: string, context?: BackupRef): Promise<Buffer> {
    const where = context ? ` (backup ${context.ct}/${context.id})` : "";
    let object: Buffer;
    try {
      object = await this.store.get(chunkKey(idHex));
    } catch (error) {
      if (isNotFound(error)) throw new IntegrityError(`chunk ${idHex} is missing from ${this.location}${where}`);
      throw error;
    }
    try {
      return decodeChunk(object, idHex, this.config.chunker.maxSize);
    } catch (error) {
      if (error instanceof IntegrityError) throw new IntegrityError(`${error.message}${where}`);
      throw error;
    }
  }

  /** Every backup that has a manifest, sorted by container then id (= time). */
  async listBackups(ct?: string): Promise<BackupRef[]> {
    const prefix = ct === undefined ? BACKUPS_PREFIX : `${BACKUPS_PREFIX}${validateName("container id", ct)}/`;
    const refs: BackupRef[] = [];
    for await (const info of this.store.list(prefix)) {
      const ref = parseManifestKey(info.key);
      if (ref) refs.push(ref);
    }
    return refs.sort((a, b) => (a.ct === b.ct ? cmp(a.id, b.id) : cmp(a.ct, b.ct)));
  }

  async getManifestObject(ref: BackupRef): Promise<Buffer> {
    try {
      return await this.store.get(manifestKey(ref.ct, ref.id));
    } catch (error) {
      if (isNotFound(error)) throw new PloopvaultError(`backup ${ref.ct}/${ref.id} not found in ${this.location}`);
      throw error;
    }
  }

  async loadManifest(ref: BackupRef): Promise<Manifest> {
    return decodeManifest(await this.getManifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
  }

  /** Store a per-backup side file (descriptor, container config). Before the manifest. */
  async putBackupFile(ref: BackupRef, name: string, body: Uint8Array): Promise<void> {
    await this.store.put(`${backupPrefix(ref.ct, ref.id)}${validateName("file name", name)}`, body);
  }

  async getBackupFile(ref: BackupRef, name: string): Promise<Buffer> {
    return this.store.get(`${backupPrefix(ref.ct, ref.id)}${name}`);
  }

  /** Written last: the backup becomes visible only now. Never overwrites. */
  async putManifest(manifest: Manifest): Promise<Buffer> {
    const { ct, id } = manifest.metadata;
    const object = encodeManifest(manifest);
    await this.store.put(manifestKey(ct, id), object, { ifAbsent: true });
    return object;
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
