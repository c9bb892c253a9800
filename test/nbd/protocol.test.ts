/**
 * The NBD message parsers and reply planning (src/nbd/protocol.ts) on fixed vectors and
 * random input: malformed option data is an error value, never a throw or a huge
 * allocation; read plans cover the request exactly; status descriptors never exceed it.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BASE_ALLOCATION,
  inBounds,
  isOptionDataError,
  matchMetaContexts,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  parseInfoRequest,
  parseMetaContextRequest,
  parseRequest,
  planBlockStatus,
  planRead,
  type Extent,
} from "../../src/nbd/protocol.js";

function infoData(name: string, requests: number[]): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(6 + n.length + 2 * requests.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(requests.length, 4 + n.length);
  requests.forEach((r, i) => b.writeUInt16BE(r, 6 + n.length + 2 * i));
  return b;
}

function metaData(name: string, queries: string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(name), Buffer.alloc(4)];
  parts[0]!.writeUInt32BE(Buffer.byteLength(name));
  parts[2]!.writeUInt32BE(queries.length);
  for (const q of queries) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(Buffer.byteLength(q));
    parts.push(len, Buffer.from(q));
  }
  return Buffer.concat(parts);
}

/** Extents tiling [0, size) from a list of (length, hole) pieces. */
function tile(pieces: { length: number; hole: boolean }[]): Extent[] {
  let at = 0;
  return pieces.map((p) => {
    const e = { offset: at, length: p.length, hole: p.hole };
    at += p.length;
    return e;
  });
}

describe("NBD option data", () => {
  it("parses NBD_OPT_GO data and rejects inconsistent lengths", () => {
    expect(parseInfoRequest(infoData("101/x", [3, 1]))).toEqual({ name: "101/x", requests: [3, 1] });
    expect(parseInfoRequest(infoData("", []))).toEqual({ name: "", requests: [] });
    const claimsMore = infoData("ab", [3]);
    claimsMore.writeUInt32BE(0xffffffff, 0);
    expect(parseInfoRequest(claimsMore)).toMatchObject({ error: NBD_REP_ERR_INVALID });
    const countTooBig = infoData("ab", [3]);
    countTooBig.writeUInt16BE(500, 6);
    expect(parseInfoRequest(countTooBig)).toMatchObject({ error: NBD_REP_ERR_INVALID });
    expect(parseInfoRequest(Buffer.alloc(3))).toMatchObject({ error: NBD_REP_ERR_INVALID });
    expect(parseInfoRequest(infoData("a\0b", []))).toMatchObject({ error: NBD_REP_ERR_INVALID });
    expect(parseInfoRequest(infoData("x".repeat(5000), []))).toMatchObject({ error: NBD_REP_ERR_TOO_BIG });
  });

  it("parses meta context queries; SET selects only base:allocation, LIST also expands base:", () => {
    expect(parseMetaContextRequest(metaData("", ["base:allocation", "qemu:dirty-bitmap:x"]))).toEqual({
      name: "",
      queries: ["base:allocation", "qemu:dirty-bitmap:x"],
    });
    const truncated = metaData("", ["base:allocation"]).subarray(0, 20);
    expect(parseMetaContextRequest(truncated)).toMatchObject({ error: NBD_REP_ERR_INVALID });
    const many = metaData("", []);
    many.writeUInt32BE(0xffffffff, 4);
    expect(parseMetaContextRequest(many)).toMatchObject({ error: NBD_REP_ERR_TOO_BIG });
    expect(matchMetaContexts([], false)).toEqual([]);
    expect(matchMetaContexts([], true)).toEqual([BASE_ALLOCATION]);
    expect(matchMetaContexts(["base:"], false)).toEqual([]);
    expect(matchMetaContexts(["base:"], true)).toEqual([BASE_ALLOCATION]);
    expect(matchMetaContexts(["qemu:allocation-depth", "base:allocation"], false)).toEqual([BASE_ALLOCATION]);
  });

  it("never throws on random option data", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const data = Buffer.from(bytes);
        for (const parsed of [parseInfoRequest(data), parseMetaContextRequest(data)]) {
          if (isOptionDataError(parsed)) expect(parsed.message).toBeTruthy();
        }
      }),
      { numRuns: 3000 },
    );
  });

  it("reads the request header; offsets beyond 2^53 stay exact for the bounds check", () => {
    const b = Buffer.alloc(28);
    b.writeUInt32BE(0x25609513, 0);
    b.writeUInt16BE(4, 4);
    b.writeUInt16BE(0, 6);
    b.write("handle!!", 8);
    b.writeBigUInt64BE(0xffffffffffffffffn, 16);
    b.writeUInt32BE(512, 24);
    const r = parseRequest(b)!;
    expect(r).toMatchObject({ flags: 4, type: 0, length: 512, offset: 0xffffffffffffffffn });
    expect(r.handle.toString()).toBe("handle!!");
    expect(inBounds(r.offset, r.length, 2 ** 40)).toBe(false);
    expect(inBounds(0n, 512, 512)).toBe(true);
    expect(inBounds(1n, 512, 512)).toBe(false);
    b.writeUInt32BE(0x25609514, 0);
    expect(parseRequest(b)).toBeNull();
  });
});

describe("NBD reply planning", () => {
  const pieces = fc.array(fc.record({ length: fc.integer({ min: 1, max: 5000 }), hole: fc.boolean() }), { minLength: 1, maxLength: 20 });

  it("a structured read's chunks tile the request exactly, merging neighbours of one kind", () => {
    fc.assert(
      fc.property(pieces, fc.nat(), fc.nat(), fc.boolean(), (ps, a, b, df) => {
        const extents = tile(ps);
        const size = extents.reduce((s, e) => s + e.length, 0);
        const offset = a % size;
        const length = b % (size - offset + 1);
        const plan = planRead(extents, offset, length, df);
        let at = offset;
        for (const [i, p] of plan.entries()) {
          expect(p.offset).toBe(at);
          expect(p.length).toBeGreaterThan(0);
          if (i > 0) expect(p.hole).not.toBe(plan[i - 1]!.hole);
          at += p.length;
        }
        expect(at).toBe(offset + length);
        if (df) expect(plan.length).toBeLessThanOrEqual(1);
        // every byte's kind agrees with the extents (unless DF folded holes into data)
        if (!df) {
          for (const p of plan) {
            const e = extents.find((x) => x.offset <= p.offset && p.offset < x.offset + x.length)!;
            expect(p.hole).toBe(e.hole);
          }
        }
      }),
    );
  });

  it("block status descriptors alternate, stay inside the request, REQ_ONE gives one", () => {
    fc.assert(
      fc.property(pieces, fc.nat(), fc.nat(), fc.boolean(), (ps, a, b, reqOne) => {
        const extents = tile(ps);
        const size = extents.reduce((s, e) => s + e.length, 0);
        const offset = a % size;
        const length = 1 + (b % (size - offset));
        const ds = planBlockStatus(extents, offset, length, reqOne);
        expect(ds.length).toBeGreaterThan(0);
        if (reqOne) expect(ds).toHaveLength(1);
        const total = ds.reduce((s, d) => s + d.length, 0);
        if (reqOne) expect(total).toBeLessThanOrEqual(length);
        else expect(total).toBe(length);
        for (let i = 1; i < ds.length; i++) expect(ds[i]!.flags).not.toBe(ds[i - 1]!.flags);
        for (const d of ds) expect([0, NBD_STATE_HOLE | NBD_STATE_ZERO]).toContain(d.flags);
      }),
    );
  });
});
