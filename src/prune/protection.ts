/**
 * Protected backups and forgetting single backups (`protect`, `unprotect`, `forget`).
 *
 * A protection is one small object beside the manifest, backups/<ct>/<id>/protected
 * (sealed like every side file in an encrypted repository), holding who protected the
 * backup and when. Its existence is the protection: prune and forget list or stat it and
 * never remove a backup that has one. Manifests stay immutable (a protection can be
 * added and taken away without rewriting the record of the backup), and an older
 * ploopvault that does not know the object leaves it alone like any other side file.
 *
 * Races: prune reads the protections when it lists the repository and stats them again
 * right before deleting each batch of manifests, so a protection written while a prune
 * plans is honoured; `protect` writes the object first and then checks that the manifest
 * is still there, so it never reports a backup as protected that a prune removed
 * meanwhile. `forget` takes the prune lock (locks/prune): one remover at a time, and a
 * prune never finds a manifest gone in the middle of its sweep.
 */
import { hostname, userInfo } from "node:os";
import { errorLine, PloopvaultError } from "../errors.js";
import { backupPrefix, manifestKey } from "../repository/layout.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import type { ObjectStore } from "../uploader/store.js";
import type { LockTiming } from "./locks.js";
import { acquirePruneLock } from "./prune-lock.js";

export const PROTECTION_NAME = "protected";

export function protectionKey(ref: BackupRef): string {
  return `${backupPrefix(ref.ct, ref.id)}${PROTECTION_NAME}`;
}

export interface Protection {
  time: string;
  host: string;
  user: string;
  reason: string | null;
}

export async function isProtected(store: ObjectStore, ref: BackupRef): Promise<boolean> {
  return (await store.stat(protectionKey(ref))) !== null;
}

/** "ct/id" of every protected backup (one listing of backups/). */
export async function protectedBackups(store: ObjectStore): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const info of store.list("backups/")) {
    const parts = info.key.split("/");
    if (parts.length === 4 && parts[3] === PROTECTION_NAME) out.add(`${parts[1]}/${parts[2]}`);
  }
  return out;
}

async function requireManifest(repo: Repository, ref: BackupRef): Promise<void> {
  if ((await repo.store.stat(manifestKey(ref.ct, ref.id))) === null) throw new PloopvaultError(`backup ${ref.ct}/${ref.id} not found in ${repo.location}`);
}

/** Protect a backup; true if it was not protected before. */
export async function protectBackup(repo: Repository, ref: BackupRef, reason: string | null, now: Date = new Date()): Promise<boolean> {
  await requireManifest(repo, ref);
  if (await isProtected(repo.store, ref)) return false;
  const body: Protection = { time: now.toISOString(), host: hostname(), user: safeUser(), reason };
  await repo.putBackupFile(ref, PROTECTION_NAME, Buffer.from(`${JSON.stringify(body)}\n`));
  // a prune that planned before our object landed may have removed the backup meanwhile
  try {
    await requireManifest(repo, ref);
  } catch (error) {
    await repo.store.delete([protectionKey(ref)]).catch(() => undefined);
    throw new PloopvaultError(`backup ${ref.ct}/${ref.id} was removed (by a prune or forget) while it was being protected`, { cause: error });
  }
  return true;
}

/** Remove a protection; true if there was one. */
export async function unprotectBackup(repo: Repository, ref: BackupRef): Promise<boolean> {
  await requireManifest(repo, ref);
  if (!(await isProtected(repo.store, ref))) return false;
  await repo.store.delete([protectionKey(ref)]);
  return true;
}

export interface ForgetOptions {
  /** This host's name in the prune lock. */
  host: string;
  timing: LockTiming;
  /** How long to wait for a running prune (or forget). */
  waitMs: number;
  dryRun: boolean;
  log: (line: string) => void;
  warn: (line: string) => void;
}

export interface ForgottenBackup extends BackupRef {
  /** Objects removed (manifest and side files). */
  objects: number;
  bytes: number;
}

/**
 * Remove the records of these backups (manifest first, then the side files); their chunks
 * go with the next prune. Refuses, before removing anything, when one of them is protected.
 */
export async function forgetBackups(repo: Repository, refs: readonly BackupRef[], options: ForgetOptions): Promise<ForgottenBackup[]> {
  const store = repo.store;
  const locks = store.controlChannel?.() ?? store;
  const lock = options.dryRun
    ? null
    : await acquirePruneLock(locks, { host: options.host, timing: options.timing, waitMs: options.waitMs, log: options.log, warn: options.warn });
  try {
    const plan: { ref: BackupRef; files: { key: string; size: number }[] }[] = [];
    const protectedOnes: string[] = [];
    for (const ref of refs) {
      await requireManifest(repo, ref);
      const files: { key: string; size: number }[] = [];
      for await (const info of store.list(backupPrefix(ref.ct, ref.id))) files.push({ key: info.key, size: info.size });
      if (files.some((f) => f.key === protectionKey(ref))) protectedOnes.push(`${ref.ct}/${ref.id}`);
      plan.push({ ref, files });
    }
    if (protectedOnes.length > 0) {
      throw new PloopvaultError(
        `backup${protectedOnes.length === 1 ? "" : "s"} ${protectedOnes.join(", ")} ${protectedOnes.length === 1 ? "is" : "are"} protected: run "ploopvault unprotect" first; nothing was forgotten`,
      );
    }
    const out: ForgottenBackup[] = [];
    for (const { ref, files } of plan) {
      out.push({ ...ref, objects: files.length, bytes: files.reduce((sum, f) => sum + f.size, 0) });
      if (options.dryRun) continue;
      lock?.assertValid("forget backups");
      // the manifest first: a backup without its manifest is invisible, its leftovers are pruned
      await store.delete([manifestKey(ref.ct, ref.id)]);
      const rest = files.map((f) => f.key).filter((k) => k !== manifestKey(ref.ct, ref.id));
      if (rest.length > 0) await store.delete(rest);
    }
    return out;
  } finally {
    await lock?.release().catch((error: unknown) => options.warn(`cannot remove the prune lock: ${errorLine(error)} (it expires by itself)`));
  }
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? "unknown");
  }
}
