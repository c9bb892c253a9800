/**
 * Chunking parameters, fixed per repository (stored in its config): every backup into
 * one repository must cut identical data identically, or deduplication is lost.
 */
import { PloopvaultError } from "../errors.js";

export const CHUNKER_ALGORITHM = "fastcdc-gear32-v1";

export interface ChunkerParams {
  algorithm: typeof CHUNKER_ALGORITHM;
  minSize: number;
  avgSize: number;
  maxSize: number;
}

/** Default average chunk size; see docs/chunking.md for the measurement behind it. */
export const DEFAULT_AVG_CHUNK = 256 << 10;

/** min = avg/4, max = avg*4: the FastCDC paper's normalized-chunking ranges. */
export function chunkerParamsForAverage(avgSize: number): ChunkerParams {
  const params: ChunkerParams = {
    algorithm: CHUNKER_ALGORITHM,
    minSize: avgSize / 4,
    avgSize,
    maxSize: avgSize * 4,
  };
  validateChunkerParams(params, "chunker parameters");
  return params;
}

const MIN_AVG = 4 << 10;
const MAX_AVG = 16 << 20;

export function validateChunkerParams(params: ChunkerParams, where: string): void {
  const { algorithm, minSize, avgSize, maxSize } = params;
  // values may come from a damaged object: show them escaped, so the message stays one line
  const show = (v: unknown): string => (typeof v === "number" ? String(v) : (JSON.stringify(v) ?? String(v)).slice(0, 80));
  if (algorithm !== CHUNKER_ALGORITHM) {
    throw new PloopvaultError(`${where}: unknown chunker algorithm ${show(algorithm)}`);
  }
  const isPow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!isPow2(avgSize) || avgSize < MIN_AVG || avgSize > MAX_AVG) {
    throw new PloopvaultError(`${where}: average chunk size ${show(avgSize)} must be a power of two between ${MIN_AVG} and ${MAX_AVG}`);
  }
  if (!Number.isInteger(minSize) || !Number.isInteger(maxSize) || minSize < 64 || minSize > avgSize || maxSize < avgSize || maxSize > 64 << 20) {
    throw new PloopvaultError(`${where}: chunk sizes must satisfy 64 <= min (${show(minSize)}) <= avg (${show(avgSize)}) <= max (${show(maxSize)}) <= 64 MiB`);
  }
}
