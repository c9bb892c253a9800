/**
 * The known set shared with the chunk workers (ChunkIdSet.shared(), read by
 * src/backup/chunk-worker.ts): a worker must see exactly the main thread's set, members
 * and non-members alike, since a worker that took a new chunk for known would leave it
 * out of the repository. Runs the built worker helper (dist).
 */
import { randomBytes } from "node:crypto";
import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { ChunkIdSet, ChunkIdSetBuilder } from "../../src/repository/chunk-id-set.js";

const WORKER = new URL("../helpers/known-set-worker.mjs", import.meta.url);

function ask(worker: Worker, ids: Buffer): Promise<{ answers: boolean[]; size: number; shared: boolean }> {
  return new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
    worker.postMessage(ids);
  });
}

describe("a ChunkIdSet shared with worker threads", () => {
  it("answers in every worker exactly as on the main thread, and moves its ids to shared memory once", async () => {
    const members = Array.from({ length: 5000 }, () => randomBytes(32));
    const builder = new ChunkIdSetBuilder();
    builder.addAll(members);
    const set = builder.build();
    const before = Buffer.from(set.buffer);
    const strangers = Array.from({ length: 5000 }, () => randomBytes(32));
    // neighbours of members (last byte changed): a binary search off by one would answer wrongly
    const neighbours = members.slice(0, 500).map((id) => Buffer.concat([id.subarray(0, 31), Buffer.from([id[31]! ^ 1])]));
    const queries = [...members, ...strangers, ...neighbours];
    const expected = queries.map((id) => set.has(id));
    expect(expected.filter(Boolean).length).toBe(members.length);

    const shared = set.shared();
    expect(shared.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(set.shared().buffer).toBe(shared.buffer); // no second copy
    expect(set.buffer.buffer).toBe(shared.buffer); // the set itself now reads the shared bytes
    expect(Buffer.compare(set.buffer, before)).toBe(0);
    expect(queries.map((id) => set.has(id))).toEqual(expected);

    const workers = [0, 1].map(() => new Worker(WORKER, { workerData: { known: shared } }));
    try {
      const replies = await Promise.all(workers.map((w) => ask(w, Buffer.concat(queries))));
      for (const reply of replies) {
        expect(reply.shared).toBe(true);
        expect(reply.size).toBe(members.length);
        expect(reply.answers).toEqual(expected);
      }
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  });

  it("shares an empty set (a first backup)", async () => {
    const shared = ChunkIdSet.empty().shared();
    const worker = new Worker(WORKER, { workerData: { known: shared } });
    try {
      const reply = await ask(worker, randomBytes(64));
      expect(reply).toEqual({ answers: [false, false], size: 0, shared: true });
    } finally {
      await worker.terminate();
    }
  });
});
