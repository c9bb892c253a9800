/**
 * The oracle of the fuzz tests: a decoder given hostile input either returns (and the
 * caller checks what it returned) or throws a PloopvaultError subclass whose message is
 * one non-empty line; anything else (TypeError, RangeError, a hang) is a bug. Sync code
 * cannot be interrupted, so "never hangs" is checked as "every call returns within
 * SLOW_MS" (a real infinite loop trips vitest's test timeout instead).
 */
import { expect } from "vitest";
import { PloopvaultError } from "../../src/errors.js";

// Generous: a loaded CI machine can be slow; a hang or super-linear blow-up takes far longer.
export const SLOW_MS = 10_000;

/** Number of runs per property; PLOOPVAULT_FUZZ_RUNS scales them up for a longer session. */
export function runs(base: number): number {
  const factor = Number(process.env.PLOOPVAULT_FUZZ_FACTOR ?? "1");
  return Math.max(1, Math.round(base * (Number.isFinite(factor) && factor > 0 ? factor : 1)));
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: PloopvaultError };

function checkError(error: unknown, errorClass: abstract new (...args: never[]) => PloopvaultError, mentions?: string): PloopvaultError {
  if (!(error instanceof errorClass)) {
    // show what escaped, with its stack, so the failure says where
    throw new Error(`expected a ${errorClass.name}, got ${error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error)}`);
  }
  expect(error.message.length).toBeGreaterThan(0);
  expect(error.message, "error message must be one line").not.toMatch(/[\r\n\u2028\u2029]/);
  if (mentions !== undefined) expect(error.message).toContain(mentions);
  return error;
}

/** Run a sync decoder on hostile input. */
export function attempt<T>(fn: () => T, errorClass: abstract new (...args: never[]) => PloopvaultError = PloopvaultError, mentions?: string): Outcome<T> {
  const started = performance.now();
  try {
    const value = fn();
    return { ok: true, value };
  } catch (error) {
    return { ok: false, error: checkError(error, errorClass, mentions) };
  } finally {
    expect(performance.now() - started, "decoder took too long").toBeLessThan(SLOW_MS);
  }
}

/** Run an async decoder on hostile input, with a time limit. */
export async function attemptAsync<T>(
  fn: () => Promise<T>,
  errorClass: abstract new (...args: never[]) => PloopvaultError = PloopvaultError,
  mentions?: string,
): Promise<Outcome<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`decoder did not finish within ${SLOW_MS} ms`)), SLOW_MS);
  });
  try {
    const value = await Promise.race([fn(), timeout]);
    return { ok: true, value };
  } catch (error) {
    if (error instanceof Error && error.message.startsWith("decoder did not finish")) throw error;
    return { ok: false, error: checkError(error, errorClass, mentions) };
  } finally {
    clearTimeout(timer);
  }
}

/** Mutations of a byte string: flips, overwrites, insertions, deletions, truncation. */
export function mutateBytes(base: Uint8Array, edits: readonly { kind: number; at: number; value: number; len: number }[]): Buffer {
  let buf = Buffer.from(base);
  for (const e of edits) {
    if (buf.length === 0 && e.kind !== 2) continue;
    const at = buf.length === 0 ? 0 : e.at % buf.length;
    switch (e.kind % 5) {
      case 0: // flip bits
        buf[at] = buf[at]! ^ (e.value & 0xff || 1);
        break;
      case 1: // overwrite a little-endian u32 with an interesting value
        {
          const values = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, e.value >>> 0, (e.value & 0xffff) << 16];
          const v = values[e.len % values.length]!;
          const tmp = Buffer.alloc(4);
          tmp.writeUInt32LE(v >>> 0, 0);
          for (let i = 0; i < 4 && at + i < buf.length; i++) buf[at + i] = tmp[i]!;
        }
        break;
      case 2: // insert bytes
        buf = Buffer.concat([buf.subarray(0, at), Buffer.alloc(1 + (e.len % 16), e.value & 0xff), buf.subarray(at)]);
        break;
      case 3: // delete a range
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(Math.min(buf.length, at + 1 + (e.len % 64)))]);
        break;
      default: // truncate
        buf = buf.subarray(0, at);
        break;
    }
  }
  return buf;
}

export const editArb = {
  kind: { min: 0, max: 4 },
  at: { min: 0, max: 1 << 30 },
  value: { min: 0, max: 0xffffffff },
  len: { min: 0, max: 1 << 16 },
};
