/** forEachConcurrent (src/util/limiter.ts): the one worker pool of the stores and lazy disks. */
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { forEachConcurrent } from "../../src/util/limiter.js";

describe("forEachConcurrent", () => {
  it("runs every item once, at most `limit` at a time, started in order", async () => {
    const started: number[] = [];
    let running = 0;
    let peak = 0;
    await forEachConcurrent([...Array(20).keys()], 4, async (item) => {
      started.push(item);
      peak = Math.max(peak, ++running);
      await sleep(item % 3);
      running--;
    });
    expect(started).toEqual([...Array(20).keys()]);
    expect(peak).toBe(4);
  });

  it("after a failure starts nothing more, and returns only when the running items are done", async () => {
    const started: number[] = [];
    let running = 0;
    const run = forEachConcurrent([...Array(20).keys()], 3, async (item) => {
      started.push(item);
      running++;
      try {
        if (item === 1) throw new Error("item 1 failed");
        await sleep(20);
      } finally {
        running--;
      }
    });
    await expect(run).rejects.toThrow("item 1 failed");
    expect(running).toBe(0); // nothing keeps working in the background
    expect(started.length).toBeLessThan(6);
  });

  it("handles no items and a limit larger than the items", async () => {
    await forEachConcurrent([], 8, async () => {
      throw new Error("never called");
    });
    const seen: string[] = [];
    await forEachConcurrent(["a", "b"], 100, async (item, index) => {
      seen.push(`${index}${item}`);
    });
    expect(seen.sort()).toEqual(["0a", "1b"]);
  });
});
