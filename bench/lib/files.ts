/** File helpers of the benchmark: sizes of repositories, hashes, cache warming. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, open, readdir, utimes } from "node:fs/promises";
import { join } from "node:path";

export const MB = 1e6;

export interface TreeSize {
  /** Sum of file sizes (what `du -sb` calls the apparent size). */
  bytes: number;
  /** Space allocated on disk (`du -sB1`). */
  diskBytes: number;
  files: number;
}

export async function treeSize(root: string): Promise<TreeSize> {
  const total: TreeSize = { bytes: 0, diskBytes: 0, files: 0 };
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        await walk(path);
        continue;
      }
      const st = await lstat(path);
      total.bytes += st.size;
      total.diskBytes += st.blocks * 512;
      total.files++;
    }
  };
  await walk(root);
  return total;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** Read files once so every tool starts with the same (warm) page cache. */
export async function warmCache(paths: readonly string[]): Promise<void> {
  const buf = Buffer.allocUnsafe(8 << 20);
  for (const path of paths) {
    const fh = await open(path, "r");
    try {
      let at = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, at);
        if (bytesRead === 0) break;
        at += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
}

/** New mtime and ctime, same content: what a running container's image looks like a day later. */
export async function touch(paths: readonly string[]): Promise<void> {
  const now = new Date();
  for (const path of paths) await utimes(path, now, now);
}
