/** Positional reads of a whole range (read(2) may return fewer bytes than asked). */
import type { FileHandle } from "node:fs/promises";

/** Read `target.length` bytes at `position` unless the file ends first; returns the bytes read. */
export async function readFully(fh: FileHandle, position: number, target: Uint8Array): Promise<number> {
  let done = 0;
  while (done < target.length) {
    const { bytesRead } = await fh.read(target, done, target.length - done, position + done);
    if (bytesRead === 0) break; // end of file
    done += bytesRead;
  }
  return done;
}
