/**
 * The key hierarchy of an encrypted repository.
 *
 *   master key (32 random bytes, made by `init --encrypt`, stored only wrapped in keys/<id>)
 *     -> HKDF-SHA256(master, salt = repository id, info = "ploopvault v1 data")   AES-256-GCM key of every object
 *     -> HKDF-SHA256(master, salt = repository id, info = "ploopvault v1 chunk-id") HMAC-SHA256 key of chunk ids
 *     -> HKDF-SHA256(master, salt = repository id, info = "ploopvault v1 check")  HMAC key of the config's keyCheck
 *
 * keyCheck = HMAC-SHA256(checkKey, canonical config) tells that an unwrapped master key
 * belongs to this repository and that nobody changed the plaintext config's parameters.
 */
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import { KEY_BYTES } from "./aead.js";

export const MASTER_KEY_BYTES = 32;

/** Key material the chunk workers need (structured-cloneable; never logged). */
export interface DataKeys {
  /** AES-256-GCM key for every stored object. */
  dataKey: Uint8Array;
  /** HMAC-SHA256 key of chunk ids. */
  idKey: Uint8Array;
}

export interface RepositoryKeys extends DataKeys {
  checkKey: Uint8Array;
}

export function newMasterKey(): Buffer {
  return randomBytes(MASTER_KEY_BYTES);
}

function subkey(master: Uint8Array, repositoryId: string, purpose: string): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", master, Buffer.from(repositoryId, "hex"), Buffer.from(`ploopvault v1 ${purpose}`, "latin1"), KEY_BYTES));
}

export function deriveKeys(master: Uint8Array, repositoryId: string): RepositoryKeys {
  if (master.length !== MASTER_KEY_BYTES) throw new Error("master key must be 32 bytes");
  return {
    dataKey: subkey(master, repositoryId, "data"),
    idKey: subkey(master, repositoryId, "chunk-id"),
    checkKey: subkey(master, repositoryId, "check"),
  };
}

/**
 * A name for the master key that reveals nothing about it (HKDF with its own info
 * string): the state dir remembers it per repository, so a config and keys replaced by
 * another master key are noticed (docs/encryption.md, "Downgrade protection").
 */
export function keyFingerprint(master: Uint8Array, repositoryId: string): string {
  return Buffer.from(subkey(master, repositoryId, "fingerprint")).toString("hex");
}

/** HMAC-SHA256 of the canonical config text, lower-case hex. */
export function keyCheckValue(checkKey: Uint8Array, canonicalConfig: string): string {
  return createHmac("sha256", checkKey).update(canonicalConfig, "utf8").digest("hex");
}

export function keyCheckMatches(checkKey: Uint8Array, canonicalConfig: string, expectedHex: string): boolean {
  const expected = Buffer.from(expectedHex, "hex");
  const actual = Buffer.from(keyCheckValue(checkKey, canonicalConfig), "hex");
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
