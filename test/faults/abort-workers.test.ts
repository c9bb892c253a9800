/**
 * A backup stopped while reads still wait on --limit-read's throttle (host lock lost,
 * SIGTERM, registration lapsed): the reads that finish after the pipeline gave up must not
 * start chunk workers again, or the process never exits (seen in CI: the error line was
 * printed and the run hung with two worker ports open).
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SCRIPT = fileURLToPath(new URL("../helpers/abort-during-read.mjs", import.meta.url));

describe("a backup aborted during throttled reads", () => {
  it("rejects and lets the process exit: no chunk worker is left running", async () => {
    const child = spawn(process.execPath, [SCRIPT], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once("exit", (c, s) => resolve([c, s])));
    clearTimeout(timer);
    expect(out.trim(), err).toBe("rejected: backup of abort interrupted");
    expect(signal, "the process did not exit by itself within 15 s").toBeNull();
    expect(code, err).toBe(0);
  }, 30_000);
});
