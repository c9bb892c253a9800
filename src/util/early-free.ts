/**
 * Freeing a buffer's memory as soon as its last user is done with it, instead of at the
 * garbage collection that finds it unreachable.
 *
 * Why: a worker hands the main thread each scanned block's new objects in one fresh
 * buffer (and each single encoded chunk in one of its own). Uploads to S3 keep them long
 * enough to be promoted to V8's old generation, which frees a backing store only at a
 * full mark-compact, triggered by external memory growing by tens of MiB: stored objects
 * piled up to 40-85 MiB of a first backup's peak (process.memoryUsage().arrayBuffers at
 * the peak RSS, 2026-12-04). `ArrayBuffer.prototype.transfer(0)` (Node >= 21) detaches
 * the buffer and frees its memory at once; where it is missing, the GC frees it as before.
 */

interface Transferable {
  transfer?: (newLength?: number) => ArrayBuffer;
}

const canFreeEarly = typeof (ArrayBuffer.prototype as Transferable).transfer === "function";

/**
 * Free `buffer`'s memory now: every view of it reads as empty from then on. Only for a
 * buffer the caller allocated itself (never Node's shared Buffer pool, never a
 * SharedArrayBuffer) and that nothing uses any more. Empty buffers are left alone.
 */
export function freeNow(buffer: ArrayBuffer): void {
  if (canFreeEarly && buffer.byteLength > 0) (buffer as Transferable).transfer?.(0);
}

/**
 * The buffer and its holders: the creator holds it first (`release()` when done), every
 * other user `retain()`s before and `release()`s after. The last release frees the memory:
 * every view of it reads as empty from then on, so a holder must be truly done. A user
 * whose work may still touch the bytes after it returned (an upload that failed: its
 * socket may not be closed yet) calls `abandon()`: the buffer is then left to the GC.
 */
export class BufferRelease {
  private holders = 1;
  private abandoned = false;

  constructor(private readonly buffer: ArrayBuffer) {}

  retain(): void {
    if (this.holders <= 0) throw new Error("internal error: retaining a buffer already freed");
    this.holders++;
  }

  release(): void {
    if (this.holders <= 0) throw new Error("internal error: releasing a buffer already freed");
    this.holders--;
    if (this.holders === 0 && !this.abandoned) freeNow(this.buffer);
  }

  abandon(): void {
    this.abandoned = true;
  }
}
