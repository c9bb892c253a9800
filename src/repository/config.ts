/**
 * The repository config object: identity, format version and the parameters every
 * client must use identically (chunking, compression), plus the encryption header of an
 * encrypted repository (docs/encryption.md). Written once by `init`; always plaintext
 * JSON. An encrypted repository's config holds no key: keys live in keys/<id>, and the
 * header's keyCheck (an HMAC over the canonical config under a key derived from the
 * master key) authenticates the config's parameters once a key is unlocked.
 *
 * An object-lock repository (docs/object-lock.md) also records its S3 Object Lock
 * settings: every client must write the same retentions and find the lock objects in
 * the same place. The config of such a repository is read from its first version, so a
 * later overwrite cannot turn the lock off.
 */
import { randomBytes } from "node:crypto";
import { PloopvaultError } from "../errors.js";
import { validateChunkerParams, type ChunkerParams } from "../chunker/params.js";

export const REPOSITORY_FORMAT = "ploopvault-repository";
export const REPOSITORY_VERSION = 1;

export interface RepositoryConfig {
  format: typeof REPOSITORY_FORMAT;
  version: number;
  id: string;
  created: string;
  chunker: ChunkerParams;
  compression: { algorithm: "zstd"; level: number };
  /** null for an unencrypted repository. */
  encryption: EncryptionConfig | null;
  /** S3 Object Lock settings; absent when the repository does not use it. */
  objectLock?: ObjectLockConfig;
}

/** `init --object-lock DAYS`: what every writer of the repository does (docs/object-lock.md). */
export interface ObjectLockConfig {
  mode: "governance" | "compliance";
  /** Every backup stays retained at least this long after its run started (seconds). */
  retentionSeconds: number;
  /**
   * Retentions are set this far beyond what a backup needs, at a per-chunk phase, so a
   * chunk in use needs one retention extension per this period (seconds).
   */
  extensionSeconds: number;
  /** Unversioned bucket of the same server (same credentials and prefix) for the lock objects. */
  lockBucket: string;
}

export const ENCRYPTION_SCHEME = "ploopvault-aead-v1";

/** The encryption header (no key material: keys are in keys/<id>). */
export interface EncryptionConfig {
  /** AES-256-GCM envelopes, HMAC-SHA256 chunk ids, HKDF-SHA256 subkeys, scrypt-wrapped keys. */
  scheme: typeof ENCRYPTION_SCHEME;
  cipher: "aes-256-gcm";
  chunkId: "hmac-sha256";
  subkeys: "hkdf-sha256";
  /** HMAC-SHA256(checkKey, canonicalConfig(config)), 64 hex. */
  keyCheck: string;
}

export function newEncryptionConfig(keyCheck: string): EncryptionConfig {
  return { scheme: ENCRYPTION_SCHEME, cipher: "aes-256-gcm", chunkId: "hmac-sha256", subkeys: "hkdf-sha256", keyCheck };
}

/**
 * Every config field that matters, in a fixed order, as the text the keyCheck MACs
 * (everything but keyCheck itself). A field added to the config must be added here.
 */
export function canonicalConfig(config: RepositoryConfig): string {
  const { chunker, compression, encryption } = config;
  return JSON.stringify([
    config.format,
    config.version,
    config.id,
    config.created,
    [chunker.algorithm, chunker.minSize, chunker.avgSize, chunker.maxSize],
    [compression.algorithm, compression.level],
    encryption === null ? null : [encryption.scheme, encryption.cipher, encryption.chunkId, encryption.subkeys],
    // only when present: configs written before object lock keep their key check
    ...(config.objectLock === undefined
      ? []
      : [["objectLock", config.objectLock.mode, config.objectLock.retentionSeconds, config.objectLock.extensionSeconds, config.objectLock.lockBucket]]),
  ]);
}

export function newRepositoryConfig(chunker: ChunkerParams, compressionLevel: number, created: Date): RepositoryConfig {
  const config: RepositoryConfig = {
    format: REPOSITORY_FORMAT,
    version: REPOSITORY_VERSION,
    id: randomBytes(16).toString("hex"),
    created: created.toISOString(),
    chunker,
    compression: { algorithm: "zstd", level: compressionLevel },
    encryption: null,
  };
  validateConfig(config, "new repository config");
  return config;
}

export function encodeConfig(config: RepositoryConfig): Buffer {
  return Buffer.from(`${JSON.stringify(config, null, 2)}\n`, "utf8");
}

export function decodeConfig(body: Buffer, where: string): RepositoryConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    throw new PloopvaultError(`${where}: repository config is not valid JSON`);
  }
  validateConfig(parsed, where);
  return parsed;
}

function validateConfig(value: unknown, where: string): asserts value is RepositoryConfig {
  const c = value as Partial<RepositoryConfig> | null;
  if (typeof c !== "object" || c === null || c.format !== REPOSITORY_FORMAT) {
    throw new PloopvaultError(`${where}: not a ploopvault repository config`);
  }
  if (c.version !== REPOSITORY_VERSION) {
    throw new PloopvaultError(
      `${where}: repository format version ${JSON.stringify(c.version) ?? "(none)"} is not supported by this ploopvault (supports ${REPOSITORY_VERSION})`,
    );
  }
  if (typeof c.id !== "string" || !/^[0-9a-f]{32}$/.test(c.id)) throw new PloopvaultError(`${where}: bad repository id`);
  if (typeof c.chunker !== "object" || c.chunker === null) throw new PloopvaultError(`${where}: missing chunker parameters`);
  validateChunkerParams(c.chunker, where);
  const level = c.compression?.level;
  if (c.compression?.algorithm !== "zstd" || typeof level !== "number" || !Number.isInteger(level) || level < -7 || level > 22) {
    throw new PloopvaultError(`${where}: bad compression settings`);
  }
  if (c.encryption !== null) validateEncryption(c.encryption, where);
  if (c.objectLock !== undefined) validateObjectLock(c.objectLock, where);
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9.\-_]{1,254}$/i;

function validateObjectLock(value: unknown, where: string): void {
  const o = value as Partial<ObjectLockConfig> | null;
  if (typeof o !== "object" || o === null) throw new PloopvaultError(`${where}: bad objectLock settings`);
  if (o.mode !== "governance" && o.mode !== "compliance")
    throw new PloopvaultError(`${where}: objectLock.mode ${JSON.stringify(o.mode)} is not governance or compliance`);
  for (const key of ["retentionSeconds", "extensionSeconds"] as const) {
    const v = o[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1 || v > 100 * 366 * 86400) throw new PloopvaultError(`${where}: bad objectLock.${key}`);
  }
  if (typeof o.lockBucket !== "string" || !BUCKET_NAME.test(o.lockBucket)) throw new PloopvaultError(`${where}: bad objectLock.lockBucket`);
}

function validateEncryption(value: unknown, where: string): void {
  const e = value as Partial<EncryptionConfig> | null | undefined;
  if (typeof e !== "object" || e === null) throw new PloopvaultError(`${where}: missing encryption header (null for an unencrypted repository)`);
  if (e.scheme !== ENCRYPTION_SCHEME || e.cipher !== "aes-256-gcm" || e.chunkId !== "hmac-sha256" || e.subkeys !== "hkdf-sha256") {
    throw new PloopvaultError(`${where}: encryption scheme ${JSON.stringify(e.scheme)} is not supported by this ploopvault (supports ${ENCRYPTION_SCHEME})`);
  }
  if (typeof e.keyCheck !== "string" || !/^[0-9a-f]{64}$/.test(e.keyCheck)) throw new PloopvaultError(`${where}: bad encryption keyCheck`);
}
