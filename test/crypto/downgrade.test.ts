/**
 * Encryption downgrade (issue 12, item 7), through the built CLI against a local directory
 * and the test S3 server (RGW). Someone who can write the bucket replaces the config of an
 * encrypted repository with a plaintext one. With the password from the environment or a
 * file that was already refused; with the prompt path (no password given: cron would fail,
 * an operator on a terminal would not be asked at all) the next backup stored plaintext
 * chunks and a restore accepted plaintext manifests. The state dir now remembers that the
 * repository is encrypted, and with which master key.
 */
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeyFile, encodeKeyFile, keyObjectName } from "../../src/crypto/key-file.js";
import { deriveKeys, keyCheckValue, newMasterKey } from "../../src/crypto/keys.js";
import { canonicalConfig, newEncryptionConfig, type RepositoryConfig } from "../../src/repository/config.js";
import { jsonLines, localRepo, runCli, s3Repo, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { writeClusterToTop } from "../helpers/delta-writer.js";
import { ploopInit } from "../helpers/ploop-tool.js";

const PASSWORD = "downgrade test password";
const HEAVY = 300_000;

function expectOneLineFailure(r: CliResult, pattern: RegExp, code = 1): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
}

describe.each(["local", "s3"] as const)("encryption downgrade, %s", (kind) => {
  let repo: RepoTarget;
  let work: string;
  let dd: string;
  let original: Buffer;
  const withPassword = { PLOOPVAULT_PASSWORD: PASSWORD };
  /** The prompt path: no password in the environment or a file (and no terminal here). */
  const cli = (args: string[], env: Record<string, string> = {}): Promise<CliResult> => runCli(args, { env: { ...repo.env, ...env } });

  beforeAll(async () => {
    repo = kind === "local" ? await localRepo() : await s3Repo("downgrade");
    work = await mkdtemp(join(tmpdir(), "pv-downgrade-"));
    await mkdir(join(work, "101", "root.hdd"), { recursive: true });
    dd = await ploopInit(join(work, "101", "root.hdd", "root.hds"), { size: "16M", version: 2 });
    for (const c of [0, 3, 7]) await writeClusterToTop(dd, c, randomBytes(1 << 20));
    const init = await cli(["init", ...repo.args, "--encrypt", "--chunk-avg", "64K"], withPassword);
    expect(init.code, init.stderr).toBe(0);
    const backup = await cli(["backup", ...repo.args, "--disk", dd, "--name", "101", "--json"], withPassword);
    expect(backup.code, backup.stderr).toBe(0);
    original = await repo.read("config");
  }, HEAVY);
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  async function stored(): Promise<string[]> {
    return [...(await repo.listKeys("chunks/")), ...(await repo.listKeys("backups/"))];
  }

  it("the state dir records the repository as encrypted, owner-only", async () => {
    const id = (JSON.parse(original.toString()) as RepositoryConfig).id;
    const record = join(repo.stateDir, "repos", id, "encryption.json");
    expect(((await stat(record)).mode & 0o777).toString(8)).toBe("600");
    expect((await readdir(join(repo.stateDir, "locations"))).length).toBe(1);
  });

  /** The attacker also hides the (sealed) backups, which a plaintext client could not read. */
  async function hideBackups(): Promise<() => Promise<void>> {
    const saved = await Promise.all((await repo.listKeys("backups/")).map(async (k) => [k, await repo.read(k)] as const));
    for (const [k] of saved) await repo.remove(k);
    return async () => {
      for (const [k, body] of saved) await repo.write(k, body);
    };
  }

  it(
    "a plaintext config with the same id is refused without a password: no plaintext backup, no restore",
    async () => {
      const plain = { ...(JSON.parse(original.toString()) as RepositoryConfig), encryption: null };
      await repo.write("config", Buffer.from(JSON.stringify(plain, null, 2)));
      const unhide = await hideBackups();
      const before = await stored();
      try {
        const backup = await cli(["backup", ...repo.args, "--disk", dd, "--name", "101", "--json"]);
        expectOneLineFailure(
          backup,
          new RegExp(`config says repository ${plain.id} is not encrypted, but this host opened it as an encrypted repository before`),
        );
        expect(await stored()).toEqual(before);
        const target = join(work, "restored.raw");
        expectOneLineFailure(
          await cli(["restore", ...repo.args, "101", "--format", "raw", "--target", target]),
          /is not encrypted, but this host opened it as an encrypted repository/,
        );
        await expect(stat(target)).rejects.toThrow(/ENOENT/);
        expectOneLineFailure(await cli(["snapshots", ...repo.args]), /is not encrypted/);
        expectOneLineFailure(await cli(["check", ...repo.args]), /is not encrypted/);
      } finally {
        await repo.write("config", original);
        await unhide();
      }
    },
    HEAVY,
  );

  it(
    "a plaintext config with a new id at the same place is refused too",
    async () => {
      const plain = { ...(JSON.parse(original.toString()) as RepositoryConfig), id: randomBytes(16).toString("hex"), encryption: null };
      await repo.write("config", Buffer.from(JSON.stringify(plain, null, 2)));
      const unhide = await hideBackups();
      const before = await stored();
      try {
        expectOneLineFailure(
          await cli(["backup", ...repo.args, "--disk", dd, "--name", "101"]),
          /its config is not encrypted .*, but this host found the encrypted repository [0-9a-f]{32} there before/,
        );
        expect(await stored()).toEqual(before);
      } finally {
        await repo.write("config", original);
        await unhide();
      }
    },
    HEAVY,
  );

  it(
    "a config and key replaced by another master key (same id, same password) are refused",
    async () => {
      const config = JSON.parse(original.toString()) as RepositoryConfig;
      const keyNames = await repo.listKeys("keys/");
      const keys = await Promise.all(keyNames.map(async (k) => [k, await repo.read(k)] as const));
      // what an attacker who knows the password could forge: a new master key for the same id
      const master = newMasterKey();
      const draft = { ...config, encryption: newEncryptionConfig("0".repeat(64)) };
      const forged = { ...config, encryption: newEncryptionConfig(keyCheckValue(deriveKeys(master, config.id).checkKey, canonicalConfig(draft))) };
      const key = await createKeyFile(master, PASSWORD, config.id, { host: "x", user: "x", created: new Date() }, { N: 1024, r: 8, p: 1 });
      for (const k of keyNames) await repo.remove(k);
      await repo.write(keyObjectName(key.id), encodeKeyFile(key));
      await repo.write("config", Buffer.from(JSON.stringify(forged, null, 2)));
      try {
        expectOneLineFailure(
          await cli(["snapshots", ...repo.args], withPassword),
          new RegExp(`repository ${config.id} opened with another master key than before`),
        );
      } finally {
        await repo.remove(keyObjectName(key.id));
        for (const [k, body] of keys) await repo.write(k, body);
        await repo.write("config", original);
      }
    },
    HEAVY,
  );

  it(
    "the untouched repository keeps working",
    async () => {
      const r = await cli(["snapshots", ...repo.args, "--json"], withPassword);
      expect(r.code, r.stderr).toBe(0);
      expect(jsonLines<{ ct: string }[]>(r.stdout)[0]!.map((b) => b.ct)).toEqual(["101"]);
    },
    HEAVY,
  );
});
