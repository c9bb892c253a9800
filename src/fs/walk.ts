/**
 * Walking a directory tree of an ExtFilesystem in name order (bytewise, like `LC_ALL=C
 * ls`), parents before their children. A directory reached a second time (a directory
 * hard link or a cycle, both impossible in a sound filesystem) is an error, so a hostile
 * image cannot make a walk run forever.
 */
import { FilesystemError } from "./errors.js";
import type { ExtFilesystem, Inode } from "./ext/filesystem.js";
import { displayPath } from "./names.js";

export { displayName, displayPath, parsePath } from "./names.js";

export interface WalkItem {
  /** Path components from the filesystem root. */
  components: Buffer[];
  inode: Inode;
}

export interface WalkOptions {
  /** Descend into sub-directories (default: only the start directory's entries). */
  recursive: boolean;
  /** Yield the start itself first (dump and restore do; ls lists only the contents). */
  includeStart: boolean;
}

/** Entries of `dir`, sorted by name, with their inodes. */
export async function sortedChildren(fs: ExtFilesystem, dir: Inode): Promise<{ name: Buffer; inode: Inode }[]> {
  const entries = await fs.readDir(dir);
  entries.sort((a, b) => Buffer.compare(a.name, b.name));
  const out: { name: Buffer; inode: Inode }[] = [];
  for (const e of entries) out.push({ name: e.name, inode: await fs.inode(e.ino) });
  return out;
}

export async function* walkTree(fs: ExtFilesystem, start: WalkItem, options: WalkOptions): AsyncGenerator<WalkItem> {
  if (options.includeStart) yield start;
  if (start.inode.type !== "dir") return;
  const seen = new Map<number, Buffer[]>([[start.inode.ino, start.components]]);
  async function* descend(dir: WalkItem): AsyncGenerator<WalkItem> {
    for (const child of await sortedChildren(fs, dir.inode)) {
      const item: WalkItem = { components: [...dir.components, child.name], inode: child.inode };
      yield item;
      if (child.inode.type !== "dir" || !options.recursive) continue;
      const before = seen.get(child.inode.ino);
      if (before !== undefined) {
        throw new FilesystemError(
          `${fs.label}: directory inode ${child.inode.ino} is reached twice, as ${displayPath(before)} and ${displayPath(item.components)} (a directory hard link or a cycle)`,
        );
      }
      seen.set(child.inode.ino, item.components);
      yield* descend(item);
    }
  }
  yield* descend(start);
}
