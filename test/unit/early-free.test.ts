/**
 * Stored objects are freed as soon as they are stored (src/util/early-free.ts), never
 * before, and never after a failed upload that may still be reading them.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { WorkerChunkProcessor } from "../../src/backup/worker-processor.js";
import { ChunkCodec } from "../../src/repository/chunk-codec.js";
import { ChunkIdSet } from "../../src/repository/chunk-id-set.js";
import { BufferRelease } from "../../src/util/early-free.js";

const PROBE = fileURLToPath(new URL("../helpers/early-free-probe.mjs", import.meta.url));
const canFree = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === "function";

async function probe(mode: "ok" | "fail"): Promise<Record<string, unknown>> {
  const { stdout } = await promisify(execFile)(process.execPath, [PROBE, mode], { timeout: 30_000 });
  return JSON.parse(stdout.trim()) as Record<string, unknown>;
}

describe("BufferRelease", () => {
  it.runIf(canFree)("frees the buffer at the last release, not before", () => {
    const buffer = new ArrayBuffer(1024);
    const release = new BufferRelease(buffer);
    release.retain();
    release.retain();
    release.release(); // the creator
    release.release();
    expect(buffer.byteLength).toBe(1024);
    release.release();
    expect(buffer.byteLength).toBe(0);
    expect(() => release.retain()).toThrow(/already freed/);
  });

  it("leaves an abandoned buffer to the garbage collector", () => {
    const buffer = new ArrayBuffer(1024);
    const release = new BufferRelease(buffer);
    release.retain();
    release.abandon();
    release.release();
    release.release();
    expect(buffer.byteLength).toBe(1024);
  });
});

describe("a backup through chunk workers", () => {
  it("frees every stored chunk's buffer by the time it returns, and restores bit-identical", async () => {
    const result = await probe("ok");
    expect(result.restoredEqual, JSON.stringify(result)).toBe(true);
    expect(result.chunkPuts).toBeGreaterThan(100);
    expect(result.freed, JSON.stringify(result)).toBe(canFree ? result.chunkPuts : 0);
  }, 60_000);

  it("does not free the body of an upload that failed", async () => {
    const result = await probe("fail");
    expect(result.error).toMatch(/injected upload failure/);
    expect(result.failedBodyFreed).toBe(false);
  }, 60_000);
});

describe("WorkerChunkProcessor.process of a known chunk", () => {
  it.runIf(canFree)("frees its copy of the chunk once hashed (no worker is started for it)", async () => {
    const codec = new ChunkCodec({ compressionLevel: 3, keys: null });
    const plain = Buffer.alloc(256 << 10, 7);
    const known = ChunkIdSet.fromSortedBuffer(codec.id(plain));
    const hashed: Uint8Array[] = [];
    const idAsync = codec.idAsync.bind(codec);
    codec.idAsync = async (bytes: Uint8Array): Promise<Buffer> => {
      hashed.push(bytes);
      return idAsync(bytes);
    };
    const processor = new WorkerChunkProcessor(known, codec, 2);
    try {
      const { id, object } = await processor.process(plain);
      expect(object).toBeNull();
      expect(id.equals(codec.id(plain))).toBe(true);
      expect(hashed).toHaveLength(1);
      expect(hashed[0]!.buffer.byteLength).toBe(0);
      expect(plain.every((b) => b === 7)).toBe(true); // the caller's bytes are untouched
    } finally {
      await processor.close();
    }
  });
});
