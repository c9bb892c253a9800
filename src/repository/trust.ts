/**
 * What this host remembers about the encrypted repositories it opened, so that nobody
 * can turn one into a plaintext one behind its back (docs/encryption.md, "Downgrade
 * protection"). Someone who can write the bucket could replace `config` with a plaintext
 * one (with the same repository id or a new one); when the password comes from the
 * prompt, nothing else tells the two apart, and the next backups would store plaintext
 * chunks and restores accept planted manifests. So:
 *
 *   <state dir>/repos/<repository id>/encryption.json   this id is encrypted, with this
 *                                                       master key (fingerprint), opened
 *                                                       last with this key object
 *   <state dir>/locations/<sha256 of the location>.json the repository this host found at
 *                                                       this URL (+ endpoint), encrypted or not
 *
 * A config without encryption is refused for an id recorded as encrypted, and at a
 * location recorded as holding an encrypted repository (whatever its id); a master key
 * other than the recorded one is refused. `init` records what it creates, so re-creating
 * a repository on purpose from this host needs nothing else; on other hosts the message
 * names the file to remove. Trust on first use: a host with no record (first use, lost
 * state dir) has nothing to compare with. Records are 0600 in 0700 directories, written
 * atomically; they hold no key material (the fingerprint is a one-way HKDF output).
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { errorLine, IntegrityError, PloopvaultError } from "../errors.js";
import { writePrivateFileAtomic } from "../util/private-fs.js";
import type { RepositoryConfig } from "./config.js";
import type { PasswordProvider } from "../crypto/password.js";
import type { ObjectStore } from "../uploader/store.js";
import { Repository } from "./repository.js";

interface EncryptionRecord {
  version: 1;
  repository: string;
  encrypted: true;
  keyFingerprint: string;
  /** The key object that opened it last: tried first next time. */
  keyId: string;
  location: string;
  recorded: string;
}

interface LocationRecord {
  version: 1;
  location: string;
  repository: string;
  encrypted: boolean;
  recorded: string;
}

export class RepositoryTrust {
  constructor(private readonly stateDir: string) {}

  private encryptionPath(repositoryId: string): string {
    return join(this.stateDir, "repos", repositoryId, "encryption.json");
  }

  private locationPath(location: string): string {
    return join(this.stateDir, "locations", `${createHash("sha256").update(location, "utf8").digest("hex").slice(0, 32)}.json`);
  }

  /**
   * Before unlocking: refuse a plaintext config where this host knows an encrypted
   * repository. Returns the key object to try first (the one that opened it last).
   */
  async checkConfig(location: string, config: RepositoryConfig): Promise<{ preferredKeyId?: string }> {
    const byId = await this.read<EncryptionRecord>(this.encryptionPath(config.id));
    const atLocation = await this.read<LocationRecord>(this.locationPath(location));
    if (config.encryption === null) {
      if (byId !== null && byId.encrypted === true) {
        throw new IntegrityError(
          `${location}: its config says repository ${config.id} is not encrypted, but this host opened it as an encrypted repository before (${this.encryptionPath(config.id)}): someone who can write the repository may have replaced the config to make backups store plaintext; refusing (remove that file only if the repository was re-created without encryption on purpose)`,
        );
      }
      if (atLocation !== null && atLocation.encrypted === true && atLocation.location === location) {
        throw new IntegrityError(
          `${location}: its config is not encrypted (repository ${config.id}), but this host found the encrypted repository ${atLocation.repository} there before (${this.locationPath(location)}): someone who can write the repository may have replaced the config to make backups store plaintext; refusing (remove that file only if the repository was re-created without encryption on purpose)`,
        );
      }
      return {};
    }
    return byId !== null && typeof byId.keyId === "string" ? { preferredKeyId: byId.keyId } : {};
  }

  /** After unlocking: refuse another master key than the recorded one; record what was opened. */
  async confirmOpened(location: string, repo: Repository): Promise<void> {
    if (!repo.encrypted) return;
    const path = this.encryptionPath(repo.config.id);
    const byId = await this.read<EncryptionRecord>(path);
    const fingerprint = repo.keyFingerprint!;
    if (byId !== null && byId.keyFingerprint !== fingerprint) {
      throw new IntegrityError(
        `${location}: repository ${repo.config.id} opened with another master key than before (fingerprint ${fingerprint.slice(0, 16)}..., this host recorded ${String(byId.keyFingerprint).slice(0, 16)}... in ${path}): its config and key objects were replaced; refusing (remove that file only if the repository was re-created on purpose)`,
      );
    }
    if (byId === null || byId.keyId !== repo.keyId || byId.location !== location) await this.writeEncryption(location, repo);
    const atLocation = await this.read<LocationRecord>(this.locationPath(location));
    if (atLocation === null || atLocation.repository !== repo.config.id || atLocation.encrypted !== true) await this.writeLocation(location, repo);
  }

  /**
   * `init` made this repository here: record it, replacing what was known about the
   * location (an unencrypted one needs a record only to replace an encrypted one's).
   */
  async recordCreated(location: string, repo: Repository): Promise<void> {
    if (repo.encrypted) await this.writeEncryption(location, repo);
    if (repo.encrypted || (await this.read<LocationRecord>(this.locationPath(location))) !== null) await this.writeLocation(location, repo);
  }

  private async writeEncryption(location: string, repo: Repository): Promise<void> {
    const record: EncryptionRecord = {
      version: 1,
      repository: repo.config.id,
      encrypted: true,
      keyFingerprint: repo.keyFingerprint!,
      keyId: repo.keyId!,
      location,
      recorded: new Date().toISOString(),
    };
    await this.write(this.encryptionPath(repo.config.id), record);
  }

  private async writeLocation(location: string, repo: Repository): Promise<void> {
    const record: LocationRecord = { version: 1, location, repository: repo.config.id, encrypted: repo.encrypted, recorded: new Date().toISOString() };
    await this.write(this.locationPath(location), record);
  }

  private async write(path: string, record: EncryptionRecord | LocationRecord): Promise<void> {
    try {
      await writePrivateFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`);
    } catch (error) {
      throw new PloopvaultError(
        `cannot record the repository's encryption in the state dir (${path}: ${errorLine(error)}); use --state-dir or PLOOPVAULT_STATE to name a writable one`,
        {
          cause: error,
        },
      );
    }
  }

  /** A record, or null when there is none; an unreadable one is an error (it may be the only protection). */
  private async read<T extends { version: 1 }>(path: string): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw new PloopvaultError(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? errorLine(error)})`, { cause: error });
    }
    try {
      const value = JSON.parse(text) as T;
      if (typeof value === "object" && value !== null && value.version === 1) return value;
    } catch {
      // fall through
    }
    throw new PloopvaultError(`${path}: damaged record (remove it if this host should forget what it knew about that repository)`);
  }
}

/**
 * Open the repository in `store` through what this host remembers about it (`location` is
 * its URL plus endpoint): a downgraded config is refused before any password is asked
 * for, the key object that opened it last is tried first, another master key is refused,
 * and what was opened is recorded.
 */
export async function openTrustedRepository(
  store: ObjectStore,
  options: { stateDir: string; location: string; password?: PasswordProvider },
): Promise<Repository> {
  const trust = new RepositoryTrust(options.stateDir);
  const loaded = await Repository.loadConfig(store);
  const { preferredKeyId } = await trust.checkConfig(options.location, loaded.config);
  const repo = await Repository.unlock(store, loaded, {
    ...(options.password === undefined ? {} : { password: options.password }),
    ...(preferredKeyId === undefined ? {} : { preferredKeyId }),
  });
  await trust.confirmOpened(options.location, repo);
  return repo;
}
