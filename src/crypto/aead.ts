/**
 * The sealed-object envelope of encrypted repositories: AES-256-GCM (node:crypto) with a
 * fresh random 96-bit nonce per object.
 *
 *   byte 0        type/version byte (which kind of object, envelope version 1)
 *   bytes 1..12   nonce (random)
 *   bytes 13..    ciphertext (same length as the plaintext)
 *   last 16       GCM tag
 *
 * The associated data is the type byte followed by a context string naming the object
 * (its key in the repository), so an object moved to another name or kind fails to open.
 * Pure functions over buffers; no I/O.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { AuthenticationFailure } from "./errors.js";

export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const KEY_BYTES = 32;
/** Bytes an envelope adds to its plaintext. */
export const ENVELOPE_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES;

/** Envelope type bytes (envelope version 1). 0x01 is the unencrypted chunk format. */
export const SEALED_CHUNK = 0x02;
export const SEALED_MANIFEST = 0x03;
export const SEALED_FILE = 0x04;
export const SEALED_MASTER_KEY = 0x05;

const AAD_PREFIX = Buffer.from("ploopvault\0", "latin1");

function associatedData(type: number, context: string): Buffer {
  const ctx = Buffer.from(context, "utf8");
  const aad = Buffer.allocUnsafe(1 + AAD_PREFIX.length + ctx.length);
  aad[0] = type;
  AAD_PREFIX.copy(aad, 1);
  ctx.copy(aad, 1 + AAD_PREFIX.length);
  return aad;
}

/** Encrypt `plaintext` into a new envelope of `type`, bound to `context`. */
export function seal(key: Uint8Array, type: number, context: string, plaintext: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(ENVELOPE_OVERHEAD + plaintext.length);
  sealInto(key, type, context, plaintext, out, 0);
  return out;
}

/**
 * seal() written into `out` at `offset` (room for ENVELOPE_OVERHEAD + plaintext.length
 * bytes there); returns the envelope's length. Only the cipher's output is a fresh buffer.
 */
export function sealInto(key: Uint8Array, type: number, context: string, plaintext: Uint8Array, out: Uint8Array, offset: number): number {
  if (key.length !== KEY_BYTES) throw new Error("seal: key must be 32 bytes");
  if (out.length - offset < ENVELOPE_OVERHEAD + plaintext.length) throw new Error("seal: output buffer too small");
  out[offset] = type;
  const nonce = randomBytes(NONCE_BYTES);
  out.set(nonce, offset + 1);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(associatedData(type, context));
  let pos = offset + 1 + NONCE_BYTES;
  const body = cipher.update(plaintext);
  out.set(body, pos);
  pos += body.length;
  const last = cipher.final();
  out.set(last, pos);
  pos += last.length;
  out.set(cipher.getAuthTag(), pos);
  return pos + TAG_BYTES - offset;
}

/** The type byte of an envelope (or undefined for an empty object). */
export function envelopeType(object: Uint8Array): number | undefined {
  return object[0];
}

/**
 * Decrypt and authenticate an envelope of `type` bound to `context`. Throws
 * AuthenticationFailure when the object is too short, of another type, or fails the tag
 * check (wrong key, modified bytes, another object's name).
 */
export function open(key: Uint8Array, type: number, context: string, object: Uint8Array): Buffer {
  if (object.length < ENVELOPE_OVERHEAD) throw new AuthenticationFailure(`sealed object too short (${object.length} bytes)`);
  if (object[0] !== type)
    throw new AuthenticationFailure(`unexpected object type 0x${object[0]!.toString(16).padStart(2, "0")} (expected 0x${type.toString(16).padStart(2, "0")})`);
  const nonce = object.subarray(1, 1 + NONCE_BYTES);
  const tag = object.subarray(object.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(associatedData(type, context));
  decipher.setAuthTag(tag);
  const body = object.subarray(1 + NONCE_BYTES, object.length - TAG_BYTES);
  const first = decipher.update(body);
  try {
    const last = decipher.final();
    return last.length === 0 ? first : Buffer.concat([first, last]);
  } catch {
    throw new AuthenticationFailure("authentication failed: the object was modified, corrupted or moved");
  }
}
