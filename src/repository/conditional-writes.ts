/**
 * `init` and `prune` rely on conditional writes (the config is created once; one prune
 * at a time, lock takeovers by compare-and-swap: docs/prune.md). Before either writes, the
 * server is probed once (src/uploader/conditional-writes.ts) and a server that ignores
 * the conditions is refused with one line. Backups need no probe: prune is the only
 * thing that deletes chunks, so refusing prune on such a server is what keeps them safe.
 *
 * A good result is remembered in the state dir, per repository and server:
 *   <state dir>/repos/<repository id>/conditional-writes.json  {server, checked}
 * The state dir and not the repository: the config is written once and only after the
 * probe, anyone who can write the bucket could forge a record kept there, and the same
 * bucket may be reached through another endpoint or proxy from another host (each host
 * probes the path it uses; "server" is the repository URL plus the endpoint). A bad
 * result is not remembered: the next run probes again (the server may have been fixed).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { errorLine, PloopvaultError } from "../errors.js";
import { probeConditionalWrites } from "../uploader/conditional-writes.js";
import type { ObjectStore } from "../uploader/store.js";
import { writePrivateFileAtomic } from "../util/private-fs.js";

export interface ConditionalWritesOptions {
  stateDir: string;
  /** Repository URL and endpoint, as this host reaches them. */
  server: string;
  /** A scratch object name (a probe lock under locks/, removed at once, expires if left behind). */
  probeKey: string;
  /** Body of each probe write (a lock body, so a leftover is recognised and expires). */
  probeBody: (step: string) => Buffer;
  /** What needs it, for the message ("init", "prune"). */
  purpose: string;
  warn: (line: string) => void;
}

interface Record {
  version: 1;
  server: string;
  checked: string;
}

function recordPath(stateDir: string, repositoryId: string): string {
  return join(stateDir, "repos", repositoryId, "conditional-writes.json");
}

async function alreadyVerified(stateDir: string, repositoryId: string, server: string): Promise<boolean> {
  try {
    const record = JSON.parse(await readFile(recordPath(stateDir, repositoryId), "utf8")) as Partial<Record>;
    return record.version === 1 && record.server === server;
  } catch {
    return false; // no record (or an unreadable one): probe
  }
}

/** Remember a good probe; a state dir we cannot write costs a probe next time, nothing more. */
export async function rememberConditionalWrites(repositoryId: string, options: Pick<ConditionalWritesOptions, "stateDir" | "server" | "warn">): Promise<void> {
  const record: Record = { version: 1, server: options.server, checked: new Date().toISOString() };
  const path = recordPath(options.stateDir, repositoryId);
  try {
    await writePrivateFileAtomic(path, `${JSON.stringify(record)}\n`);
  } catch (error) {
    options.warn(`cannot record the conditional-write check in ${path} (${errorLine(error)}); the next run checks again`);
  }
}

/** Probe the server (no record): throws a PloopvaultError naming what the server did. */
export async function probeOrRefuse(store: ObjectStore, options: ConditionalWritesOptions): Promise<void> {
  const problem = await probeConditionalWrites(store, options.probeKey, options.probeBody);
  if (problem !== null) {
    throw new PloopvaultError(
      `refusing ${options.purpose} on ${options.server}: the server does not honour conditional writes (${problem}); ploopvault needs S3 conditional PUTs (If-None-Match and If-Match: AWS S3, Ceph RGW, MinIO) to create a repository safely and to run prune; backups and restores still work`,
    );
  }
}

/**
 * Before `purpose` writes to repository `repositoryId`: probe the server unless this host
 * did already, refuse it if it ignores conditional writes, remember a good result.
 */
export async function requireConditionalWrites(store: ObjectStore, repositoryId: string, options: ConditionalWritesOptions): Promise<void> {
  if (await alreadyVerified(options.stateDir, repositoryId, options.server)) return;
  await probeOrRefuse(store, options);
  await rememberConditionalWrites(repositoryId, options);
}
