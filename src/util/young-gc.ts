/**
 * A minor (young-generation) garbage collection on demand, for the chunk workers.
 *
 * Why: a worker sends every scanned block back with a fresh buffer of encoded objects,
 * transferred. The worker's detached ArrayBuffer objects keep those backing stores alive
 * until the worker's own young generation is collected, and a worker allocates so few
 * JavaScript objects that this happens rarely: on Node 24 (larger young generation) that
 * pinned ~100 MiB per backup (peak RSS 330-378 MiB backing up a full 1 GiB disk, 233-249
 * MiB with a minor GC after each block, which also cut CPU: fewer page faults).
 *
 * Node exposes gc() only with --expose-gc; the flag can be set at run time, after which a
 * new context has the function. Where that fails, nothing is collected early (only
 * memory is at stake, never correctness).
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

type GcFunction = (options?: { type?: "minor" | "major"; execution?: "sync" | "async" }) => void;

export function youngGenerationCollector(): (() => void) | null {
  try {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as unknown;
    if (typeof gc !== "function") return null;
    const collect = gc as GcFunction;
    return () => collect({ type: "minor" });
  } catch {
    return null;
  }
}
