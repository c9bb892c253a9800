/**
 * Password -> key-encryption key with scrypt (node:crypto, memory-hard). Parameters and
 * salt are stored in each key object, so they can be raised later without breaking keys
 * made with older values. Default N=2^17, r=8, p=1: 128 MiB and about 0.5 s per attempt
 * on a 2-core host (docs/encryption.md).
 *
 * The parameters come from the repository (untrusted): they are bounded (memory 1 GiB,
 * work 8 times the default) so a hostile key object cannot make a client allocate
 * gigabytes or spin for minutes; Repository.open also caps how many key objects it tries.
 */
import { randomBytes, scrypt } from "node:crypto";
import { KEY_BYTES } from "./aead.js";

export interface ScryptParams {
  algorithm: "scrypt";
  /** CPU/memory cost, a power of two. */
  N: number;
  r: number;
  p: number;
  /** Random salt, base64. */
  salt: string;
}

export const DEFAULT_SCRYPT = { N: 2 ** 17, r: 8, p: 1 } as const;
const SALT_BYTES = 32;
const MAX_MEMORY = 1024 * 1024 * 1024;
/**
 * Work of one derivation, in units of N * r * p (time grows with it): at most 8 times the
 * default (2^20), about 5 s here. A key object asking for more is refused, so a planted
 * one cannot make every command spin for minutes (p = 16 with N * r at the memory bound
 * would be 128 times the default).
 */
export const MAX_SCRYPT_WORK = 8 * DEFAULT_SCRYPT.N * DEFAULT_SCRYPT.r * DEFAULT_SCRYPT.p;

/** N * r * p of a key object's parameters: what trying it costs (see MAX_SCRYPT_WORK). */
export function scryptWork(params: { N: number; r: number; p: number }): number {
  return params.N * params.r * params.p;
}

export function newScryptParams(cost: { N: number; r: number; p: number } = DEFAULT_SCRYPT): ScryptParams {
  const params: ScryptParams = { algorithm: "scrypt", N: cost.N, r: cost.r, p: cost.p, salt: randomBytes(SALT_BYTES).toString("base64") };
  const problem = scryptParamsProblem(params);
  if (problem !== null) throw new Error(`scrypt parameters: ${problem}`);
  return params;
}

function scryptMemory(p: { N: number; r: number; p: number }): number {
  return 128 * p.N * p.r + 128 * p.r * p.p + 1024 * 1024;
}

/** null when acceptable, else what is wrong. */
export function scryptParamsProblem(value: unknown): string | null {
  const k = value as Partial<ScryptParams> | null;
  if (typeof k !== "object" || k === null || k.algorithm !== "scrypt") return "unknown key derivation function";
  const { N, r, p, salt } = k;
  if (typeof N !== "number" || !Number.isInteger(N) || N < 2 ** 10 || N > 2 ** 22 || (N & (N - 1)) !== 0)
    return `N=${String(N)} must be a power of two in 2^10..2^22`;
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1 || r > 32) return `r=${String(r)} must be 1..32`;
  if (typeof p !== "number" || !Number.isInteger(p) || p < 1 || p > 16) return `p=${String(p)} must be 1..16`;
  if (scryptMemory({ N, r, p }) > MAX_MEMORY) return "needs more than 1 GiB of memory";
  if (scryptWork({ N, r, p }) > MAX_SCRYPT_WORK) return `N*r*p=${N * r * p} is more work than the limit ${MAX_SCRYPT_WORK} (8 times the default)`;
  if (typeof salt !== "string" || Buffer.from(salt, "base64").length < 16) return "salt missing or shorter than 16 bytes";
  return null;
}

/** The 32-byte key-encryption key for `password` (runs on the libuv thread pool). */
export function deriveKeyEncryptionKey(password: string, params: ScryptParams): Promise<Buffer> {
  const problem = scryptParamsProblem(params);
  if (problem !== null) return Promise.reject(new Error(`scrypt parameters: ${problem}`));
  return new Promise((resolve, reject) => {
    scrypt(
      password.normalize("NFC"),
      Buffer.from(params.salt, "base64"),
      KEY_BYTES,
      { N: params.N, r: params.r, p: params.p, maxmem: scryptMemory(params) },
      (error, key) => {
        if (error) reject(error);
        else resolve(key);
      },
    );
  });
}
