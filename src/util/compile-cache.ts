/**
 * V8's compile cache (Node >= 22.1) for ploopvault's own modules and its dependencies,
 * so that the nightly run of a node does not compile again what last night's compiled.
 * It lives in the state directory, and only when that directory is ours and not writable
 * by anyone else: the cache holds code this process will run (root, usually), so a
 * directory another user can write (such as /tmp, Node's default) is never used.
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off.
 */
import { mkdirSync, statSync } from "node:fs";
import * as nodeModule from "node:module";
import { join } from "node:path";
import { DEFAULT_STATE_DIR } from "./state-dir.js";

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
    const result = enable(dir);
    return result.directory ?? null;
  } catch {
    return null; // no state dir yet (first run), or not ours: run without the cache
  }
}
