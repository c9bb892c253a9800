/**
 * ChunkWorkerPool (src/backup/worker-processor.ts): the chunk workers of one backup are
 * kept for the run's next one, which must get its own known set (the workers encode the
 * chunks that set lacks), and a processor closed with a request outstanding (an aborted
 * backup) must not be handed out again. Workers started before any backup (prestart) get
 * the first backup's set the same way. Runs the build (test/helpers/worker-pool-check.mjs):
 * the workers load dist/src/backup/chunk-worker.js.
 */
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const CHECK = fileURLToPath(new URL("../helpers/worker-pool-check.mjs", import.meta.url));

describe("chunk workers kept from one backup to the next", () => {
  it("are reused with the next backup's known set; an aborted backup's are not", () => {
    const r = JSON.parse(execFileSync(process.execPath, [CHECK], { encoding: "utf8" })) as {
      candidates: number;
      firstEncoded: boolean[];
      sameProcessor: boolean;
      secondEncoded: boolean[];
      abortedIsIdleOne: boolean;
      abortedReusable: boolean;
      nextIsAborted: boolean;
      prestartedEncoded: boolean[];
    };
    expect(r.candidates).toBeGreaterThan(10);
    expect(r.firstEncoded.every(Boolean)).toBe(true); // nothing known: every candidate encoded
    expect(r.sameProcessor).toBe(true);
    // the second backup's set holds every other chunk: only the others are encoded
    expect(r.secondEncoded).toEqual(r.firstEncoded.map((_, i) => i % 2 !== 0));
    expect(r.abortedIsIdleOne).toBe(true);
    expect(r.abortedReusable).toBe(false);
    expect(r.nextIsAborted).toBe(false);
    // workers started ahead of the first backup (ChunkWorkerPool.prestart) encode only what its set lacks
    expect(r.prestartedEncoded).toEqual(r.firstEncoded.map((_, i) => i % 2 !== 0));
  });
});
