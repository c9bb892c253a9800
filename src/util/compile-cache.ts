/**
 * V8's compile cache (Node >= 22.1) for ploopvault's own modules and its dependencies,
 * so that the nightly run of a node does not compile again what last night's compiled
 * (~20-30 ms of a backup run's ~0.2 s fixed cost, bench/startup.ts).
 * It lives in the state directory, and only when that directory is ours and not writable
 * by anyone else: the cache holds code this process will run (root, usually), so a
 * directory another user can write (such as /tmp, Node's default) is never used.
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off.
 *
 * A cache entry V8 cannot read back can crash the process (SIGSEGV in the deserializer;
 * Node's maintainers give no guarantee against it), and it would crash every later run
 * that loads the same module: a node whose backups fail every night. So the cache heals
 * itself: each run that uses it holds a marker file (compile-cache/run-PID) and removes it
 * when it exits; a marker whose process is gone means a run died without exiting (a crash,
 * SIGKILL, a power cut), and the next run empties the cache and runs without it. The run
 * after that builds it again. (docs/operations.md, "After a crash or a kill".)
 */
import { mkdirSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import * as nodeModule from "node:module";
import { join } from "node:path";
import { isProcessAlive } from "./process-alive.js";
import { DEFAULT_STATE_DIR } from "./state-dir.js";

const MARKER_PREFIX = "run-";

/**
 * Markers of runs that died without exiting, in the cache directory `dir` (not this
 * process's). If there are any, the cache is emptied (entries and those markers) and true
 * is returned: this run must not use it.
 */
export function clearCacheAfterCrash(dir: string, isAlive: (pid: number) => boolean = isProcessAlive): boolean {
  const names = readdirSync(dir);
  const dead = names.filter((name) => {
    if (!name.startsWith(MARKER_PREFIX)) return false;
    const pid = Number(name.slice(MARKER_PREFIX.length));
    return !Number.isInteger(pid) || pid <= 0 || (pid !== process.pid && !isAlive(pid));
  });
  if (dead.length === 0) return false;
  // entries first, the dead markers last: a crash in between leaves a marker, so the next run clears again
  for (const name of names) if (!name.startsWith(MARKER_PREFIX)) rmSync(join(dir, name), { recursive: true, force: true });
  for (const name of dead) rmSync(join(dir, name), { force: true });
  return true;
}

export function enableOwnCompileCache(env: NodeJS.ProcessEnv = process.env): string | null {
  const enable = (nodeModule as { enableCompileCache?: (dir: string) => { status: number; directory?: string } }).enableCompileCache;
  if (typeof enable !== "function" || env.NODE_DISABLE_COMPILE_CACHE) return null;
  try {
    const stateDir = env.PLOOPVAULT_STATE || DEFAULT_STATE_DIR;
    const uid = process.getuid?.() ?? -1;
    const state = statSync(stateDir);
    if (!state.isDirectory() || state.uid !== uid || (state.mode & 0o022) !== 0) return null;
    const dir = join(stateDir, "compile-cache");
    mkdirSync(dir, { mode: 0o700, recursive: true });
    const cache = statSync(dir);
    if (!cache.isDirectory() || cache.uid !== uid || (cache.mode & 0o077) !== 0) return null;
    if (clearCacheAfterCrash(dir)) return null;
    const marker = join(dir, `${MARKER_PREFIX}${process.pid}`);
    writeFileSync(marker, "", { mode: 0o600 });
    process.on("exit", () => {
      try {
        unlinkSync(marker);
      } catch {
        // already gone (another run cleared the cache): nothing to do
      }
    });
    const result = enable(dir);
    return result.directory ?? null;
  } catch {
    return null; // no state dir yet (first run), or not ours: run without the cache
  }
}
