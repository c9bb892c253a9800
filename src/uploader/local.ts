/**
 * A repository in a local directory (or any mounted filesystem): one file per object,
 * the key's '/' segments as subdirectories.
 *
 * Atomicity and durability: put() writes a temp file ".tmp-<random>" next to the final
 * name, fsyncs it, then rename()s it over the final name (or, with ifAbsent, link()s it
 * there, which fails with EEXIST if the name is taken, so two writers cannot both win),
 * and fsyncs the directory (with deferNameSync: at the next flush(), once per directory;
 * a backup flushes before its manifest). Readers therefore see the old object, the new
 * one or none, never a partial file. A crash can leave ".tmp-*" files behind; list() skips them and no
 * key may contain a ".tmp-" segment, so they are invisible; prune removes the old ones
 * (removeStaleTemporaries).
 *
 * Everything is owner-only whatever the umask: files 0600, directories 0700.
 *
 * Etags and ifMatch (compare-and-swap; used for lock takeover, see docs/prune.md): the
 * etag of an object up to 1 MiB is a hash of its content, as S3's ETag is (lock objects
 * carry a fresh timestamp in every version, so every put gives a new etag); a larger
 * object's etag is its inode, mtime and size. There is no "replace if unchanged" system
 * call; ifMatch claims the version with link(2), which fails with EEXIST for all but one:
 *   1. read the key's etag: another etag (or none) -> "changed", nothing touched;
 *   2. link the key's file to ".tmp-cas-<name>-<hash of the expected etag>": one name per
 *      version, so of several writers replacing the same version exactly one gets it,
 *      the others get EEXIST -> "changed";
 *   3. the claimed file must be the expected version (the key may have been replaced
 *      between 1 and 2; then the version is gone anyway) -> else "changed";
 *   4. write the new body to a temp file and rename() it over the key: the key never
 *      disappears, so a concurrent ifAbsent create cannot slip in; remove the claim.
 * Nobody else writes a version while its claim is held: other ifMatch writers need the
 * same claim, ifAbsent writers find the key present. A claim left by a writer that died
 * between 2 and 4 is broken after a minute (a writer paused that long inside those three
 * system calls could still overwrite a later winner; ifMatch is meant for lock objects,
 * whose holders notice at their next conditional refresh).
 *
 * Difference from S3: a key cannot be both an object and the "directory" of other keys
 * ("a/b" and "a/b/c"); the repository layout never does that. Such a put fails with "io".
 */
import { createHash, randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { link, lstat, mkdir, open, opendir, readFile, rename, rmdir, stat, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { makePrivateDir, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from "../util/private-fs.js";
import { readFully, writeFully } from "../util/positional-io.js";
import { syncCounted } from "../util/cost-tally.js";
import { StoreError, validateKey, validatePrefix, type ObjectInfo, type ObjectStore, type PutOptions } from "./store.js";
import { errorLine } from "../errors.js";
import { forEachConcurrent } from "../util/limiter.js";

const TEMP_PREFIX = ".tmp-";
/** A compare-and-swap claim older than this belongs to a writer that died mid-way. */
const STALE_CLAIM_MS = 60_000;
/** How many files list() stats at once. */
const LIST_STAT_CONCURRENCY = 64;
/** How many unlink()s delete() runs at once. */
const DELETE_CONCURRENCY = 32;

/** Map a filesystem error to a StoreError; `path` is the file the operation touched. */
export function fsStoreError(error: unknown, action: string, path: string, key?: string): StoreError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const reason = ((): string => {
    switch (code) {
      case "ENOENT":
        return "no such file or directory";
      case "EACCES":
      case "EPERM":
        return "permission denied";
      case "EROFS":
        return "read-only file system";
      case "ENOSPC":
        return "no space left on device";
      case "EDQUOT":
        return "disk quota exceeded";
      case "EIO":
        return "input/output error";
      case "ENOTDIR":
        return "a parent of it is a file, not a directory";
      case "EISDIR":
        return "it is a directory";
      default:
        return errorLine(error);
    }
  })();
  const kind = code === "ENOENT" ? "not-found" : "io";
  return new StoreError(kind, `cannot ${action} ${path}: ${reason}`, key === undefined ? { cause: error } : { key, cause: error });
}

const CONTENT_ETAG_MAX = 1 << 20;

/**
 * Size, mtime and etag of one and the same version of the file at `path` (fstat and read
 * through one descriptor: a stat() followed by a read could pair one version's mtime with
 * the next version's content). Null if it is not a regular file. See the header comment.
 */
async function fileVersion(path: string): Promise<{ size: number; modified: Date; etag: string } | null> {
  let handle: FileHandle;
  try {
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (error) {
    if (errno(error) === "EISDIR") return null;
    throw error;
  }
  try {
    const info = await handle.stat({ bigint: true });
    if (!info.isFile()) return null;
    let etag: string;
    if (info.size <= BigInt(CONTENT_ETAG_MAX)) {
      const body = await handle.readFile();
      etag = `"${createHash("sha256").update(body).digest("hex").slice(0, 32)}"`;
    } else {
      etag = `"i${info.ino.toString(16)}-${info.mtimeNs.toString(16)}-${info.size.toString(16)}"`;
    }
    return { size: Number(info.size), modified: new Date(Number(info.mtimeNs / 1_000_000n)), etag };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

export class LocalDirectoryStore implements ObjectStore {
  readonly location: string;
  private readonly root: string;
  /** Directories holding names written with deferNameSync and not fsynced since (flush()). */
  private readonly unsyncedDirs = new Set<string>();

  constructor(root: string) {
    this.root = resolve(root);
    this.location = this.root;
  }

  private pathOf(key: string): string {
    validateKey(key);
    const segments = key.split("/");
    if (segments.some((s) => s.startsWith(TEMP_PREFIX))) {
      throw new StoreError("io", `invalid object key "${key}": segments starting with "${TEMP_PREFIX}" are reserved for temp files`, { key });
    }
    return join(this.root, ...segments);
  }

  /** Throws kind "no-container" if the root directory is missing or not a directory. */
  private async checkRoot(cause?: unknown): Promise<void> {
    let info;
    try {
      info = await stat(this.root);
    } catch (error) {
      if (errno(error) === "ENOENT") {
        throw new StoreError("no-container", `repository directory ${this.root} does not exist`, { cause: cause ?? error });
      }
      throw fsStoreError(error, "access repository directory", this.root);
    }
    if (!info.isDirectory()) throw new StoreError("no-container", `repository path ${this.root} is not a directory`, { cause });
  }

  async ensureContainer(): Promise<void> {
    try {
      await makePrivateDir(this.root);
    } catch (error) {
      throw fsStoreError(error, "create repository directory", this.root);
    }
    await this.checkRoot();
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    if (options?.signal?.aborted) throw options.signal.reason;
    if (options?.retention !== undefined) {
      throw new StoreError("io", `cannot write ${key} with a retention: S3 Object Lock is not available for a local directory repository (${this.root})`, {
        key,
      });
    }
    const path = this.pathOf(key);
    const dir = dirname(path);
    if (options?.ifMatch !== undefined) {
      if (options.ifAbsent) throw new StoreError("io", `put ${key}: ifAbsent and ifMatch exclude each other`, { key });
      await this.putIfMatch(key, path, body, options.ifMatch);
      return;
    }
    const temp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
    await this.writeTemp(temp, body, key);
    try {
      // the last moment to give up: after this the object is in place
      if (options?.signal?.aborted) throw options.signal.reason;
      if (options?.ifAbsent) {
        try {
          await link(temp, path);
        } catch (error) {
          if (errno(error) === "EEXIST") throw new StoreError("exists", `object ${key} already exists in ${this.root}`, { key, cause: error });
          throw fsStoreError(error, "create", path, key);
        }
        await unlink(temp).catch(() => undefined);
      } else {
        try {
          await rename(temp, path);
        } catch (error) {
          throw fsStoreError(error, "write", path, key);
        }
      }
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw error;
    }
    // The body is durable (writeTemp fsynced it before the rename), so a crash before the
    // directory's fsync can lose the new name, never install a name without its data.
    if (options?.deferNameSync) this.unsyncedDirs.add(dir);
    else await this.syncDir(dir, key);
  }

  /**
   * fsync the directories of names written with deferNameSync: one fsync per directory
   * instead of one per object (ext4 commits its journal for each: half the commits of a
   * backup's chunk writes). A directory that gets a new name while its fsync runs is
   * listed again by that put().
   */
  async flush(): Promise<void> {
    const dirs = [...this.unsyncedDirs];
    this.unsyncedDirs.clear();
    try {
      await forEachConcurrent(dirs, 8, async (dir) => this.syncDir(dir, relative(this.root, dir) || "."));
    } catch (error) {
      for (const dir of dirs) this.unsyncedDirs.add(dir);
      throw error;
    }
  }

  /** Compare-and-swap with a per-version claim (see the header comment). */
  private async putIfMatch(key: string, path: string, body: Uint8Array, expected: string): Promise<void> {
    const changed = (why: string, cause?: unknown): StoreError =>
      new StoreError("changed", `object ${key} in ${this.root} ${why} (conditional write refused)`, cause === undefined ? { key } : { key, cause });
    const current = await this.etagOf(path, key);
    if (current !== expected) throw changed(current === null ? "does not exist" : "was changed by another writer");
    const dir = dirname(path);
    const versionTag = createHash("sha256").update(expected).digest("hex").slice(0, 16);
    const claim = join(dir, `${TEMP_PREFIX}cas-${basename(path)}-${versionTag}`);
    // 2. claim this version: link(2) fails with EEXIST for every other claimant
    for (let attempt = 0; ; attempt++) {
      try {
        await link(path, claim);
        break;
      } catch (error) {
        const code = errno(error);
        if (code === "ENOENT") throw changed("was removed by another writer", error);
        if (code !== "EEXIST") throw fsStoreError(error, "write", path, key);
        // another writer is replacing this version (we lose), or one died holding the claim
        const info = await stat(claim).catch(() => null);
        if (attempt > 0 || info === null || Date.now() - info.ctimeMs < STALE_CLAIM_MS) throw changed("is being replaced by another writer", error);
        const dead = join(dir, `${TEMP_PREFIX}dead-${randomBytes(8).toString("hex")}`);
        await rename(claim, dead).catch(() => undefined);
        await unlink(dead).catch(() => undefined);
      }
    }
    try {
      // 3. what we claimed must be the expected version (the key may have moved on)
      if ((await this.etagOf(claim, key)) !== expected) throw changed("was changed by another writer");
      // 4. replace it atomically: the key never disappears, so no create can slip in
      const temp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
      await this.writeTemp(temp, body, key);
      try {
        await rename(temp, path);
      } catch (error) {
        await unlink(temp).catch(() => undefined);
        throw fsStoreError(error, "write", path, key);
      }
    } finally {
      await unlink(claim).catch(() => undefined);
    }
    await this.syncDir(dir, key);
  }

  /** The etag of the file at `path`, or null if there is none. */
  private async etagOf(path: string, key: string): Promise<string | null> {
    try {
      return (await fileVersion(path))?.etag ?? null;
    } catch (error) {
      const code = errno(error);
      if (code === "ENOENT" || code === "ENOTDIR") return null;
      throw fsStoreError(error, "stat", path, key);
    }
  }

  /** Write and fsync the temp file, creating missing parent directories (not the root). */
  private async writeTemp(temp: string, body: Uint8Array, key: string): Promise<void> {
    let handle: FileHandle | undefined;
    for (let attempt = 0; handle === undefined; attempt++) {
      try {
        handle = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, PRIVATE_FILE_MODE);
      } catch (error) {
        // a concurrent delete() may remove an emptied parent between mkdirs and open: retry
        if (errno(error) !== "ENOENT" || attempt >= 5) {
          if (errno(error) === "ENOENT") await this.checkRoot(error);
          throw fsStoreError(error, "write", temp, key);
        }
        await this.checkRoot(error);
        await this.makeParents(dirname(temp), key);
      }
    }
    try {
      await writeFully(handle, body, 0);
      await syncCounted(handle, "store");
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw fsStoreError(error, "write", temp, key);
    }
    try {
      await handle.close();
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw fsStoreError(error, "write", temp, key);
    }
  }

  /** mkdir -p below the root, fsyncing each parent that got a new entry. */
  private async makeParents(dir: string, key: string): Promise<void> {
    const missing: string[] = [];
    let current = dir;
    while (current !== this.root && current.startsWith(this.root + sep)) {
      try {
        const info = await stat(current);
        if (!info.isDirectory()) throw new StoreError("io", `cannot write ${key} in ${this.root}: ${current} is a file, not a directory`, { key });
        break;
      } catch (error) {
        if (errno(error) !== "ENOENT") {
          if (error instanceof StoreError) throw error;
          throw fsStoreError(error, "create directory", current, key);
        }
      }
      missing.push(current);
      current = dirname(current);
    }
    for (const d of missing.reverse()) {
      try {
        await mkdir(d, PRIVATE_DIR_MODE);
      } catch (error) {
        if (errno(error) !== "EEXIST") throw fsStoreError(error, "create directory", d, key);
      }
      await this.syncDir(dirname(d), key);
    }
  }

  private async syncDir(dir: string, key: string): Promise<void> {
    let handle: FileHandle | undefined;
    try {
      handle = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
      await syncCounted(handle, "store");
    } catch (error) {
      throw fsStoreError(error, "sync directory", dir, key);
    } finally {
      await handle?.close().catch(() => undefined);
    }
  }

  async get(key: string): Promise<Buffer> {
    const path = this.pathOf(key);
    try {
      return await readFile(path);
    } catch (error) {
      throw await this.readError(error, path, key);
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new StoreError("io", `invalid range offset=${offset} length=${length} for ${key}`, { key });
    }
    const path = this.pathOf(key);
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (error) {
      throw await this.readError(error, path, key);
    }
    try {
      const buffer = Buffer.allocUnsafe(length);
      const filled = await readFully(handle, offset, buffer);
      return filled === length ? buffer : buffer.subarray(0, filled);
    } catch (error) {
      throw await this.readError(error, path, key);
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  /** ENOENT/ENOTDIR/EISDIR: not-found (or no-container if the root is gone). */
  private async readError(error: unknown, path: string, key: string): Promise<StoreError> {
    const code = errno(error);
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") {
      await this.checkRoot(error);
      return new StoreError("not-found", `object ${key} not found in ${this.root}`, { key, cause: error });
    }
    return fsStoreError(error, "read", path, key);
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    const path = this.pathOf(key);
    try {
      const version = await fileVersion(path);
      return version === null ? null : { key, ...version };
    } catch (error) {
      const code = errno(error);
      if (code === "ENOENT" || code === "ENOTDIR") {
        await this.checkRoot(error);
        return null;
      }
      throw fsStoreError(error, "stat", path, key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
    await this.checkRoot();
    const slash = prefix.lastIndexOf("/");
    const dirKey = slash < 0 ? "" : prefix.slice(0, slash); // "" or "a/b"
    const namePrefix = prefix.slice(slash + 1);
    const start = dirKey === "" ? this.root : join(this.root, ...dirKey.split("/"));
    yield* this.walk(start, dirKey === "" ? "" : `${dirKey}/`, namePrefix);
  }

  /** Files below `dir` (whose key prefix is `keyPrefix`), first level filtered by `namePrefix`. */
  private async *walk(dir: string, keyPrefix: string, namePrefix: string): AsyncGenerator<ObjectInfo> {
    let handle;
    try {
      handle = await opendir(dir, { bufferSize: 256 });
    } catch (error) {
      const code = errno(error);
      if (code === "ENOENT" || code === "ENOTDIR") return; // prefix nothing starts with (or removed meanwhile)
      throw fsStoreError(error, "list", dir);
    }
    const subdirs: string[] = [];
    // files are stat'ed LIST_STAT_CONCURRENCY at a time: one at a time, listing a million
    // chunks is bound by the latency of a million sequential lstat calls
    let files: string[] = [];
    const statFiles = async (): Promise<ObjectInfo[]> => {
      const infos = await Promise.all(
        files.map(async (name): Promise<ObjectInfo | null> => {
          const path = join(dir, name);
          let info;
          try {
            info = await lstat(path);
            if (info.isSymbolicLink()) info = await stat(path);
          } catch (error) {
            if (errno(error) === "ENOENT") return null; // deleted while listing
            throw fsStoreError(error, "list", path);
          }
          return { key: `${keyPrefix}${name}`, size: info.size, modified: info.mtime };
        }),
      );
      files = [];
      return infos.filter((i): i is ObjectInfo => i !== null);
    };
    try {
      for await (const entry of handle) {
        const name = entry.name;
        if (!name.startsWith(namePrefix) || name.startsWith(TEMP_PREFIX)) continue;
        const path = join(dir, name);
        let isDir = entry.isDirectory();
        let isFile = entry.isFile();
        if (!isDir && !isFile) {
          // unknown type from readdir (some filesystems) or a symlink: follow it
          const info = await stat(path).catch(() => null);
          if (info === null) continue;
          isDir = info.isDirectory();
          isFile = info.isFile();
        }
        if (isDir) {
          subdirs.push(name);
        } else if (isFile) {
          files.push(name);
          if (files.length >= LIST_STAT_CONCURRENCY) yield* await statFiles();
        }
      }
      if (files.length > 0) yield* await statFiles();
    } catch (error) {
      if (error instanceof StoreError) throw error;
      throw fsStoreError(error, "list", dir);
    }
    for (const name of subdirs) yield* this.walk(join(dir, name), `${keyPrefix}${name}/`, "");
  }

  async delete(keys: readonly string[]): Promise<void> {
    const paths = keys.map((key) => ({ key, path: this.pathOf(key) }));
    const parents = new Set<string>();
    let rootChecked = false;
    await forEachConcurrent(paths, DELETE_CONCURRENCY, async ({ key, path }) => {
      try {
        await unlink(path);
        parents.add(dirname(path));
      } catch (error) {
        const code = errno(error);
        if (code === "ENOENT" || code === "ENOTDIR") {
          if (!rootChecked) {
            await this.checkRoot(error);
            rootChecked = true;
          }
          return;
        }
        if (code === "EISDIR" || code === "EPERM") {
          // unlink() of a directory: no object with that key
          const info = await lstat(path).catch(() => null);
          if (info?.isDirectory()) return;
        }
        throw fsStoreError(error, "delete", path, key);
      }
    });
    // remove directories the deletes left empty, deepest first, climbing towards the root
    const byDepth = new Map<number, Set<string>>();
    const add = (dir: string): void => {
      if (dir === this.root || !dir.startsWith(this.root + sep)) return;
      const depth = dir.split(sep).length;
      let set = byDepth.get(depth);
      if (set === undefined) byDepth.set(depth, (set = new Set()));
      set.add(dir);
    };
    for (const dir of parents) add(dir);
    for (let depth = Math.max(0, ...byDepth.keys()); depth > 0; depth--) {
      for (const dir of byDepth.get(depth) ?? []) {
        try {
          await rmdir(dir);
          add(dirname(dir));
        } catch {
          // not empty (or already gone): keep it
        }
      }
    }
  }

  /**
   * Temp files (".tmp-*") of writers that died, anywhere below the root. A put's temp file
   * is judged by its mtime (its writer's last write; the rename follows at once). A
   * compare-and-swap claim (".tmp-cas-*", ".tmp-dead-*") is a hard link to a lock object,
   * whose mtime may be old; its ctime is when the claim was made. Only those last changed
   * before `before` go.
   */
  async removeStaleTemporaries(before: Date, options: { dryRun?: boolean } = {}): Promise<{ count: number; bytes: number }> {
    await this.checkRoot();
    const result = { count: 0, bytes: 0 };
    const cutoff = before.getTime();
    const visit = async (dir: string): Promise<void> => {
      let handle;
      try {
        handle = await opendir(dir, { bufferSize: 256 });
      } catch (error) {
        if (errno(error) === "ENOENT" || errno(error) === "ENOTDIR") return; // removed meanwhile
        throw fsStoreError(error, "list", dir);
      }
      const subdirs: string[] = [];
      try {
        for await (const entry of handle) {
          const path = join(dir, entry.name);
          if (entry.isDirectory()) {
            if (!entry.name.startsWith(TEMP_PREFIX)) subdirs.push(path);
            continue;
          }
          if (!entry.name.startsWith(TEMP_PREFIX)) continue;
          const info = await lstat(path).catch(() => null);
          const claim = entry.name.startsWith(`${TEMP_PREFIX}cas-`) || entry.name.startsWith(`${TEMP_PREFIX}dead-`);
          if (info === null || !info.isFile() || (claim ? info.ctimeMs : info.mtimeMs) >= cutoff) continue;
          if (!options.dryRun) {
            try {
              await unlink(path);
            } catch (error) {
              if (errno(error) === "ENOENT") continue; // its writer finished (or another prune) meanwhile
              throw fsStoreError(error, "delete", path);
            }
          }
          result.count++;
          result.bytes += info.size;
        }
      } catch (error) {
        if (error instanceof StoreError) throw error;
        throw fsStoreError(error, "list", dir);
      }
      for (const sub of subdirs) await visit(sub);
    };
    await visit(this.root);
    return result;
  }

  async close(): Promise<void> {}
}
