/**
 * The pure crypto formats: sealed envelopes (AES-256-GCM), key objects (scrypt-wrapped
 * master key), chunk codec (HMAC ids, compress-then-encrypt) and the config's keyCheck.
 * AES-256-GCM itself is checked against a published test vector through node:crypto, and
 * the envelope layout is opened by hand (independently of aead.ts) to prove it is
 * type byte + nonce + ciphertext + tag.
 */
import { createDecipheriv, createHash, createHmac, randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ENVELOPE_OVERHEAD, NONCE_BYTES, open, seal, SEALED_CHUNK, SEALED_FILE, SEALED_MANIFEST, TAG_BYTES } from "../../src/crypto/aead.js";
import { AuthenticationFailure } from "../../src/crypto/errors.js";
import { createKeyFile, decodeKeyFile, encodeKeyFile, unwrapMasterKey } from "../../src/crypto/key-file.js";
import { deriveKeyEncryptionKey, newScryptParams, scryptParamsProblem } from "../../src/crypto/kdf.js";
import { deriveKeys, keyCheckMatches, keyCheckValue, newMasterKey } from "../../src/crypto/keys.js";
import { passwordProvider } from "../../src/crypto/password.js";
import { IntegrityError, UsageError } from "../../src/errors.js";
import { ChunkCodec, chunkId } from "../../src/repository/chunk-codec.js";
import { canonicalConfig, decodeConfig, encodeConfig, newEncryptionConfig, newRepositoryConfig } from "../../src/repository/config.js";
import { chunkerParamsForAverage } from "../../src/chunker/params.js";

const FAST = { N: 1024, r: 8, p: 1 };
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

describe("sealed envelope", () => {
  it("AES-256-GCM in node:crypto matches the McGrew-Viega test case 16 vector", () => {
    const key = Buffer.from("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "hex");
    const iv = Buffer.from("cafebabefacedbaddecaf888", "hex");
    const aad = Buffer.from("feedfacedeadbeeffeedfacedeadbeefabaddad2", "hex");
    const ct = Buffer.from("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662", "hex");
    const tag = Buffer.from("76fc6ece0f4e1768cddf8853bb2d551b", "hex");
    const d = createDecipheriv("aes-256-gcm", key, iv);
    d.setAAD(aad);
    d.setAuthTag(tag);
    const plain = Buffer.concat([d.update(ct), d.final()]);
    expect(plain.toString("hex")).toBe(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
  });

  it("is type byte + nonce + ciphertext + tag, bound to type and context", () => {
    const key = randomBytes(32);
    const plain = Buffer.from("hello, ploop");
    const sealed = seal(key, SEALED_MANIFEST, "backups/101/x/manifest", plain);
    expect(sealed.length).toBe(plain.length + ENVELOPE_OVERHEAD);
    expect(sealed[0]).toBe(SEALED_MANIFEST);
    // Opened by hand: the AAD is type byte, "ploopvault\0", context.
    const d = createDecipheriv("aes-256-gcm", key, sealed.subarray(1, 1 + NONCE_BYTES));
    d.setAAD(Buffer.concat([Buffer.from([SEALED_MANIFEST]), Buffer.from("ploopvault\0backups/101/x/manifest")]));
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    expect(Buffer.concat([d.update(sealed.subarray(1 + NONCE_BYTES, sealed.length - TAG_BYTES)), d.final()])).toEqual(plain);
    expect(open(key, SEALED_MANIFEST, "backups/101/x/manifest", sealed)).toEqual(plain);
    expect(() => open(key, SEALED_MANIFEST, "backups/101/y/manifest", sealed)).toThrow(AuthenticationFailure);
    expect(() => open(key, SEALED_FILE, "backups/101/x/manifest", sealed)).toThrow(AuthenticationFailure);
    const retyped = Buffer.from(sealed);
    retyped[0] = SEALED_FILE;
    expect(() => open(key, SEALED_FILE, "backups/101/x/manifest", retyped)).toThrow(AuthenticationFailure);
    expect(() => open(randomBytes(32), SEALED_MANIFEST, "backups/101/x/manifest", sealed)).toThrow(AuthenticationFailure);
    expect(() => open(key, SEALED_MANIFEST, "backups/101/x/manifest", sealed.subarray(0, 20))).toThrow(AuthenticationFailure);
  });

  it("detects every single flipped bit", () => {
    const key = randomBytes(32);
    const sealed = seal(key, SEALED_FILE, "f", randomBytes(100));
    fc.assert(
      fc.property(fc.integer({ min: 0, max: sealed.length * 8 - 1 }), (bit) => {
        const bad = Buffer.from(sealed);
        bad[bit >> 3]! ^= 1 << (bit & 7);
        expect(() => open(key, SEALED_FILE, "f", bad)).toThrow(AuthenticationFailure);
      }),
      { numRuns: 300 },
    );
  });

  it("uses a fresh nonce for every object, even for equal plaintexts", () => {
    const key = randomBytes(32);
    const nonces = new Set<string>();
    for (let i = 0; i < 2000; i++)
      nonces.add(
        seal(key, SEALED_CHUNK, "c", Buffer.alloc(16))
          .subarray(1, 1 + NONCE_BYTES)
          .toString("hex"),
      );
    expect(nonces.size).toBe(2000);
  });
});

describe("keys", () => {
  const repoId = randomBytes(16).toString("hex");

  it("derives independent subkeys from the master key and repository id", () => {
    const master = newMasterKey();
    const a = deriveKeys(master, repoId);
    const b = deriveKeys(master, randomBytes(16).toString("hex"));
    const all = [a.dataKey, a.idKey, a.checkKey, b.dataKey, b.idKey, b.checkKey].map((k) => Buffer.from(k).toString("hex"));
    expect(new Set(all).size).toBe(6);
    expect(Buffer.from(deriveKeys(master, repoId).dataKey)).toEqual(Buffer.from(a.dataKey));
  });

  it("wraps the master key under a password; a wrong password or a moved key object does not open it", async () => {
    const master = newMasterKey();
    const key = await createKeyFile(master, "correct horse", repoId, { host: "h", user: "u", created: new Date() }, FAST);
    const decoded = decodeKeyFile(encodeKeyFile(key), "keys/x");
    expect(decoded).toEqual(key);
    expect(JSON.stringify(decoded)).not.toContain("correct horse");
    expect(JSON.stringify(decoded)).not.toContain(master.toString("base64"));
    expect(await unwrapMasterKey(decoded, "correct horse", repoId)).toEqual(master);
    expect(await unwrapMasterKey(decoded, "correct horsE", repoId)).toBeNull();
    expect(await unwrapMasterKey(decoded, "correct horse", randomBytes(16).toString("hex"))).toBeNull();
    expect(await unwrapMasterKey({ ...decoded, id: randomBytes(16).toString("hex") }, "correct horse", repoId)).toBeNull();
  });

  it("bounds hostile scrypt parameters from a key object", async () => {
    expect(scryptParamsProblem(newScryptParams())).toBeNull();
    const salt = randomBytes(32).toString("base64");
    expect(scryptParamsProblem({ algorithm: "scrypt", N: 2 ** 30, r: 8, p: 1, salt })).toMatch(/N=/);
    expect(scryptParamsProblem({ algorithm: "scrypt", N: 3000, r: 8, p: 1, salt })).toMatch(/power of two/);
    expect(scryptParamsProblem({ algorithm: "scrypt", N: 2 ** 22, r: 32, p: 1, salt })).toMatch(/memory/);
    expect(scryptParamsProblem({ algorithm: "argon2", N: 1024, r: 8, p: 1, salt })).toMatch(/unknown/);
    expect(scryptParamsProblem({ algorithm: "scrypt", N: 1024, r: 8, p: 1, salt: "" })).toMatch(/salt/);
    await expect(deriveKeyEncryptionKey("x", { algorithm: "scrypt", N: 2 ** 30, r: 8, p: 1, salt })).rejects.toThrow(/N=/);
    const key = await createKeyFile(newMasterKey(), "pw", repoId, { host: "h", user: "u", created: new Date() }, FAST);
    expect(() => decodeKeyFile(Buffer.from(JSON.stringify({ ...key, kdf: { ...key.kdf, N: 2 ** 30 } })), "keys/k")).toThrow(/keys\/k: invalid key object: kdf/);
    expect(() => decodeKeyFile(Buffer.from("{"), "keys/k")).toThrow(/not valid JSON/);
  });

  it("keyCheck authenticates every parameter of the config", () => {
    const keys = deriveKeys(newMasterKey(), repoId);
    const config = { ...newRepositoryConfig(chunkerParamsForAverage(256 << 10), 3, new Date()), encryption: newEncryptionConfig("") };
    const check = keyCheckValue(keys.checkKey, canonicalConfig(config));
    const sealedConfig = { ...config, encryption: newEncryptionConfig(check) };
    expect(decodeConfig(encodeConfig(sealedConfig), "config")).toEqual(sealedConfig);
    expect(keyCheckMatches(keys.checkKey, canonicalConfig(sealedConfig), check)).toBe(true);
    const changed = [
      { ...sealedConfig, chunker: chunkerParamsForAverage(64 << 10) },
      { ...sealedConfig, compression: { algorithm: "zstd" as const, level: 19 } },
      { ...sealedConfig, id: randomBytes(16).toString("hex") },
      { ...sealedConfig, created: new Date(0).toISOString() },
    ];
    for (const c of changed) expect(keyCheckMatches(keys.checkKey, canonicalConfig(c), check)).toBe(false);
    expect(keyCheckMatches(deriveKeys(newMasterKey(), repoId).checkKey, canonicalConfig(sealedConfig), check)).toBe(false);
  });

  it("an unknown encryption scheme is refused with a clear message", () => {
    const config = {
      ...newRepositoryConfig(chunkerParamsForAverage(256 << 10), 3, new Date()),
      encryption: { ...newEncryptionConfig("0".repeat(64)), scheme: "future-v9" },
    };
    expect(() => decodeConfig(Buffer.from(JSON.stringify(config)), "repo/config")).toThrow(/repo\/config: encryption scheme "future-v9" is not supported/);
  });
});

describe("chunk codec", () => {
  const keys = deriveKeys(newMasterKey(), randomBytes(16).toString("hex"));
  const codec = new ChunkCodec({ compressionLevel: 3, keys: { dataKey: keys.dataKey, idKey: keys.idKey } });
  const plainCodec = new ChunkCodec({ compressionLevel: 3, keys: null });
  const text = Buffer.from("SECRET-MARKER ".repeat(20000));

  it("ids are HMAC-SHA256 under the id key (SHA-256 when unencrypted); equal data, equal id", () => {
    expect(codec.id(text)).toEqual(createHmac("sha256", Buffer.from(keys.idKey)).update(text).digest());
    expect(codec.id(text)).not.toEqual(createHash("sha256").update(text).digest());
    expect(plainCodec.id(text)).toEqual(chunkId(text));
    expect(codec.id(Buffer.from(text))).toEqual(codec.id(text));
  });

  it("compresses before encrypting; decode authenticates and verifies the id", () => {
    const id = codec.id(text);
    const idHex = id.toString("hex");
    const object = codec.encode(text, id);
    expect(object[0]).toBe(0x02);
    expect(object.length).toBeLessThan(text.length / 10); // compressed first
    expect(object.includes(Buffer.from("SECRET-MARKER"))).toBe(false);
    expect(object.subarray(1, 5).equals(ZSTD_MAGIC)).toBe(false);
    expect(codec.decode(object, idHex, 1 << 20).equals(text)).toBe(true); // not toEqual: byte-wise diffing of 280 KB is slow
    expect(codec.isOwnFormat(object)).toBe(true);
    expect(plainCodec.isOwnFormat(object)).toBe(false);
    // another chunk's object under this id (a swapped object) fails
    const other = Buffer.from("OTHER ".repeat(1000));
    const otherObject = codec.encode(other);
    expect(() => codec.decode(otherObject, idHex, 1 << 20)).toThrow(IntegrityError);
    expect(() => codec.decode(otherObject, idHex, 1 << 20)).toThrow(new RegExp(`chunk ${idHex}: authentication failed`));
    // an unencrypted object in an encrypted repository is refused
    expect(() => codec.decode(plainCodec.encode(text), idHex, 1 << 20)).toThrow(/not an encrypted chunk/);
    const flipped = Buffer.from(object);
    flipped[flipped.length >> 1]! ^= 0x01;
    expect(() => codec.decode(flipped, idHex, 1 << 20)).toThrow(/authentication failed/);
  });

  it("worker specs are copies, not views of pooled memory", () => {
    const spec = codec.workerSpec();
    expect(spec.keys!.dataKey.buffer.byteLength).toBe(32);
    expect(spec.keys!.idKey.buffer.byteLength).toBe(32);
    expect(new ChunkCodec(spec).id(text)).toEqual(codec.id(text));
  });
});

describe("password sources", () => {
  it("prefers --password-file, then PLOOPVAULT_PASSWORD; without either and no terminal it is a usage error", async () => {
    expect(passwordProvider({}, {}).given).toBe(false);
    await expect(passwordProvider({}, { PLOOPVAULT_PASSWORD: "a" }).get("x")).resolves.toBe("a");
    await expect(passwordProvider({ passwordFile: "/nonexistent/pw" }, { PLOOPVAULT_PASSWORD: "a" }).get("x")).rejects.toThrow(
      /--password-file \/nonexistent\/pw: cannot read/,
    );
    if (!process.stdin.isTTY) await expect(passwordProvider({}, {}).get("repository r is encrypted")).rejects.toThrow(UsageError);
  });
});
