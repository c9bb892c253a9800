/**
 * Every command of the program, in help order, each loaded only when wanted (src/main.ts):
 * a run loads the modules of its own command, not those of all of them (module loading is
 * most of a run's fixed cost, docs/incremental.md "Fixed cost per container").
 */
import type { Command } from "commander";

export const COMMANDS: readonly (readonly [name: string, load: () => Promise<Command>])[] = [
  ["init", async () => (await import("./init.js")).initCommand()],
  ["backup", async () => (await import("./backup.js")).backupCommand()],
  ["snapshots", async () => (await import("./snapshots.js")).snapshotsCommand()],
  ["restore", async () => (await import("./restore.js")).restoreCommand()],
  ["prune", async () => (await import("./prune.js")).pruneCommand()],
  ["forget", async () => (await import("./forget.js")).forgetCommand()],
  ["protect", async () => (await import("./protect.js")).protectCommand()],
  ["unprotect", async () => (await import("./protect.js")).unprotectCommand()],
  ["stats", async () => (await import("./stats.js")).statsCommand()],
  ["diff", async () => (await import("./diff.js")).diffCommand()],
  ["check", async () => (await import("./check.js")).checkCommand()],
  ["serve-nbd", async () => (await import("./serve-nbd.js")).serveNbdCommand()],
  ["key", async () => (await import("./key.js")).keyCommand()],
  ["release", async () => (await import("./release.js")).releaseCommand()],
  ["ls", async () => (await import("./ls.js")).lsCommand()],
  ["dump", async () => (await import("./dump.js")).dumpCommand()],
  ["copy", async () => (await import("./copy.js")).copyCommand()],
  ["completion", async () => (await import("./completion.js")).completionCommand()],
];

/** Every command, for help and completion. */
export function loadAllCommands(): Promise<Command[]> {
  return Promise.all(COMMANDS.map(([, load]) => load()));
}
