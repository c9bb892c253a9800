/**
 * The ploopvault command as an operator runs it: dist/src/cli.js executed as a program, so
 * its launcher line applies (src/cli.ts: malloc arenas, V8 young generation), with the
 * node that runs the bench first on PATH. `node dist/src/cli.js` would skip the launcher
 * and measure another process than the one cron starts.
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const PLOOPVAULT_CLI = join(resolve(dirname(fileURLToPath(import.meta.url)), "../../.."), "dist", "src", "cli.js");

/** `env` with the bench's node first on PATH, for the launcher's `node`. */
export function withBenchNode(env: Record<string, string> = {}): Record<string, string> {
  return { ...env, PATH: `${dirname(process.execPath)}:${env.PATH ?? process.env.PATH ?? "/usr/bin:/bin"}` };
}
