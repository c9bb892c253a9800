/** Positional reads and writes of a whole range (read(2) and write(2) may do fewer bytes than asked). */
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

/**
 * Write all of `data` at `position`. A write that makes no progress fails as EIO (callers
 * turn error codes into their one-line reasons), naming the offset.
 */
export async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    if (bytesWritten <= 0) throw Object.assign(new Error(`short write at ${position + done}`), { code: "EIO" });
    done += bytesWritten;
  }
}
