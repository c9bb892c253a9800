/**
 * Restore's id check (ChunkCodec.decodeAsync / decodeWithInner) hashes in place where
 * the CPU has SHA-256 instructions and on libuv's pool elsewhere (src/util/sha-instructions.ts):
 * both ways verify the same and refuse the same, in unencrypted and encrypted
 * repositories; and the CPU's flags are read from /proc/cpuinfo as x86 and arm64 print them.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { deriveKeys, newMasterKey } from "../../src/crypto/keys.js";
import { IntegrityError } from "../../src/errors.js";
import { ChunkCodec } from "../../src/repository/chunk-codec.js";
import { cpuinfoHasSha256 } from "../../src/util/sha-instructions.js";

describe("restore's id check, in place or on the pool", () => {
  const keys = deriveKeys(newMasterKey(), randomBytes(16).toString("hex"));
  const codecs: [string, ChunkCodec][] = [
    ["unencrypted", new ChunkCodec({ compressionLevel: 3, keys: null })],
    ["encrypted", new ChunkCodec({ compressionLevel: 3, keys: { dataKey: keys.dataKey, idKey: keys.idKey } })],
  ];
  const chunk = Buffer.concat([randomBytes(100_000), Buffer.alloc(150_000, 0x61)]);
  const other = Buffer.concat([Buffer.alloc(150_000, 0x61), randomBytes(100_000)]);

  for (const [kind, codec] of codecs) {
    for (const hashInPlace of [true, false]) {
      it(`${kind}, ${hashInPlace ? "hashed in place" : "hashed on libuv's pool"}: the chunk back, and another chunk's content under its name refused`, async () => {
        const id = codec.id(chunk);
        const idHex = id.toString("hex");
        const { plain, inner } = await codec.decodeWithInner(codec.encode(chunk, id), idHex, 1 << 20, hashInPlace);
        expect(plain.equals(chunk)).toBe(true);
        expect(inner[0]).toBe(0x01);
        expect((await codec.decodeAsync(codec.encode(chunk, id), idHex, 1 << 20, hashInPlace)).equals(chunk)).toBe(true);
        // a stored object that opens (encrypted: sealed under this chunk's name) but holds other bytes
        const swapped = codec.encode(other, id);
        const error = await codec.decodeWithInner(swapped, idHex, 1 << 20, hashInPlace).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(IntegrityError);
        expect((error as Error).message).toMatch(new RegExp(`^chunk ${idHex}: content does not match its id`));
      });
    }
  }
});

describe("SHA-256 instructions in /proc/cpuinfo", () => {
  it("finds x86's sha_ni and arm64's sha2 on their flags lines, nothing elsewhere", () => {
    expect(cpuinfoHasSha256("processor\t: 0\nflags\t\t: fpu vme sse4_2 avx2 sha_ni avx512f\nbugs\t\t: spectre_v1\n")).toBe(true);
    expect(cpuinfoHasSha256("processor\t: 0\nflags\t\t: fpu vme sse4_2 avx2 avx512f\nbugs\t\t: spectre_v1\n")).toBe(false);
    expect(cpuinfoHasSha256("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n")).toBe(true);
    expect(cpuinfoHasSha256("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 crc32\n")).toBe(false);
    expect(cpuinfoHasSha256("model name\t: sha_ni emulator\nflags\t\t: fpu\n")).toBe(false);
    expect(cpuinfoHasSha256("")).toBe(false);
  });
});
