/**
 * Key objects `keys/<id>` (plaintext JSON, restic-style): one per password. Each holds
 * the repository's master key sealed (AES-256-GCM) with a key derived from that password
 * by scrypt with the object's own salt and parameters. Several operators can each have
 * a password; changing one rewrites only its key object, never the data.
 *
 *   { "format": "ploopvault-key", "version": 1, "id": "<32 hex>", "repository": "<repo id>",
 *     "created": ISO 8601, "host": "...", "user": "...",
 *     "kdf": { "algorithm": "scrypt", "N": 131072, "r": 8, "p": 1, "salt": base64 },
 *     "masterKey": base64 of the envelope (type 0x05) of the 32-byte master key }
 *
 * The envelope is bound to "key <repository id> keys/<id>", so a key object copied to
 * another name or repository does not open.
 */
import { randomBytes } from "node:crypto";
import { PloopvaultError } from "../errors.js";
import { open, seal, SEALED_MASTER_KEY } from "./aead.js";
import { AuthenticationFailure } from "./errors.js";
import { deriveKeyEncryptionKey, newScryptParams, scryptParamsProblem, type ScryptParams } from "./kdf.js";
import { MASTER_KEY_BYTES } from "./keys.js";

export const KEY_FORMAT = "ploopvault-key";
export const KEY_VERSION = 1;
export const KEYS_PREFIX = "keys/";

export interface KeyFile {
  format: typeof KEY_FORMAT;
  version: number;
  id: string;
  repository: string;
  created: string;
  host: string;
  user: string;
  kdf: ScryptParams;
  masterKey: string;
}

export interface KeyMeta {
  host: string;
  user: string;
  created: Date;
}

const KEY_ID = /^[0-9a-f]{32}$/;

export function keyObjectName(id: string): string {
  return `${KEYS_PREFIX}${id}`;
}

/** The key id of "keys/<id>", or null for any other key. */
export function parseKeyObjectName(name: string): string | null {
  if (!name.startsWith(KEYS_PREFIX)) return null;
  const id = name.slice(KEYS_PREFIX.length);
  return KEY_ID.test(id) ? id : null;
}

function context(repositoryId: string, id: string): string {
  return `key ${repositoryId} ${keyObjectName(id)}`;
}

export function newKeyId(): string {
  return randomBytes(16).toString("hex");
}

export async function createKeyFile(
  master: Uint8Array,
  password: string,
  repositoryId: string,
  meta: KeyMeta,
  cost?: { N: number; r: number; p: number },
): Promise<KeyFile> {
  const id = newKeyId();
  const kdf = newScryptParams(cost);
  const kek = await deriveKeyEncryptionKey(password, kdf);
  return {
    format: KEY_FORMAT,
    version: KEY_VERSION,
    id,
    repository: repositoryId,
    created: meta.created.toISOString(),
    host: meta.host,
    user: meta.user,
    kdf,
    masterKey: seal(kek, SEALED_MASTER_KEY, context(repositoryId, id), master).toString("base64"),
  };
}

/** The master key, or null when `password` is not this key's password. */
export async function unwrapMasterKey(key: KeyFile, password: string, repositoryId: string): Promise<Buffer | null> {
  const kek = await deriveKeyEncryptionKey(password, key.kdf);
  try {
    const master = open(kek, SEALED_MASTER_KEY, context(repositoryId, key.id), Buffer.from(key.masterKey, "base64"));
    return master.length === MASTER_KEY_BYTES ? master : null;
  } catch (error) {
    if (error instanceof AuthenticationFailure) return null;
    throw error;
  }
}

export function encodeKeyFile(key: KeyFile): Buffer {
  return Buffer.from(`${JSON.stringify(key, null, 2)}\n`, "utf8");
}

/** Parse and validate a key object; `where` names it in errors. */
export function decodeKeyFile(body: Uint8Array, where: string): KeyFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(body).toString("utf8"));
  } catch {
    throw new PloopvaultError(`${where}: key object is not valid JSON`);
  }
  const k = parsed as Partial<KeyFile> | null;
  const fail = (what: string): never => {
    throw new PloopvaultError(`${where}: invalid key object: ${what}`);
  };
  if (typeof k !== "object" || k === null || k.format !== KEY_FORMAT) fail("not a ploopvault key");
  if (k!.version !== KEY_VERSION) fail(`version ${JSON.stringify(k!.version) ?? "(none)"} is not supported by this ploopvault (supports ${KEY_VERSION})`);
  if (typeof k!.id !== "string" || !KEY_ID.test(k!.id)) fail("bad id");
  if (typeof k!.repository !== "string" || !/^[0-9a-f]{32}$/.test(k!.repository)) fail("bad repository id");
  for (const field of ["created", "host", "user", "masterKey"] as const) if (typeof k![field] !== "string") fail(`missing ${field}`);
  const problem = scryptParamsProblem(k!.kdf);
  if (problem !== null) fail(`kdf: ${problem}`);
  return k as KeyFile;
}
