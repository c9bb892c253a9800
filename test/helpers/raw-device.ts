/** A raw disk image file as a BlockDevice (tests and the oracle comparisons read images directly). */
import { openSync, readSync, closeSync, fstatSync } from "node:fs";
import { checkRange, type BlockDevice } from "../../src/fs/block-device.js";

export class RawFileDevice implements BlockDevice {
  readonly size: number;
  private readonly fd: number;
  /** Bytes read so far (tests assert on how much a lookup touches). */
  bytesRead = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, "r");
    this.size = fstatSync(this.fd).size;
  }

  read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length, this.path);
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    this.bytesRead += length;
    return Promise.resolve(out);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** An in-memory image as a BlockDevice (fuzzing). */
export class BufferDevice implements BlockDevice {
  constructor(readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length, "image");
    return Promise.resolve(Buffer.from(this.data.subarray(offset, offset + length)));
  }
}
