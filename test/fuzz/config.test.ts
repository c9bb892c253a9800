/**
 * Fuzzing the repository config decoder (src/repository/config.ts): random bytes, random
 * JSON, and valid configs (plain and encrypted) with values replaced, removed or retyped
 * at random paths. decodeConfig returns a config with the types the code relies on, or
 * throws a one-line PloopvaultError naming the object; never anything else, never slowly.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { chunkerParamsForAverage } from "../../src/chunker/params.js";
import { decodeConfig, encodeConfig, newEncryptionConfig, newRepositoryConfig, type RepositoryConfig } from "../../src/repository/config.js";
import { attempt, editArb, mutateBytes, runs } from "./oracle.js";

const WHERE = "s3://bucket/repo/config";

const configArb: fc.Arbitrary<RepositoryConfig> = fc
  .record({
    avg: fc.constantFrom(4096, 65536, 262144, 1 << 20),
    level: fc.integer({ min: -7, max: 22 }),
    encrypted: fc.boolean(),
    keyCheck: fc.stringMatching(/^[0-9a-f]{64}$/),
  })
  .map(({ avg, level, encrypted, keyCheck }) => {
    const config = newRepositoryConfig(chunkerParamsForAverage(avg), level, new Date(0));
    return encrypted ? { ...config, encryption: newEncryptionConfig(keyCheck) } : config;
  });

function mutateJson(value: unknown, path: readonly number[], replacement: unknown, remove: boolean): unknown {
  if (path.length === 0 || typeof value !== "object" || value === null) return replacement;
  const keys = Object.keys(value);
  if (keys.length === 0) return replacement;
  const key = keys[path[0]! % keys.length]!;
  const copy: Record<string, unknown> = Array.isArray(value) ? ([...value] as unknown as Record<string, unknown>) : { ...(value as Record<string, unknown>) };
  if (remove && path.length === 1) delete copy[key];
  else copy[key] = mutateJson(copy[key], path.slice(1), replacement, remove);
  return copy;
}

const replacement = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(null, 0, -1, 0.5, 2 ** 53, 1e308, "", "a\nb", "x".repeat(1000), [], {}, true, "__proto__"),
);

function checkAccepted(c: RepositoryConfig): void {
  expect(c.format).toBe("ploopvault-repository");
  expect(c.id).toMatch(/^[0-9a-f]{32}$/);
  expect(Number.isInteger(c.chunker.avgSize)).toBe(true);
  expect(c.chunker.minSize).toBeLessThanOrEqual(c.chunker.avgSize);
  expect(c.chunker.avgSize).toBeLessThanOrEqual(c.chunker.maxSize);
  expect(Number.isInteger(c.compression.level)).toBe(true);
  if (c.encryption !== null) expect(c.encryption.keyCheck).toMatch(/^[0-9a-f]{64}$/);
}

describe("repository config decoder (fuzz)", () => {
  it("valid configs round-trip", () => {
    fc.assert(
      fc.property(configArb, (c) => {
        expect(decodeConfig(encodeConfig(c), WHERE)).toEqual(c);
      }),
      { numRuns: runs(200) },
    );
  });

  it("random bytes and random JSON", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
          fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "null")),
        ),
        (body) => {
          const r = attempt(() => decodeConfig(body, WHERE), undefined, WHERE);
          if (r.ok) checkAccepted(r.value);
        },
      ),
      { numRuns: runs(3000) },
    );
  });

  it("valid configs with values replaced, removed or retyped", () => {
    fc.assert(
      fc.property(configArb, fc.array(fc.nat({ max: 20 }), { minLength: 1, maxLength: 3 }), replacement, fc.boolean(), (c, path, value, remove) => {
        const body = Buffer.from(JSON.stringify(mutateJson(JSON.parse(encodeConfig(c).toString()), path, value, remove)) ?? "null");
        const r = attempt(() => decodeConfig(body, WHERE), undefined, WHERE);
        if (r.ok) checkAccepted(r.value);
      }),
      { numRuns: runs(3000) },
    );
  });

  it("valid configs with mutated bytes; deeply nested JSON", () => {
    fc.assert(
      fc.property(
        configArb,
        fc.array(fc.record({ kind: fc.integer(editArb.kind), at: fc.integer(editArb.at), value: fc.integer(editArb.value), len: fc.integer(editArb.len) }), {
          minLength: 1,
          maxLength: 4,
        }),
        (c, edits) => {
          const r = attempt(() => decodeConfig(mutateBytes(encodeConfig(c), edits), WHERE), undefined, WHERE);
          if (r.ok) checkAccepted(r.value);
        },
      ),
      { numRuns: runs(3000) },
    );
    for (const body of [
      "[".repeat(100_000),
      `${'{"a":'.repeat(100_000)}1${"}".repeat(100_000)}`,
      `{"format":"ploopvault-repository","version":1,"id":"${"0".repeat(32)}","chunker":${"[".repeat(50_000)}${"]".repeat(50_000)}}`,
    ]) {
      attempt(() => decodeConfig(Buffer.from(body), WHERE), undefined, WHERE);
    }
  });
});
