/**
 * A repository: an ObjectStore plus the layout and formats on top of it. Knows nothing
 * about ploop; stages above it (backup, restore, prune) speak in chunks and manifests.
 *
 * Encrypted repositories (docs/encryption.md) are handled here and nowhere above: chunk
 * ids and chunk objects come from `chunkCodec`; manifests and per-backup side files are
 * sealed on the way in and opened (authenticated) on the way out, so callers always see
 * plaintext encodings. getManifestObject() returns the plain "PVMF" manifest encoding;
 * getStoredManifestObject() the object exactly as stored (what a local cache keeps).
 *
 * Object-lock repositories (docs/object-lock.md) are handled here too: their store is an
 * ObjectLockView (src/repository/object-lock.ts), which reads what the writers wrote
 * whatever was hidden or put on top since, keeps lock objects in the unversioned lock
 * bucket and gives every object it writes a retention; chunk retentions follow the
 * schedule from the run's basis (the time the repository was opened).
 */
import { hostname, userInfo } from "node:os";
import { open, seal, SEALED_FILE, SEALED_MANIFEST } from "../crypto/aead.js";
import { AuthenticationFailure, WrongPasswordError } from "../crypto/errors.js";
import {
  createKeyFile,
  decodeKeyFile,
  encodeKeyFile,
  keyObjectName,
  KEYS_PREFIX,
  parseKeyObjectName,
  unwrapMasterKey,
  type KeyFile,
} from "../crypto/key-file.js";
import { DEFAULT_SCRYPT, scryptWork } from "../crypto/kdf.js";
import { deriveKeys, keyCheckMatches, keyCheckValue, keyFingerprint, newMasterKey, type RepositoryKeys } from "../crypto/keys.js";
import { passwordProvider, type PasswordProvider } from "../crypto/password.js";
import { IntegrityError, PloopvaultError, UsageError } from "../errors.js";
import { decodeManifest, encodeManifest, verifyManifestEnvelope, type Manifest } from "../manifest/format.js";
import { isNotFound, StoreError, type ObjectStore } from "../uploader/store.js";
import { tallyStoreRequests } from "../util/cost-tally.js";
import { chunkKey, CONFIG_KEY, BACKUPS_PREFIX, backupPrefix, manifestKey, parseManifestKey, validateName } from "./layout.js";
import { canonicalConfig, decodeConfig, encodeConfig, newEncryptionConfig, type RepositoryConfig } from "./config.js";
import { ChunkCodec } from "./chunk-codec.js";
import { recordMissingChunks } from "./missing-chunks.js";
import { VerifiedReads } from "../uploader/verified.js";
import { isVersionedStore, ObjectLockView, readFirstVersion, RetentionSchedule, versionsOf } from "./object-lock.js";

export interface BackupRef {
  ct: string;
  id: string;
}

/** Who made a key object (plaintext in keys/<id>, shown by `key list`). */
export interface KeyOwner {
  host: string;
  user: string;
}

export interface InitOptions {
  /** Encrypt: a new random master key, wrapped in a first key object under this password. */
  password?: string;
  owner?: KeyOwner;
  /** scrypt cost of the key object (default kdf.ts DEFAULT_SCRYPT). */
  kdfCost?: { N: number; r: number; p: number };
}

export interface OpenOptions {
  /** The password of an encrypted repository (default: PLOOPVAULT_PASSWORD or a terminal prompt). */
  password?: PasswordProvider;
  /** Try this key object first (the one that opened the repository last time on this host). */
  preferredKeyId?: string;
}

/** At most this many key objects are read (one per operator: a handful in practice). */
export const MAX_KEY_OBJECTS = 32;
/**
 * scrypt work (N * r * p, kdf.ts) one open may spend on key objects, cheapest first:
 * 32 derivations at the default cost (about 18 s here). A password is tried on every
 * key object, so planted ones must not make an open take for ever.
 */
export const MAX_UNLOCK_WORK = 32 * scryptWork(DEFAULT_SCRYPT);

interface Unlocked {
  master: Buffer;
  keys: RepositoryKeys;
  /** The key object whose password unlocked the repository. */
  keyId: string;
}

/** What an object-lock repository's config read told about the config's own version. */
interface ConfigVersion {
  versionId: string | null;
  retainUntil: Date | null;
}

/** A config as read by Repository.loadConfig, with the version it was read from. */
export interface LoadedConfig {
  config: RepositoryConfig;
  version: ConfigVersion;
}

/** A backup's manifest is not (or no longer: forgotten by a prune) in the repository. */
export class BackupNotFoundError extends PloopvaultError {}

export class Repository {
  /** Ids and objects of this repository's chunks (SHA-256 / zstd, or HMAC / sealed). */
  readonly chunkCodec: ChunkCodec;
  /** The object-lock view and schedule, or null for a repository without S3 Object Lock. */
  readonly objectLock: ObjectLockView | null;

  private constructor(
    readonly store: ObjectStore,
    readonly config: RepositoryConfig,
    private unlocked: Unlocked | null,
    private readonly configVersion: ConfigVersion = { versionId: null, retainUntil: null },
  ) {
    const keys = unlocked === null ? null : { dataKey: unlocked.keys.dataKey, idKey: unlocked.keys.idKey };
    this.chunkCodec = new ChunkCodec({ compressionLevel: config.compression.level, keys });
    this.objectLock = store instanceof ObjectLockView ? store : null;
    this.reads = new VerifiedReads(store);
  }

  /** Chunk and manifest reads: a body that does not verify (or a 404) is read once more. */
  private readonly reads: VerifiedReads;

  /**
   * The store an object-lock repository must be used through (its view); the store
   * itself otherwise. Refuses a store that cannot read versions or reach the lock bucket.
   */
  private static storeFor(store: ObjectStore, config: RepositoryConfig): ObjectStore {
    const lock = config.objectLock;
    if (lock === undefined) return store;
    if (!isVersionedStore(store) || store.sibling === undefined) {
      throw new PloopvaultError(`repository ${store.location} uses S3 Object Lock: it can only be used through S3 (this store cannot read object versions)`);
    }
    const sibling = store.sibling.bind(store);
    return new ObjectLockView(store, () => sibling(lock.lockBucket), new RetentionSchedule(lock), new Date());
  }

  get location(): string {
    return this.store.location;
  }

  get encrypted(): boolean {
    return this.unlocked !== null;
  }

  /** The key object that unlocked this (encrypted) repository. */
  get keyId(): string | null {
    return this.unlocked?.keyId ?? null;
  }

  /** A fingerprint of the master key (encrypted repositories), safe to store: see keyFingerprint. */
  get keyFingerprint(): string | null {
    return this.unlocked === null ? null : keyFingerprint(this.unlocked.master, this.config.id);
  }

  /**
   * Create a new repository; refuses if a config already exists (looked up first, then
   * created with a conditional create: a server that ignores If-None-Match would
   * otherwise overwrite it; src/repository/create.ts also probes the server first). An
   * object-lock repository's versioned bucket may ignore conditional creates (Ceph RGW
   * 16.2): there the look-up guards, and readers take the config's first version.
   */
  static async init(rawStore: ObjectStore, config: RepositoryConfig, options: InitOptions = {}): Promise<Repository> {
    if (options.password !== undefined && config.encryption !== null) throw new Error("Repository.init: pass an unencrypted config and a password");
    const store = Repository.storeFor(rawStore, config);
    if ((await store.stat(CONFIG_KEY)) !== null) throw new PloopvaultError(`a repository already exists at ${store.location}`);
    if (options.password === undefined) {
      await putConfig(store, config);
      return new Repository(store, config, null);
    }
    const master = newMasterKey();
    const keys = deriveKeys(master, config.id);
    const draft: RepositoryConfig = { ...config, encryption: newEncryptionConfig("0".repeat(64)) };
    const encrypted: RepositoryConfig = { ...config, encryption: newEncryptionConfig(keyCheckValue(keys.checkKey, canonicalConfig(draft))) };
    const key = await createKeyFile(master, options.password, config.id, { ...(options.owner ?? defaultKeyOwner()), created: new Date() }, options.kdfCost);
    // The key first: a config is never visible without a key that opens it.
    await store.put(keyObjectName(key.id), encodeKeyFile(key), { ifAbsent: true });
    try {
      await putConfig(store, encrypted);
    } catch (error) {
      await store.delete([keyObjectName(key.id)]).catch(() => undefined);
      throw error;
    }
    return new Repository(store, encrypted, { master, keys, keyId: key.id });
  }

  /**
   * Open a repository; an encrypted one is unlocked with the password (tried against
   * the key objects). A wrong password is a WrongPasswordError (exit 5).
   */
  static async open(store: ObjectStore, options: OpenOptions = {}): Promise<Repository> {
    return Repository.unlock(store, await Repository.loadConfig(store), options);
  }

  /**
   * The repository's config object, validated (not yet authenticated: see unlock). In a
   * versioned bucket its first version: an overwrite cannot change the settings (turn
   * object lock off).
   */
  static async loadConfig(store: ObjectStore): Promise<LoadedConfig> {
    let read;
    try {
      read = await readFirstVersion(store, CONFIG_KEY);
    } catch (error) {
      if (isNotFound(error)) {
        throw new PloopvaultError(`no ploopvault repository at ${store.location} (config object missing; run "ploopvault init" first)`);
      }
      throw error;
    }
    return { config: decodeConfig(read.body, `${store.location}/${CONFIG_KEY}`), version: { versionId: read.versionId, retainUntil: read.retainUntil } };
  }

  /**
   * Open the repository whose config is `loaded` (from loadConfig): an encrypted one is
   * unlocked with the password. Key objects are tried preferred first, then cheapest
   * first, within MAX_KEY_OBJECTS and MAX_UNLOCK_WORK. `rawStore` is the store the config
   * was read from; an object-lock repository is used through its view.
   */
  static async unlock(rawStore: ObjectStore, loaded: LoadedConfig, options: OpenOptions = {}): Promise<Repository> {
    const { config, version: configVersion } = loaded;
    // requests counted per container for `backup -v` (util/cost-tally.ts)
    const store = tallyStoreRequests(Repository.storeFor(rawStore, config));
    const password = options.password ?? passwordProvider({});
    if (config.encryption === null) {
      // A replaced config must not silently turn an encrypted repository into a plaintext one.
      if (password.given) {
        throw new UsageError(
          `repository ${store.location} is not encrypted, but a password was given (${password.source}): remove it to use an unencrypted repository`,
        );
      }
      return new Repository(store, config, null, configVersion);
    }
    const ids = await listKeyIds(store);
    const preferred = options.preferredKeyId;
    const tooMany = ids.length > MAX_KEY_OBJECTS;
    const tooManyLine = `repository ${store.location} has ${ids.length} key objects under ${KEYS_PREFIX}, more than the ${MAX_KEY_OBJECTS} ploopvault reads: delete the ones nobody uses with an S3 tool (someone who can write the bucket may have planted them)`;
    if (tooMany && (preferred === undefined || !ids.includes(preferred))) throw new PloopvaultError(tooManyLine);
    const keyFiles = (await loadKeyFiles(store, tooMany ? [preferred!] : ids)).filter((k) => k.repository === config.id);
    if (keyFiles.length === 0) throw new PloopvaultError(`repository ${store.location} is encrypted but has no usable key objects under ${KEYS_PREFIX}`);
    keyFiles.sort((a, b) => Number(b.id === preferred) - Number(a.id === preferred) || scryptWork(a.kdf) - scryptWork(b.kdf) || cmp(a.id, b.id));
    const secret = await password.get(`repository ${store.location} is encrypted`);
    let spent = 0;
    let tried = 0;
    for (const key of keyFiles) {
      spent += scryptWork(key.kdf);
      if (tried > 0 && spent > MAX_UNLOCK_WORK) {
        throw new PloopvaultError(
          `the password opens none of the ${tried} cheapest of ${keyFiles.length} key objects of repository ${store.location}; the others were not tried (their key derivation would take too long: are there planted key objects under ${KEYS_PREFIX}?)`,
        );
      }
      tried++;
      const master = await unwrapMasterKey(key, secret, config.id);
      if (master === null) continue;
      const keys = deriveKeys(master, config.id);
      if (!keyCheckMatches(keys.checkKey, canonicalConfig(config), config.encryption.keyCheck)) {
        throw new IntegrityError(
          `${store.location}/${CONFIG_KEY}: does not match the repository key (the config was modified, or ${keyObjectName(key.id)} belongs to another repository)`,
        );
      }
      return new Repository(store, config, { master, keys, keyId: key.id }, configVersion);
    }
    if (tooMany) throw new PloopvaultError(tooManyLine);
    throw new WrongPasswordError(`wrong password for repository ${store.location} (no key object under ${KEYS_PREFIX} accepts it)`);
  }

  /** The id of a plain chunk in this repository (SHA-256, or HMAC-SHA256 when encrypted). */
  chunkId(plain: Uint8Array): Buffer {
    return this.chunkCodec.id(plain);
  }

  encodeChunk(plain: Uint8Array): Buffer {
    return this.chunkCodec.encode(plain);
  }

  async putChunkObject(idHex: string, object: Uint8Array, options: { deferNameSync?: boolean } = {}): Promise<void> {
    if (!this.chunkCodec.isOwnFormat(object)) {
      throw new Error(
        `internal error: refusing to store chunk ${idHex} in format 0x${(object[0] ?? 0).toString(16)} in ${this.encrypted ? "an encrypted" : "an unencrypted"} repository`,
      );
    }
    const lock = this.objectLock;
    // object lock: retained until the chunk's first boundary after this run's needs
    await this.store.put(chunkKey(idHex), object, {
      ...(lock === null ? {} : { retention: lock.schedule.retention(lock.schedule.chunkUntil(Buffer.from(idHex, "hex"), lock.basis.getTime())) }),
      ...(options.deferNameSync ? { deferNameSync: true } : {}),
    });
  }

  /** Make durable the names of chunks stored with deferNameSync (before a manifest names them). */
  async flushChunks(): Promise<void> {
    await this.store.flush?.();
  }

  /** Fetch, authenticate, decompress and verify one chunk; names the backup in errors if given. */
  async getChunk(idHex: string, context?: BackupRef): Promise<Buffer> {
    return (await this.readChunk(idHex, context)).plain;
  }

  /**
   * getChunk(), also returning the stored object's inner 0x01 form and its stored size (for
   * copy). A copy that does not verify is read once more (VerifiedReads); in an object-lock
   * repository an older version that verifies is used when the current one is bad twice.
   */
  async readChunk(idHex: string, context?: BackupRef): Promise<{ plain: Buffer; inner: Buffer; storedBytes: number }> {
    const where = context ? ` (backup ${context.ct}/${context.id})` : "";
    try {
      return await this.reads.get(chunkKey(idHex), async (object) => ({
        ...(await this.chunkCodec.decodeWithInner(object, idHex, this.config.chunker.maxSize)),
        storedBytes: object.length,
      }));
    } catch (error) {
      if (isNotFound(error)) {
        await this.noteMissingChunk(idHex);
        throw new IntegrityError(`chunk ${idHex} is missing from ${this.location}${where}`);
      }
      if (!(error instanceof IntegrityError)) throw error;
      // object lock: the newest version may be junk put on top of the chunk; an older one may verify
      const older = this.objectLock === null ? null : await this.olderChunkVersion(idHex);
      if (older !== null) return older;
      throw new IntegrityError(`${error.message}${where}`, { cause: error });
    }
  }

  /** The newest version of a chunk, other than the current one, that verifies; null if none. */
  private async olderChunkVersion(idHex: string): Promise<{ plain: Buffer; inner: Buffer; storedBytes: number } | null> {
    const view = this.objectLock!;
    const key = chunkKey(idHex);
    const versions = (await versionsOf(view, key)).filter((v) => !v.deleteMarker);
    for (const v of versions.slice(1)) {
      try {
        const { body } = await view.getVersion(key, v.versionId);
        return { ...(await this.chunkCodec.decodeWithInner(body, idHex, this.config.chunker.maxSize)), storedBytes: body.length };
      } catch (error) {
        if (!(error instanceof IntegrityError) && !isNotFound(error)) throw error;
      }
    }
    return null;
  }

  private readonly reportedMissing = new Set<string>();

  /**
   * A chunk read got a 404: record it (src/repository/missing-chunks.ts) so the next
   * backups upload it again. Best effort, once per chunk and process: a read-only
   * credential must not turn a damaged restore into a different error.
   */
  private async noteMissingChunk(idHex: string): Promise<void> {
    if (this.reportedMissing.has(idHex)) return;
    this.reportedMissing.add(idHex);
    await recordMissingChunks(this.store, [idHex], "read").catch(() => undefined);
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

  /** The manifest object exactly as stored (sealed in an encrypted repository). */
  async getStoredManifestObject(ref: BackupRef): Promise<Buffer> {
    try {
      return await this.store.get(manifestKey(ref.ct, ref.id));
    } catch (error) {
      if (isNotFound(error)) throw new BackupNotFoundError(`backup ${ref.ct}/${ref.id} not found in ${this.location}`);
      throw error;
    }
  }

  /** The plain manifest encoding of a stored manifest object (authenticated when encrypted). */
  openManifestObject(ref: BackupRef, stored: Buffer): Buffer {
    if (this.unlocked === null) return stored;
    try {
      return open(this.unlocked.keys.dataKey, SEALED_MANIFEST, manifestKey(ref.ct, ref.id), stored);
    } catch (error) {
      if (error instanceof AuthenticationFailure) throw new IntegrityError(`manifest of backup ${ref.ct}/${ref.id}: ${error.message}`);
      throw error;
    }
  }

  /**
   * The manifest as stored and its plain encoding ("PVMF" ..., for decodeManifest),
   * verified (authenticated, checksum matched); a copy damaged in transit is read once more.
   */
  async readManifestObject(ref: BackupRef): Promise<{ stored: Buffer; plain: Buffer }> {
    try {
      return await this.reads.get(manifestKey(ref.ct, ref.id), (stored) => {
        const plain = this.openManifestObject(ref, stored);
        verifyManifestEnvelope(plain, `manifest of backup ${ref.ct}/${ref.id}`);
        return { stored, plain };
      });
    } catch (error) {
      if (isNotFound(error)) throw new BackupNotFoundError(`backup ${ref.ct}/${ref.id} not found in ${this.location}`);
      throw error;
    }
  }

  /** The plain manifest encoding, verified: readManifestObject(). */
  async getManifestObject(ref: BackupRef): Promise<Buffer> {
    return (await this.readManifestObject(ref)).plain;
  }

  async loadManifest(ref: BackupRef): Promise<Manifest> {
    return decodeManifest(await this.getManifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
  }

  /** Store a per-backup side file (descriptor, container config). Before the manifest. */
  async putBackupFile(ref: BackupRef, name: string, body: Uint8Array): Promise<void> {
    const key = `${backupPrefix(ref.ct, ref.id)}${validateName("file name", name)}`;
    await this.store.put(key, this.unlocked === null ? body : seal(this.unlocked.keys.dataKey, SEALED_FILE, key, body));
  }

  async getBackupFile(ref: BackupRef, name: string): Promise<Buffer> {
    const key = `${backupPrefix(ref.ct, ref.id)}${name}`;
    const stored = await this.store.get(key);
    if (this.unlocked === null) return stored;
    try {
      return open(this.unlocked.keys.dataKey, SEALED_FILE, key, stored);
    } catch (error) {
      if (error instanceof AuthenticationFailure) throw new IntegrityError(`${name} of backup ${ref.ct}/${ref.id}: ${error.message}`);
      throw error;
    }
  }

  /**
   * Written last: the backup becomes visible only now. Never overwrites. Returns the
   * object as stored (sealed in an encrypted repository; give it to openManifestObject).
   */
  async putManifest(manifest: Manifest, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const { ct, id } = manifest.metadata;
    const key = manifestKey(ct, id);
    // object lock: the run's basis, from which later runs know how long its chunks are retained
    const lock = this.objectLock;
    // (a manifest copied from an object-lock repository does not carry the source's)
    const { objectLock: _source, ...metadata } = manifest.metadata;
    const plain = encodeManifest({ ...manifest, metadata: lock === null ? metadata : { ...metadata, objectLock: { at: lock.basis.toISOString() } } });
    const object = this.unlocked === null ? plain : seal(this.unlocked.keys.dataKey, SEALED_MANIFEST, key, plain);
    await this.store.put(key, object, { ifAbsent: true, ...(options.signal ? { signal: options.signal } : {}) });
    return object;
  }

  /**
   * Take back a manifest that may have been published although it must not count (its
   * backup's registration lapsed). Removing a manifest is always safe; its side files go
   * with the next prune.
   */
  async withdrawManifest(ref: BackupRef): Promise<void> {
    // Object lock: nothing to withdraw. Every chunk the manifest references was retained
    // past this run's needs before it was written, and prune never deletes retained
    // versions, so the backup is complete whatever a prune did meanwhile (and an
    // append-only node may not delete anyway).
    if (this.objectLock !== null) return;
    await this.store.delete([manifestKey(ref.ct, ref.id)]);
  }

  /**
   * Object lock: the config and the key objects must outlive every backup. Extend the
   * retention of their first versions when it ends before this run's needs (a run or two
   * per W do it; the others find it long enough and send nothing).
   */
  async keepRepositoryRetained(): Promise<number> {
    const lock = this.objectLock;
    if (lock === null) return 0;
    const need = lock.schedule.needed(lock.basis.getTime());
    const retention = lock.schedule.retention(lock.schedule.fileUntil(lock.basis.getTime()));
    const targets: { key: string; versionId: string | undefined; until: Date | null | undefined }[] = [
      { key: CONFIG_KEY, versionId: this.configVersion.versionId ?? undefined, until: this.configVersion.retainUntil },
    ];
    if (this.unlocked !== null) {
      for await (const info of lock.list(KEYS_PREFIX)) {
        const original = lock.originalRetention(info.key);
        targets.push({ key: info.key, versionId: original?.versionId, until: original?.retainUntil });
      }
    }
    let extended = 0;
    for (const t of targets) {
      if (t.until instanceof Date && t.until.getTime() >= need) continue;
      await lock.extendRetention(t.key, retention, t.versionId);
      extended++;
    }
    return extended;
  }

  // ---- key objects of an encrypted repository (keys/<id>) ----

  private requireUnlocked(what: string): Unlocked {
    if (this.unlocked === null) throw new UsageError(`${what}: repository ${this.location} is not encrypted (it has no keys)`);
    return this.unlocked;
  }

  /** Every key object, sorted by creation time. */
  async listKeys(): Promise<KeyFile[]> {
    this.requireUnlocked("key list");
    const ids = await listKeyIds(this.store);
    if (ids.length > MAX_KEY_OBJECTS)
      throw new PloopvaultError(
        `repository ${this.location} has ${ids.length} key objects under ${KEYS_PREFIX}, more than the ${MAX_KEY_OBJECTS} ploopvault reads`,
      );
    return (await loadKeyFiles(this.store, ids)).filter((k) => k.repository === this.config.id).sort((a, b) => cmp(a.created, b.created) || cmp(a.id, b.id));
  }

  /** A new key object for `password` (another password opening the same master key). */
  async addKey(password: string, owner: KeyOwner = defaultKeyOwner(), kdfCost?: { N: number; r: number; p: number }): Promise<KeyFile> {
    const { master } = this.requireUnlocked("key add");
    if ((await listKeyIds(this.store)).length >= MAX_KEY_OBJECTS) {
      throw new PloopvaultError(`repository ${this.location} already has ${MAX_KEY_OBJECTS} key objects, the most ploopvault reads: remove one first`);
    }
    const key = await createKeyFile(master, password, this.config.id, { ...owner, created: new Date() }, kdfCost);
    await this.store.put(keyObjectName(key.id), encodeKeyFile(key), { ifAbsent: true });
    return key;
  }

  /** Resolve a key id or a unique prefix of one (at least 4 hex digits). */
  async resolveKeyId(spec: string): Promise<string> {
    if (!/^[0-9a-f]{4,32}$/.test(spec))
      throw new UsageError(`invalid key id "${spec}": give the id (or a unique prefix of at least 4 hex digits) that "key list" shows`);
    const matches = (await this.listKeys()).filter((k) => k.id.startsWith(spec));
    if (matches.length === 0) throw new PloopvaultError(`no key ${spec} in ${this.location}`);
    if (matches.length > 1) throw new UsageError(`key id prefix ${spec} is ambiguous (${matches.length} keys)`);
    return matches[0]!.id;
  }

  /** Delete a key object; refuses the key this process unlocked with (and so the last one). */
  async removeKey(id: string): Promise<void> {
    const { keyId } = this.requireUnlocked("key remove");
    if (id === keyId)
      throw new PloopvaultError(
        `refusing to remove key ${id}: it is the key this password opens (use "key passwd" to change it, or open the repository with another key's password)`,
      );
    await this.store.delete([keyObjectName(id)]);
  }

  /**
   * Change the password of the key this process unlocked with: a new key object for the
   * new password is written before the old one is deleted. The data is not re-encrypted.
   */
  async changePassword(password: string, kdfCost?: { N: number; r: number; p: number }): Promise<{ oldKey: string; newKey: KeyFile }> {
    const unlocked = this.requireUnlocked("key passwd");
    const oldKey = unlocked.keyId;
    const previous = (await this.listKeys()).find((k) => k.id === oldKey);
    const newKey = await this.addKey(password, previous ? { host: previous.host, user: previous.user } : defaultKeyOwner(), kdfCost);
    await this.store.delete([keyObjectName(oldKey)]);
    this.unlocked = { ...unlocked, keyId: newKey.id };
    return { oldKey, newKey };
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

async function putConfig(store: ObjectStore, config: RepositoryConfig): Promise<void> {
  try {
    await store.put(CONFIG_KEY, encodeConfig(config), { ifAbsent: true });
  } catch (error) {
    if (error instanceof StoreError && error.kind === "exists") {
      throw new PloopvaultError(`a repository already exists at ${store.location}`);
    }
    throw error;
  }
}

/** The ids of the key objects under keys/, sorted. */
async function listKeyIds(store: ObjectStore): Promise<string[]> {
  const ids: string[] = [];
  for await (const info of store.list(KEYS_PREFIX)) {
    const id = parseKeyObjectName(info.key);
    if (id !== null) ids.push(id);
  }
  return ids.sort();
}

/**
 * These key objects, those that are readable and valid; the others are skipped (another
 * key may still open the repository), including ones whose KDF parameters exceed the
 * limits (kdf.ts).
 */
async function loadKeyFiles(store: ObjectStore, ids: readonly string[]): Promise<KeyFile[]> {
  const keys: KeyFile[] = [];
  for (const id of ids) {
    try {
      const key = decodeKeyFile(await store.get(keyObjectName(id)), `${store.location}/${keyObjectName(id)}`);
      if (key.id === id) keys.push(key);
    } catch (error) {
      if (isNotFound(error) || !(error instanceof StoreError)) continue;
      throw error;
    }
  }
  return keys;
}

export function defaultKeyOwner(): KeyOwner {
  let user = "unknown";
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): keep "unknown"
  }
  return { host: hostname(), user };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
