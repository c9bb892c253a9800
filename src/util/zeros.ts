/**
 * A zero buffer shared by whatever fills holes or tests data for zeros (ploop writer,
 * restore): grown on demand, never written to.
 */
let zeros = Buffer.alloc(1 << 20);

/** `length` zero bytes (a view of the shared buffer: read it, never write it). */
export function zeroView(length: number): Buffer {
  if (zeros.length < length) zeros = Buffer.alloc(length);
  return zeros.subarray(0, length);
}

/** Whether every byte of `buf` is zero: a native memcmp against the zero buffer (an order of magnitude faster than a loop). */
export function isAllZero(buf: Uint8Array): boolean {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).equals(zeroView(buf.byteLength));
}
