/**
 * Key objects are untrusted input (issue 12, item 9): someone who can write the bucket can
 * plant key objects. Opening a repository tries the password on them, one scrypt each, so
 * planted ones must not make every command spin: an expensive one (more than 8 times the
 * default work) is never derived, keys are tried cheapest first, at most 32 key objects
 * are read (unless this host knows which key opened the repository last).
 *
 * scrypt is wrapped (a counting spy, fault-injection style) to see which derivations run.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { chunkerParamsForAverage } from "../../src/chunker/params.js";
import { createKeyFile, encodeKeyFile, keyObjectName } from "../../src/crypto/key-file.js";
import * as kdf from "../../src/crypto/kdf.js";
import { newMasterKey } from "../../src/crypto/keys.js";
import { passwordProvider } from "../../src/crypto/password.js";
import { newRepositoryConfig } from "../../src/repository/config.js";
import { MAX_KEY_OBJECTS, Repository } from "../../src/repository/repository.js";
import { LocalDirectoryStore } from "../../src/uploader/local.js";

vi.mock("../../src/crypto/kdf.js", async (importOriginal) => {
  const original = await importOriginal<typeof import("../../src/crypto/kdf.js")>();
  return { ...original, deriveKeyEncryptionKey: vi.fn(original.deriveKeyEncryptionKey) };
});

const FAST = { N: 1024, r: 8, p: 1 };
const PASSWORD = "the operator's password";
const derive = vi.mocked(kdf.deriveKeyEncryptionKey);
const owner = { host: "attacker", user: "nobody", created: new Date() };

describe("key objects planted in the bucket", () => {
  let dir: string;
  let store: LocalDirectoryStore;
  let repo: Repository;
  /** Open with the operator's password; `derive` then counts this open's derivations only. */
  const open = (preferredKeyId?: string): Promise<Repository> => {
    derive.mockClear();
    return Repository.open(store, {
      password: passwordProvider({}, { PLOOPVAULT_PASSWORD: PASSWORD }),
      ...(preferredKeyId === undefined ? {} : { preferredKeyId }),
    });
  };

  /** A key object for another (unknown) password, with these KDF parameters, named with this id. */
  async function plant(id: string, cost: { N: number; r: number; p: number }): Promise<void> {
    const key = await createKeyFile(newMasterKey(), "attacker's password", repo.config.id, owner, FAST);
    await store.put(keyObjectName(id), encodeKeyFile({ ...key, id, kdf: { ...key.kdf, ...cost } }));
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "pv-keys-"));
    store = new LocalDirectoryStore(join(dir, "repo"));
    await store.ensureContainer();
    repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(64 << 10), 3, new Date()), { password: PASSWORD, kdfCost: FAST });
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("a key object asking for 16 times the default scrypt work is never derived", async () => {
    // sorts before the real key; p = 16 at N = 2^17, r = 8: 128 MiB, about 9 s per attempt
    await plant("00000000000000000000000000000000", { N: 2 ** 17, r: 8, p: 16 });
    const opened = await open();
    expect(opened.keyId).toBe(repo.keyId);
    expect(derive.mock.calls.map(([, params]) => kdf.scryptWork(params))).toEqual([kdf.scryptWork(FAST)]);
  });

  it("key objects are tried cheapest first", async () => {
    for (const id of ["00000000000000000000000000000001", "00000000000000000000000000000002", "00000000000000000000000000000003"]) {
      await plant(id, kdf.DEFAULT_SCRYPT);
    }
    const opened = await open();
    expect(opened.keyId).toBe(repo.keyId);
    expect(derive).toHaveBeenCalledTimes(1);
  });

  it(`more than ${MAX_KEY_OBJECTS} key objects are refused, unless this host knows which key opened the repository`, async () => {
    for (let i = 0; i < MAX_KEY_OBJECTS; i++) await plant(i.toString(16).padStart(32, "0"), FAST);
    const refused = open();
    await expect(refused).rejects.toThrow(new RegExp(`has ${MAX_KEY_OBJECTS + 1} key objects under keys/, more than the ${MAX_KEY_OBJECTS} ploopvault reads`));
    expect(derive).not.toHaveBeenCalled();
    const opened = await open(repo.keyId!);
    expect(opened.keyId).toBe(repo.keyId);
    expect(derive).toHaveBeenCalledTimes(1);
  });
});
