/**
 * `ls`: entries of a folder (or a whole subtree) of the filesystem in a backup, as nodes
 * for --json and as `ls -l`-like lines for people. Times are UTC.
 */
import { PathError } from "../fs/errors.js";
import { deviceNumbers, type FileType, type Inode, type Timestamp } from "../fs/ext/inode.js";
import type { ExtFilesystem } from "../fs/ext/filesystem.js";
import { displayName, displayPath, parsePath, walkTree, type WalkItem } from "../fs/walk.js";

export interface FileNode {
  path: string;
  name: string;
  type: FileType;
  /** st_mode: type and permission bits. */
  mode: number;
  /** As `ls -l` shows them, e.g. "-rwsr-xr-x". */
  permissions: string;
  uid: number;
  gid: number;
  size: number;
  links: number;
  inode: number;
  /** ISO 8601 UTC with nanoseconds. */
  mtime: string;
  /** Symlink target. */
  target?: string;
  /** Device numbers of a character or block device. */
  device?: { major: number; minor: number };
}

const TYPE_CHAR: Record<FileType, string> = { file: "-", dir: "d", symlink: "l", chardev: "c", blockdev: "b", fifo: "p", socket: "s" };

export function permissionString(type: FileType, mode: number): string {
  const bit = (mask: number, c: string): string => ((mode & mask) !== 0 ? c : "-");
  const special = (exec: number, flag: number, set: string): string => {
    const x = (mode & exec) !== 0;
    if ((mode & flag) === 0) return x ? "x" : "-";
    return x ? set : set.toUpperCase();
  };
  return (
    TYPE_CHAR[type] +
    bit(0o400, "r") +
    bit(0o200, "w") +
    special(0o100, 0o4000, "s") +
    bit(0o040, "r") +
    bit(0o020, "w") +
    special(0o010, 0o2000, "s") +
    bit(0o004, "r") +
    bit(0o002, "w") +
    special(0o001, 0o1000, "t")
  );
}

/** "2023-11-14T22:13:20.123456789Z" */
export function isoTime(t: Timestamp): string {
  const base = new Date(t.sec * 1000).toISOString().replace(/\.\d{3}Z$/, "");
  return `${base}.${String(t.nsec).padStart(9, "0")}Z`;
}

export async function fileNode(fs: ExtFilesystem, item: WalkItem): Promise<FileNode> {
  const inode: Inode = item.inode;
  const type = inode.type!;
  const node: FileNode = {
    path: displayPath(item.components),
    name: item.components.length === 0 ? "/" : displayName(item.components[item.components.length - 1]!),
    type,
    mode: inode.mode,
    permissions: permissionString(type, inode.permissions),
    uid: inode.uid,
    gid: inode.gid,
    size: inode.size,
    links: inode.links,
    inode: inode.ino,
    mtime: isoTime(inode.mtime),
  };
  if (type === "symlink") node.target = displayName(await fs.readlink(inode));
  if (type === "chardev" || type === "blockdev") node.device = deviceNumbers(inode);
  return node;
}

/** One `ls -l`-like line: permissions, links, owner, group, size, mtime (UTC), path [-> target]. */
export function longLine(node: FileNode): string {
  const size = node.device !== undefined ? `${node.device.major}, ${node.device.minor}` : String(node.size);
  const when = node.mtime.slice(0, 19).replace("T", " ");
  return `${node.permissions} ${String(node.links).padStart(3)} ${String(node.uid).padStart(6)} ${String(node.gid).padStart(6)} ${size.padStart(12)} ${when} ${node.path}${node.target !== undefined ? ` -> ${node.target}` : ""}`;
}

/** The path (typed by a person: see parsePath) resolved without following its last symlink. */
export async function resolveItem(fs: ExtFilesystem, path: string): Promise<WalkItem> {
  const resolved = await fs.resolve(parsePath(path === "" ? "/" : path));
  return { components: resolved.components, inode: resolved.inode };
}

/** ls: the entries of a folder (all below it with recursive), or the one entry of a non-folder. */
export async function* listNodes(fs: ExtFilesystem, path: string, options: { recursive: boolean }): AsyncGenerator<FileNode> {
  const start = await resolveItem(fs, path);
  if (start.inode.type !== "dir") {
    yield fileNode(fs, start);
    return;
  }
  for await (const item of walkTree(fs, start, { recursive: options.recursive, includeStart: false })) yield fileNode(fs, item);
}

export function requireType(item: WalkItem, types: readonly FileType[], what: string): void {
  if (!types.includes(item.inode.type!)) throw new PathError(`${displayPath(item.components)} is a ${item.inode.type}, not ${what}`);
}
