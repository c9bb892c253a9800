/**
 * VerifiedReads (src/uploader/verified.ts), the one read-verify-retry decorator: a body
 * that fails its check, or a 404, is read once more; only an object bad twice is reported.
 * Fault injection: a MemoryStore whose first reads of a key return a damaged body.
 */
import { describe, expect, it } from "vitest";
import { chunkerParamsForAverage } from "../../src/chunker/index.js";
import { IntegrityError } from "../../src/errors.js";
import { newRepositoryConfig } from "../../src/repository/config.js";
import { chunkKey } from "../../src/repository/layout.js";
import { Repository } from "../../src/repository/repository.js";
import { MemoryStore } from "../../src/uploader/memory.js";
import { StoreError } from "../../src/uploader/store.js";
import { VerifiedReads } from "../../src/uploader/verified.js";

/** Flips a byte of the first `damaged` bodies read of each key; counts reads. */
class FlakyStore extends MemoryStore {
  readonly reads = new Map<string, number>();
  constructor(private readonly damaged: number) {
    super("flaky");
  }
  override async get(key: string): Promise<Buffer> {
    const n = (this.reads.get(key) ?? 0) + 1;
    this.reads.set(key, n);
    const body = Buffer.from(await super.get(key));
    if (n <= this.damaged && body.length > 0) body[body.length >> 1]! ^= 0x01;
    return body;
  }
}

const expectBody = (wanted: string) => (body: Buffer) => {
  if (body.toString() !== wanted) throw new IntegrityError(`object does not verify`);
  return body.toString();
};

describe("VerifiedReads", () => {
  it("a body damaged once is read again and returned", async () => {
    const store = new FlakyStore(1);
    await store.put("k", Buffer.from("hello world"));
    expect(await new VerifiedReads(store).get("k", expectBody("hello world"))).toBe("hello world");
    expect(store.reads.get("k")).toBe(2);
  });

  it("a body damaged twice is reported as read twice", async () => {
    const store = new FlakyStore(2);
    await store.put("k", Buffer.from("hello world"));
    await expect(new VerifiedReads(store).get("k", expectBody("hello world"))).rejects.toThrow(/does not verify \(read twice\)/);
    expect(store.reads.get("k")).toBe(2);
  });

  it("a missing object is asked for twice, then its not-found error is thrown; other errors are not retried", async () => {
    const store = new FlakyStore(0);
    const missing = new VerifiedReads(store).get("absent", (b) => b);
    await expect(missing).rejects.toSatisfy((e: unknown) => e instanceof StoreError && e.kind === "not-found");
    expect(store.reads.get("absent")).toBe(2);
    await store.put("k", Buffer.from("x"));
    await expect(
      new VerifiedReads(store).get("k", () => {
        throw new Error("not an integrity problem");
      }),
    ).rejects.toThrow("not an integrity problem");
    expect(store.reads.get("k")).toBe(1);
  });

  it("Repository.readChunk (copy's read) re-reads a chunk damaged in transit, and names chunk and backup when it is bad twice", async () => {
    for (const damaged of [1, 2]) {
      const store = new FlakyStore(damaged);
      const repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(16 << 10), 3, new Date("2026-01-01T00:00:00Z")));
      const plain = Buffer.from("a chunk's plain bytes ".repeat(100));
      const id = repo.chunkId(plain).toString("hex");
      await repo.putChunkObject(id, repo.encodeChunk(plain));
      const read = repo.readChunk(id, { ct: "101", id: "20260101T000000Z-abcd" });
      if (damaged === 1) expect((await read).plain.equals(plain)).toBe(true);
      else await expect(read).rejects.toThrow(new RegExp(`chunk ${id}.*\\(read twice\\) \\(backup 101/20260101T000000Z-abcd\\)`));
      expect(store.reads.get(chunkKey(id))).toBe(2);
    }
  });
});
