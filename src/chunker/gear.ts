/**
 * The gear table of the content-defined chunker: 256 pseudo-random 32-bit values.
 * Derived from SHA-256 of a fixed label so it is reproducible and documented, never
 * random per run: the table is part of the repository's chunking parameters, and
 * changing it would change every cut point (and so all deduplication).
 */
import { createHash } from "node:crypto";

export const GEAR_TABLE_LABEL = "ploopvault gear table v1";

function buildGearTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    const digest = createHash("sha256").update(`${GEAR_TABLE_LABEL} ${i}`).digest();
    table[i] = digest.readUInt32LE(0);
  }
  return table;
}

export const GEAR: Uint32Array = buildGearTable();
