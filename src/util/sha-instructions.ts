/**
 * Whether this CPU computes SHA-256 with instructions of its own (x86 SHA-NI, the ARMv8
 * SHA2 extension). OpenSSL then hashes at ~2 GB/s a core, and hashing a restored chunk in
 * place on the calling thread costs less than WebCrypto's copy of it for libuv's pool;
 * without them (Intel Xeons before Ice Lake) hashing is 3-4 times slower and belongs on
 * the pool, beside the thread that decompresses (docs/performance.md, "Morning of
 * 2026-12-05"). Read once from /proc/cpuinfo; false where that says nothing.
 */
import { readFileSync } from "node:fs";

/** The answer for a /proc/cpuinfo text: a "flags" (x86) or "Features" (arm64) line naming sha_ni / sha2. */
export function cpuinfoHasSha256(cpuinfo: string): boolean {
  return /^(flags|Features)\s*:.*\b(sha_ni|sha2)\b/m.test(cpuinfo);
}

let cached: boolean | undefined;

export function cpuHasSha256Instructions(): boolean {
  if (cached === undefined) {
    try {
      cached = cpuinfoHasSha256(readFileSync("/proc/cpuinfo", "utf8"));
    } catch {
      cached = false;
    }
  }
  return cached;
}
