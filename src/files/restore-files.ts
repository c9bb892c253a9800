/**
 * `restore --include PATH... --target DIR`: files and folders of a backup's filesystem
 * written into DIR at their paths (DIR/var/www/shop for /var/www/shop), with owner (when
 * running as root), mode, atime/mtime and xattrs (ACLs and capabilities included);
 * hard links stay hard links, sparse files stay sparse, device nodes and fifos are
 * recreated; sockets are skipped.
 *
 * DIR may be a place someone else can write to (a container's root): nothing is ever
 * written through a symlink found there. Every directory is opened relative to its
 * already-open parent with O_NOFOLLOW|O_DIRECTORY, through /proc/self/fd/N/NAME (the
 * openat(2) of Node: the kernel resolves the magic link N to the open directory itself,
 * never re-walking a path that could have been swapped), and every entry is created under
 * a fresh temporary name with O_EXCL|O_NOFOLLOW and renamed into place (rename replaces a
 * symlink, it does not follow it). A symlink or a file where the backup has a folder, or
 * an existing file where the backup has a file, stops the restore unless --force (then
 * the entry is replaced, never followed).
 *
 * Files keep their backed-up mode; folders that ploopvault creates without restoring them
 * (DIR itself, the parents of an included path) are 0700. A file is complete when it
 * appears under its name: a failed restore leaves at most hidden temporary files, which it
 * removes. Owners are set with fchown/lchown, then the mode (chown clears setuid), then
 * xattrs (chown clears security.capability) with setfattr(1) (package attr; Node has no
 * setxattr), then times. Times are restored to the microsecond (Node's utimes takes
 * floating-point seconds); `ls --json` and tar streams keep nanoseconds.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, lchown, link, lstat, lutimes, mkdir, open, rename, rm, stat, symlink, unlink, type FileHandle } from "node:fs/promises";
import { writeFully } from "../util/positional-io.js";
import { runCommand } from "../util/exec.js";
import { PloopvaultError } from "../errors.js";
import { deviceNumbers, type Inode } from "../fs/ext/inode.js";
import type { ExtFilesystem } from "../fs/ext/filesystem.js";
import { displayPath, walkTree, type WalkItem } from "../fs/walk.js";
import { dataRuns, readRuns } from "./content.js";
import type { Repository } from "../repository/repository.js";
import { fetchStats, openBackupFilesystemBySpec } from "./backup-fs.js";
import { resolveItem } from "./listing.js";

export interface RestoreFilesOptions {
  includes: readonly string[];
  target: string;
  /** Replace existing files and symlinks in the way. */
  force: boolean;
  /** Set owners (default: when running as root). */
  owners?: boolean;
  signal?: AbortSignal;
  warn?: (line: string) => void;
  /** Command used to set xattrs (tests point it elsewhere; default "setfattr"). */
  setfattr?: string;
}

export interface RestoreFilesResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  specials: number;
  /** Bytes of file data written (holes not counted). */
  dataBytes: number;
  /** Entries not restored (sockets), as paths. */
  skipped: string[];
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const NEW_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const XATTR_BATCH = 64;
/** Entries written at the same time: hides the latency of each file's dozen syscalls (measured: docs/file-restore.md). */
const ENTRY_CONCURRENCY = 8;

function at(dir: FileHandle, name: Buffer | string): Buffer {
  return Buffer.concat([Buffer.from(`/proc/self/fd/${dir.fd}/`), typeof name === "string" ? Buffer.from(name) : name]);
}

function tempName(): string {
  return `.ploopvault-restore-${randomBytes(6).toString("hex")}`;
}

function code(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

/**
 * A time for utimes: as a numeric string, because Node replaces a negative *number* (a
 * time before 1970) by the current time, but passes strings and Dates through.
 */
function seconds(t: { sec: number; nsec: number }): string {
  return String(t.sec + t.nsec / 1e9);
}

interface OpenDir {
  components: Buffer[];
  handle: FileHandle;
  /** Restored from the backup (metadata applied when it is closed), or only created as a parent. */
  inode: Inode | null;
  /** Entries being written into it: all settle before its handle closes (its fd number is in their paths). */
  tasks: Promise<void>[];
}

/** Wait for every task; rethrow the first failure. */
async function settle(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  tasks.length = 0;
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
}

interface PendingXattrs {
  /** What setfattr is given: /proc/PID/fd/N (an open file or folder) or /proc/PID/fd/DIR/NAME (a symlink, -h). */
  path: string;
  shown: string;
  xattrs: { name: string; value: Buffer }[];
  noDereference: boolean;
  /** Kept open until setfattr has run (its /proc path must stay valid). */
  handle: FileHandle | null;
}

export class FileRestorer {
  readonly result: RestoreFilesResult = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, specials: 0, dataBytes: 0, skipped: [] };
  private readonly owners: boolean;
  private readonly warn: (line: string) => void;
  private readonly setfattr: string;
  private pendingXattrs: PendingXattrs[] = [];
  private xattrFailures: string[] = [];
  /** Inode -> first restored path (components) and the task writing it, for hard links. */
  private readonly linked = new Map<number, { components: Buffer[]; done: Promise<void> }>();
  private root: FileHandle | null = null;
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private firstError: { error: unknown } | null = null;

  constructor(
    private readonly fs: ExtFilesystem,
    private readonly options: RestoreFilesOptions,
  ) {
    this.owners = options.owners ?? (typeof process.getuid === "function" && process.getuid() === 0);
    this.warn = options.warn ?? ((): void => {});
    this.setfattr = options.setfattr ?? "setfattr";
  }

  private shown(components: readonly Buffer[]): string {
    return `${this.options.target.replace(/\/+$/, "")}${displayPath(components)}`;
  }

  async run(): Promise<RestoreFilesResult> {
    const items: WalkItem[] = [];
    for (const include of this.options.includes) items.push(await resolveItem(this.fs, include));
    // an include inside another include is restored with it, once
    const starts = items.filter(
      (item, i) =>
        !items.some((other, j) => j !== i && isPrefix(other.components, item.components) && (other.components.length < item.components.length || j < i)),
    );
    this.root = await this.openTarget();
    try {
      for (const start of starts) await this.restoreTree(start);
      await this.flushXattrs();
    } finally {
      await this.root.close().catch(() => undefined);
      for (const p of this.pendingXattrs) await p.handle?.close().catch(() => undefined);
    }
    if (this.xattrFailures.length > 0) {
      const first = this.xattrFailures.slice(0, 3).join("; ");
      throw new PloopvaultError(
        `restored the files into ${this.options.target}, but the xattrs of ${this.xattrFailures.length} entries could not be set: ${first}`,
      );
    }
    return this.result;
  }

  /** DIR, created 0700 (with missing parents) if needed, opened as a directory. */
  private async openTarget(): Promise<FileHandle> {
    const target = this.options.target;
    try {
      const s = await stat(target);
      if (!s.isDirectory()) throw new PloopvaultError(`restore target ${target} is not a directory`);
    } catch (error) {
      if (code(error) !== "ENOENT")
        throw error instanceof PloopvaultError ? error : new PloopvaultError(`cannot use restore target ${target}: ${code(error) ?? String(error)}`);
      await mkdir(target, { recursive: true, mode: 0o700 });
    }
    // the operator's own path may contain symlinks; from here on nothing is followed
    return open(target, constants.O_RDONLY | constants.O_DIRECTORY);
  }

  private async restoreTree(start: WalkItem): Promise<void> {
    // parents of the included path: folders that exist in DIR, or new ones (0700)
    const stack: OpenDir[] = [{ components: [], handle: this.root!, inode: null, tasks: [] }];
    try {
      for (let i = 0; i < start.components.length - 1; i++) {
        const parent = stack[stack.length - 1]!;
        const components = start.components.slice(0, i + 1);
        stack.push({ components, handle: await this.enterDir(parent.handle, components, 0o700), inode: null, tasks: [] });
      }
      if (start.components.length === 0) {
        // "/" itself: its entries go into DIR, whose metadata becomes the root's
        stack[0] = { components: [], handle: this.root!, inode: start.inode, tasks: [] };
      }
      for await (const item of walkTree(this.fs, start, { recursive: true, includeStart: start.components.length > 0 })) {
        if (this.options.signal?.aborted) throw new PloopvaultError(`restore into ${this.options.target} interrupted`);
        if (this.firstError !== null) throw this.firstError.error;
        const parentComponents = item.components.slice(0, -1);
        while (!sameComponents(stack[stack.length - 1]!.components, parentComponents)) await this.closeDir(stack.pop()!);
        const parent = stack[stack.length - 1]!;
        if (item.inode.type === "dir") {
          stack.push({ components: item.components, handle: await this.enterDir(parent.handle, item.components, 0o700), inode: item.inode, tasks: [] });
          this.result.dirs++;
        } else {
          await this.submit(parent, item);
        }
      }
      while (stack.length > 1) await this.closeDir(stack.pop()!);
      await settle(stack[0]!.tasks);
      if (start.components.length === 0) await this.applyDirMetadata(stack[0]!);
    } finally {
      for (const d of stack) await Promise.allSettled(d.tasks);
      for (const d of stack.slice(1)) await d.handle.close().catch(() => undefined);
    }
  }

  /** Start restoring a non-folder entry (at most ENTRY_CONCURRENCY at a time). */
  private async submit(parent: OpenDir, item: WalkItem): Promise<void> {
    while (this.running >= ENTRY_CONCURRENCY) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    const name = item.components[item.components.length - 1]!;
    let task: Promise<void>;
    const first = item.inode.links > 1 && item.inode.type !== "socket" ? this.linked.get(item.inode.ino) : undefined;
    if (first !== undefined) {
      task = (async (): Promise<void> => {
        await first.done.catch(() => undefined);
        await this.checkExisting(parent.handle, name, item.components);
        if (!(await this.hardLink(first.components, parent.handle, name, item.components))) await this.restoreEntry(parent.handle, name, item, true);
      })();
    } else {
      task = this.restoreEntry(parent.handle, name, item, false);
      if (item.inode.links > 1) this.linked.set(item.inode.ino, { components: item.components, done: task });
    }
    task = task.then(
      () => this.release(),
      (error: unknown) => {
        if (this.firstError === null) this.firstError = { error };
        this.release();
        throw error;
      },
    );
    task.catch(() => undefined); // settled by closeDir; must not count as unhandled meanwhile
    parent.tasks.push(task);
  }

  private release(): void {
    this.running--;
    this.waiting.shift()?.();
  }

  /**
   * Open (creating it if missing) the folder `components` inside `parent`, refusing a
   * symlink or a non-folder in the way unless --force replaces it.
   */
  private async enterDir(parent: FileHandle, components: Buffer[], mode: number): Promise<FileHandle> {
    const name = components[components.length - 1]!;
    const path = at(parent, name);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        return await open(path, DIR_FLAGS);
      } catch (error) {
        const c = code(error);
        if (c === "ENOENT") {
          try {
            await mkdir(path, mode);
          } catch (e) {
            if (code(e) !== "EEXIST") throw this.fsError(e, components, "create folder");
          }
          continue;
        }
        if (c !== "ELOOP" && c !== "ENOTDIR") throw this.fsError(error, components, "open folder");
        // O_NOFOLLOW|O_DIRECTORY gives ENOTDIR (or ELOOP) for a symlink: say which it is
        const isLink =
          c === "ELOOP" ||
          (await lstat(path).then(
            (st) => st.isSymbolicLink(),
            () => false,
          ));
        const what = isLink ? "a symbolic link" : "not a folder";
        if (!this.options.force)
          throw new PloopvaultError(`${this.shown(components)} is ${what} in the restore target: refusing to restore through it (--force replaces it)`);
        await unlink(path).catch((e: unknown) => {
          throw this.fsError(e, components, "replace");
        });
      }
    }
    throw new PloopvaultError(`${this.shown(components)} keeps changing in the restore target`);
  }

  private async closeDir(dir: OpenDir): Promise<void> {
    try {
      await settle(dir.tasks);
      if (dir.inode !== null) await this.applyDirMetadata(dir);
    } finally {
      // pending setfattr calls may refer to paths inside this folder
      await this.flushXattrs();
      if (dir.handle !== this.root) await dir.handle.close();
    }
  }

  private async applyDirMetadata(dir: OpenDir): Promise<void> {
    const inode = dir.inode!;
    const h = dir.handle;
    if (this.owners) await h.chown(inode.uid, inode.gid);
    await h.chmod(inode.permissions);
    await this.queueXattrs(inode, dir.components, { path: `/proc/${process.pid}/fd/${h.fd}`, noDereference: false, handle: null });
    await h.utimes(seconds(inode.atime), seconds(inode.mtime));
  }

  private async restoreEntry(dir: FileHandle, name: Buffer, item: WalkItem, checked: boolean): Promise<void> {
    const inode = item.inode;
    const type = inode.type!;
    if (type === "socket") {
      this.result.skipped.push(displayPath(item.components));
      return;
    }
    if (!checked) await this.checkExisting(dir, name, item.components);
    const temp = tempName();
    try {
      if (type === "file") await this.writeFile(dir, temp, inode, item.components);
      else if (type === "symlink") await this.writeSymlink(dir, temp, inode, item.components);
      else await this.writeSpecial(dir, temp, inode, item.components);
      await rename(at(dir, temp), at(dir, name));
    } catch (error) {
      await rm(at(dir, temp), { force: true }).catch(() => undefined);
      throw this.fsError(error, item.components, "restore");
    }
  }

  /** What is at NAME already: nothing, or (with --force) a non-folder that the rename replaces. */
  private async checkExisting(dir: FileHandle, name: Buffer, components: Buffer[]): Promise<void> {
    let existing;
    try {
      existing = await lstat(at(dir, name));
    } catch (error) {
      if (code(error) === "ENOENT") return;
      throw this.fsError(error, components, "inspect");
    }
    if (existing.isDirectory()) throw new PloopvaultError(`${this.shown(components)} is a folder in the restore target, but not in the backup`);
    if (!this.options.force) throw new PloopvaultError(`${this.shown(components)} already exists in the restore target (--force replaces it)`);
  }

  private async writeFile(dir: FileHandle, temp: string, inode: Inode, components: Buffer[]): Promise<void> {
    const fh = await open(at(dir, temp), NEW_FILE_FLAGS, 0o600);
    let keep = false;
    try {
      for await (const piece of readRuns(this.fs, inode, await dataRuns(this.fs, inode))) {
        await writeFully(fh, piece.data, piece.offset);
        this.result.dataBytes += piece.data.length;
      }
      await fh.truncate(inode.size); // trailing hole
      if (this.owners) await fh.chown(inode.uid, inode.gid);
      await fh.chmod(inode.permissions);
      await fh.utimes(seconds(inode.atime), seconds(inode.mtime));
      keep = await this.queueXattrs(inode, components, { path: `/proc/${process.pid}/fd/${fh.fd}`, noDereference: false, handle: fh });
      this.result.files++;
    } finally {
      if (!keep) await fh.close();
    }
  }

  private async writeSymlink(dir: FileHandle, temp: string, inode: Inode, components: Buffer[]): Promise<void> {
    const path = at(dir, temp);
    await symlink(await this.fs.readlink(inode), path);
    if (this.owners) await lchown(path, inode.uid, inode.gid);
    // xattrs before the rename, while the temporary (ASCII) name is what setfattr is given
    await this.queueXattrs(inode, components, { path: `/proc/${process.pid}/fd/${dir.fd}/${temp}`, noDereference: true, handle: null });
    await this.flushXattrs();
    await lutimes(path, seconds(inode.atime), seconds(inode.mtime));
    this.result.symlinks++;
  }

  private async writeSpecial(dir: FileHandle, temp: string, inode: Inode, components: Buffer[]): Promise<void> {
    const node = `/proc/${process.pid}/fd/${dir.fd}/${temp}`;
    const args =
      inode.type === "fifo"
        ? [node, "p"]
        : [node, inode.type === "chardev" ? "c" : "b", String(deviceNumbers(inode).major), String(deviceNumbers(inode).minor)];
    // Node has no mknod(2); mknod(1) creates the node inside the open folder (never follows: it creates)
    const r = await runCommand("mknod", ["-m", "600", ...args]);
    if (r.failed) throw new PloopvaultError(`cannot create ${this.shown(components)}: ${r.summary}`);
    const path = at(dir, temp);
    if (this.owners) await lchown(path, inode.uid, inode.gid);
    // a device or fifo cannot be opened to fchmod it (opening a device has effects); the
    // temporary name is ours and random, and the folder is reached through its open handle
    await chmod(path, inode.permissions);
    await this.queueXattrs(inode, components, { path: node, noDereference: true, handle: null });
    await this.flushXattrs();
    await lutimes(path, seconds(inode.atime), seconds(inode.mtime));
    this.result.specials++;
  }

  /** Link NAME to the first restored name of the inode; false when that is gone (restore it again). */
  private async hardLink(first: Buffer[], dir: FileHandle, name: Buffer, components: Buffer[]): Promise<boolean> {
    const parent = await this.openExisting(first.slice(0, -1));
    if (parent === null) return false;
    try {
      const temp = tempName();
      try {
        await link(at(parent, first[first.length - 1]!), at(dir, temp));
      } catch (error) {
        if (code(error) === "ENOENT") return false;
        throw this.fsError(error, components, "hard-link");
      }
      await rename(at(dir, temp), at(dir, name));
      this.result.hardlinks++;
      return true;
    } finally {
      if (parent !== this.root) await parent.close();
    }
  }

  /** A folder already restored, reopened component by component without following symlinks. */
  private async openExisting(components: Buffer[]): Promise<FileHandle | null> {
    let current = this.root!;
    for (const c of components) {
      let next: FileHandle;
      try {
        next = await open(at(current, c), DIR_FLAGS);
      } catch {
        if (current !== this.root) await current.close();
        return null;
      }
      if (current !== this.root) await current.close();
      current = next;
    }
    return current;
  }

  /** Queue the inode's xattrs for setfattr; true when `handle` is now held by the queue. */
  private async queueXattrs(inode: Inode, components: Buffer[], where: Omit<PendingXattrs, "xattrs" | "shown">): Promise<boolean> {
    const xattrs = await this.fs.xattrs(inode);
    if (xattrs.length === 0) return false;
    this.pendingXattrs.push({ ...where, xattrs, shown: this.shown(components) });
    if (this.pendingXattrs.length >= XATTR_BATCH) await this.flushXattrs();
    return where.handle !== null;
  }

  /** One setfattr --restore per kind of path (-h for symlinks and device nodes). */
  private async flushXattrs(): Promise<void> {
    const pending = this.pendingXattrs;
    if (pending.length === 0) return;
    this.pendingXattrs = [];
    try {
      for (const noDereference of [false, true]) {
        const group = pending.filter((p) => p.noDereference === noDereference);
        if (group.length === 0) continue;
        const dump = group.map((p) => `# file: ${p.path}\n${p.xattrs.map((x) => `${x.name}=0x${x.value.toString("hex")}`).join("\n")}\n`).join("\n");
        const args = [...(noDereference ? ["-h"] : []), "--restore=-"];
        const r = await runCommand(this.setfattr, args, { input: dump });
        if (r.failed) {
          const reason = r.spawnError === "ENOENT" ? `${this.setfattr} not found (install the attr package)` : r.stderr.trim().split("\n")[0] || r.summary;
          for (const p of group) this.xattrFailures.push(`${p.shown}: ${reason}`);
          this.warn(`xattrs of ${group.length} entries not restored: ${reason}`);
        }
      }
    } finally {
      for (const p of pending) await p.handle?.close().catch(() => undefined);
    }
  }

  private fsError(error: unknown, components: Buffer[], action: string): unknown {
    if (error instanceof PloopvaultError) return error;
    const c = code(error);
    if (c === undefined) return error;
    return new PloopvaultError(`cannot ${action} ${this.shown(components)}: ${c}`, { cause: error });
  }
}

function sameComponents(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.length === b.length && a.every((c, i) => c.equals(b[i]!));
}

function isPrefix(prefix: readonly Buffer[], of: readonly Buffer[]): boolean {
  return prefix.length <= of.length && prefix.every((c, i) => c.equals(of[i]!));
}

export async function restoreFiles(fs: ExtFilesystem, options: RestoreFilesOptions): Promise<RestoreFilesResult> {
  return new FileRestorer(fs, options).run();
}

/** restore --include: open the backup's filesystem and restore the paths (what the command calls). */
export async function restoreFilesFromBackup(
  repo: Repository,
  spec: string,
  stateDir: string,
  options: RestoreFilesOptions & { partition?: number; host?: string },
): Promise<RestoreFilesResult & { backup: string; ct: string; warnings: string[]; chunksFetched: number; bytesFetched: number; cacheHits: number }> {
  const backup = await openBackupFilesystemBySpec(repo, spec, stateDir, {
    ...(options.partition === undefined ? {} : { partition: options.partition }),
    ...(options.host === undefined ? {} : { host: options.host }),
  });
  for (const w of backup.fs.warnings) options.warn?.(w);
  const result = await restoreFiles(backup.fs, options);
  return { backup: backup.ref.id, ct: backup.ref.ct, warnings: backup.fs.warnings, ...result, ...fetchStats(backup.disk.stats) };
}
