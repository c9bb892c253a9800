/**
 * Deterministic inputs for the chunker's golden vectors and property tests: the same
 * bytes on every machine and run (AES-128-CTR keystreams under fixed keys), so cut points
 * computed once can be committed and compared forever.
 */
import { createCipheriv, createHash } from "node:crypto";

/** `bytes` of AES-128-CTR keystream under a key derived from `seed`: random-looking data. */
export function seededRandom(bytes: number, seed: string): Buffer {
  const key = createHash("sha256").update(`ploopvault chunker input ${seed}`).digest().subarray(0, 16);
  return createCipheriv("aes-128-ctr", key, Buffer.alloc(16)).update(Buffer.alloc(bytes));
}

/** Text-like bytes: 16 frequent letters, spaces, newlines and punctuation. */
export function seededText(bytes: number, seed: string): Buffer {
  const raw = seededRandom(bytes, seed);
  const alphabet = Buffer.from("etaoinshrdlu \n.,");
  for (let i = 0; i < raw.length; i++) raw[i] = alphabet[raw[i]! & 15]!;
  return raw;
}

/** Random data with runs of one byte, text and zeros: every kind of region and edge between them. */
export function seededMix(seed: string): Buffer {
  return Buffer.concat([
    seededText(1_000_003, `${seed} text 1`),
    Buffer.alloc(3 << 20, 0xaa),
    seededRandom(2 << 20, `${seed} random`),
    Buffer.alloc(100_000),
    seededText(777_777, `${seed} text 2`),
    Buffer.alloc(5_000_000, 0x00),
    seededRandom(1_234_567, `${seed} random 2`),
  ]);
}

export interface GoldenInput {
  name: string;
  make(): Buffer;
}

export const GOLDEN_INPUTS: readonly GoldenInput[] = [
  { name: "random 8 MiB", make: () => seededRandom(8 << 20, "golden random") },
  { name: "text-like 4 MiB", make: () => seededText(4 << 20, "golden text") },
  { name: "zeros 9 MiB + 5 bytes", make: () => Buffer.alloc((9 << 20) + 5) },
  { name: "0x5c repeated 3 MiB", make: () => Buffer.alloc(3 << 20, 0x5c) },
  { name: "mix", make: () => seededMix("golden mix") },
  { name: "random 70001 bytes", make: () => seededRandom(70_001, "golden short") },
];

/** Average chunk sizes of the golden vectors: the smallest allowed, the default, and larger. */
export const GOLDEN_AVERAGES: readonly number[] = [4 << 10, 64 << 10, 256 << 10, 1 << 20];
