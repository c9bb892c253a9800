/**
 * A file's content as data pieces at their offsets, holes left out: what dump streams
 * (holes as zeros), what the tar writer stores as a sparse file, and what restore writes
 * (holes stay holes). Large files are read in pieces of up to 8 MiB with a few pieces in
 * flight, so a backup's chunks are fetched concurrently (LazyBackupDisk fetches the chunks
 * of one piece in parallel as well) while the previous piece is being written.
 */
import type { ExtFilesystem, Inode } from "../fs/ext/filesystem.js";

export interface DataRun {
  /** Byte offset in the file. */
  offset: number;
  length: number;
  /** First filesystem block holding it (null: inline data). */
  block: number | null;
}

export interface Region {
  offset: number;
  length: number;
}

const PIECE_BYTES = 8 << 20;
const PIECES_AHEAD = 3;

/** Where the file's data is, in file order: unwritten extents and holes left out. */
export async function dataRuns(fs: ExtFilesystem, inode: Inode): Promise<DataRun[]> {
  if (inode.size === 0) return [];
  if (fs.isInline(inode)) return [{ offset: 0, length: inode.size, block: null }];
  const bs = fs.blockSize;
  const out: DataRun[] = [];
  for await (const run of fs.runs(inode)) {
    if (run.unwritten) continue;
    const offset = run.logical * bs;
    const length = Math.min(run.length * bs, inode.size - offset);
    if (length > 0) out.push({ offset, length, block: run.physical });
  }
  return out;
}

/** Data runs merged where they touch: the regions of a sparse file. */
export function regionsOf(runs: readonly DataRun[]): Region[] {
  const out: Region[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last !== undefined && last.offset + last.length === r.offset) last.length += r.length;
    else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}

/** The data of `runs` in file order, in pieces of at most 8 MiB, a few read ahead. */
export async function* readRuns(fs: ExtFilesystem, inode: Inode, runs: readonly DataRun[]): AsyncGenerator<{ offset: number; data: Buffer }> {
  const bs = fs.blockSize;
  function* pieces(): Generator<{ offset: number; read: () => Promise<Buffer> }> {
    for (const run of runs) {
      if (run.block === null) {
        yield { offset: run.offset, read: () => fs.read(inode, run.offset, run.length) };
        continue;
      }
      for (let done = 0; done < run.length; done += PIECE_BYTES) {
        const length = Math.min(PIECE_BYTES, run.length - done);
        const block = run.block + done / bs;
        yield { offset: run.offset + done, read: async () => (await fs.readBlocks(block, Math.ceil(length / bs))).subarray(0, length) };
      }
    }
  }
  const window: { offset: number; data: Promise<Buffer> }[] = [];
  const source = pieces();
  const fill = (): void => {
    while (window.length < PIECES_AHEAD) {
      const next = source.next();
      if (next.done) return;
      const data = next.value.read();
      data.catch(() => undefined); // awaited below in order; a failure must not be "unhandled" meanwhile
      window.push({ offset: next.value.offset, data });
    }
  };
  fill();
  while (window.length > 0) {
    const head = window.shift()!;
    const data = await head.data;
    fill();
    yield { offset: head.offset, data };
  }
}
