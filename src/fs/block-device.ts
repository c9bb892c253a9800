/**
 * The input of the filesystem reader and of the NBD export: a read-only, random-access
 * byte source. A raw disk image, one partition of it, or a backup's logical disk read
 * lazily from the repository (src/restore/lazy-disk.ts) all look like this.
 */
export interface BlockDevice {
  /** Size in bytes. */
  readonly size: number;
  /**
   * Exactly `length` bytes from `offset`; zeros where the source has holes. Reads that
   * reach beyond `size` are a RangeError (callers bound their reads by the device size,
   * so a hostile length field surfaces as an error, never as a huge allocation).
   */
  read(offset: number, length: number): Promise<Buffer>;
}

/** Refuse reads outside [0, size): one shared check for every implementation. */
export function checkRange(device: { readonly size: number }, offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > device.size) {
    throw new RangeError(`${what}: read of ${length} bytes at ${offset} is outside the device (${device.size} bytes)`);
  }
}

/** A window [start, start + size) of another device: a partition of a disk. */
export class SubDevice implements BlockDevice {
  constructor(
    private readonly parent: BlockDevice,
    readonly start: number,
    readonly size: number,
  ) {
    checkRange(parent, start, size, "partition");
  }

  read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length, "partition");
    return this.parent.read(this.start + offset, length);
  }
}
