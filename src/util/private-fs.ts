/**
 * Files and directories only their owner can read: state, caches, trust records, local
 * repository objects, restored disks (the project's rule: what a run writes is readable
 * by its owner only). Modes are given explicitly at creation, so the result
 * does not depend on the umask: a umask can only take bits away from 0600/0700, never
 * add any (with umask 000, node's default 0666 would make a file world-writable).
 */
import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { mkdir, open, rename, unlink, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { syncCounted } from "./cost-tally.js";

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** mkdir -p; every directory it creates is 0700 (existing ones are left as they are). */
export async function makePrivateDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/** fsync a directory, so the entries created, renamed or removed in it are durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await syncCounted(fh, "state");
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * Write `body` to `path` atomically (temp file beside it, fsync, rename, fsync of the
 * directory): a reader sees the old content or the new one. The file is 0600 and missing
 * parents are created 0700. `syncDir: false` skips the directory fsync where losing the
 * new name in a crash is harmless (a cache entry that is fetched again).
 */
export async function writePrivateFileAtomic(path: string, body: Uint8Array | string, options: { syncDir?: boolean } = {}): Promise<void> {
  const dir = dirname(path);
  await makePrivateDir(dir);
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  let fh: FileHandle | undefined = await open(temp, "wx", PRIVATE_FILE_MODE);
  try {
    await fh.writeFile(body);
    await syncCounted(fh, "state");
    await fh.close();
    fh = undefined;
    await rename(temp, path);
  } catch (error) {
    await fh?.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  if (options.syncDir !== false) await syncDirectory(dir);
}
