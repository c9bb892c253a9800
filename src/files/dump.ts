/**
 * `dump`: one file's content, or a folder as a tar stream (src/files/tar.ts), written to
 * a byte sink with backpressure. Holes of a dumped file are written as zeros (it is the
 * file's content); in a tar stream sparse files stay sparse. Sockets cannot be stored in
 * a tar archive (GNU tar skips them too) and are reported as skipped.
 */
import type { Writable } from "node:stream";
import { PloopvaultError } from "../errors.js";
import { PathError } from "../fs/errors.js";
import { deviceNumbers } from "../fs/ext/inode.js";
import type { ExtFilesystem, Inode } from "../fs/ext/filesystem.js";
import { displayPath, walkTree, type WalkItem } from "../fs/walk.js";
import { dataRuns, readRuns, regionsOf } from "./content.js";
import { padding, sparseMap, tarEnd, tarHeader, type TarEntry, type TarType } from "./tar.js";

/** Where dumped bytes go: write() resolves when the bytes may be followed by more. */
export interface ByteSink {
  write(data: Buffer): Promise<void>;
}

/** A Writable as a ByteSink that waits for 'drain' when the stream's buffer is full. */
export function streamSink(stream: Writable): ByteSink & { bytes: number } {
  const sink = {
    bytes: 0,
    write(data: Buffer): Promise<void> {
      if (stream.destroyed || stream.writableEnded) return Promise.reject(new PloopvaultError("the reader of the dump closed it before the end (broken pipe)"));
      sink.bytes += data.length;
      if (stream.write(data)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const done = (error?: Error): void => {
          stream.off("drain", onDrain);
          stream.off("error", onError);
          if (error) reject(error);
          else resolve();
        };
        const onDrain = (): void => done();
        const onError = (error: NodeJS.ErrnoException): void =>
          done(error.code === "EPIPE" ? new PloopvaultError("the reader of the dump closed it before the end (broken pipe)") : error);
        stream.once("drain", onDrain);
        stream.once("error", onError);
      });
    },
  };
  return sink;
}

const ZEROS = Buffer.alloc(1 << 20);

async function writeZeros(sink: ByteSink, count: number): Promise<void> {
  for (let left = count; left > 0; left -= ZEROS.length) await sink.write(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
}

/** The content of a regular file, holes as zeros. */
export async function dumpFileContent(fs: ExtFilesystem, inode: Inode, sink: ByteSink): Promise<number> {
  let at = 0;
  for await (const piece of readRuns(fs, inode, await dataRuns(fs, inode))) {
    await writeZeros(sink, piece.offset - at);
    await sink.write(piece.data);
    at = piece.offset + piece.data.length;
  }
  await writeZeros(sink, inode.size - at);
  return inode.size;
}

export interface TarResult {
  entries: number;
  /** Paths not stored (sockets). */
  skipped: string[];
}

const TAR_TYPES: Partial<Record<NonNullable<Inode["type"]>, TarType>> = {
  file: "file",
  dir: "dir",
  symlink: "symlink",
  chardev: "chardev",
  blockdev: "blockdev",
  fifo: "fifo",
};

/**
 * A tar stream of `start` (a folder: everything below it; or a single entry). Paths in the
 * archive are the paths in the filesystem without the leading "/" (as `tar -C / -c var/www`
 * would write them), so extracting into DIR gives DIR/var/www/...
 */
export async function dumpTar(fs: ExtFilesystem, start: WalkItem, sink: ByteSink): Promise<TarResult> {
  const firstPath = new Map<number, Buffer>();
  const result: TarResult = { entries: 0, skipped: [] };
  for await (const item of walkTree(fs, start, { recursive: true, includeStart: true })) {
    if (item.components.length === 0) continue; // the root itself: "./" adds nothing tar needs
    const inode = item.inode;
    const path = Buffer.concat(item.components.flatMap((c, i) => (i === 0 ? [c] : [Buffer.from("/"), c])));
    const type = TAR_TYPES[inode.type!];
    if (type === undefined) {
      result.skipped.push(displayPath(item.components));
      continue;
    }
    const base = {
      path,
      mode: inode.permissions,
      uid: inode.uid,
      gid: inode.gid,
      mtimeSec: inode.mtime.sec,
      mtimeNsec: inode.mtime.nsec,
      xattrs: await fs.xattrs(inode),
    };
    result.entries++;
    if (type !== "dir" && inode.links > 1) {
      const first = firstPath.get(inode.ino);
      if (first !== undefined) {
        await sink.write(tarHeader({ ...base, type: "hardlink", size: 0, linkTarget: first }));
        continue;
      }
      firstPath.set(inode.ino, path);
    }
    if (type === "file") {
      await dumpTarFile(fs, inode, base, sink);
      continue;
    }
    const entry: TarEntry = { ...base, type, size: 0 };
    if (type === "symlink") entry.linkTarget = await fs.readlink(inode);
    if (type === "chardev" || type === "blockdev") entry.device = deviceNumbers(inode);
    await sink.write(tarHeader(entry));
  }
  await sink.write(tarEnd());
  return result;
}

async function dumpTarFile(fs: ExtFilesystem, inode: Inode, base: Omit<TarEntry, "type" | "size">, sink: ByteSink): Promise<void> {
  const runs = await dataRuns(fs, inode);
  const dataBytes = runs.reduce((s, r) => s + r.length, 0);
  if (dataBytes === inode.size) {
    await sink.write(tarHeader({ ...base, type: "file", size: inode.size }));
    for await (const piece of readRuns(fs, inode, runs)) await sink.write(piece.data);
    await sink.write(Buffer.alloc(padding(inode.size)));
    return;
  }
  const regions = regionsOf(runs);
  // a file ending in a hole ends its map with an empty region at its size, as GNU tar does
  const last = regions[regions.length - 1];
  if (last === undefined || last.offset + last.length < inode.size) regions.push({ offset: inode.size, length: 0 });
  const map = sparseMap(regions);
  const size = map.length + dataBytes;
  await sink.write(tarHeader({ ...base, type: "file", size, sparse: { realSize: inode.size, mapBytes: map.length } }));
  await sink.write(map);
  for await (const piece of readRuns(fs, inode, runs)) await sink.write(piece.data);
  await sink.write(Buffer.alloc(padding(size)));
}

export function requireDumpable(item: WalkItem): void {
  const t = item.inode.type;
  if (t === "symlink") throw new PathError(`${displayPath(item.components)} is a symbolic link: dump its target, or its folder as a tar stream`);
  if (t !== "file" && t !== "dir") throw new PathError(`${displayPath(item.components)} is a ${t}: only files and folders can be dumped`);
}
