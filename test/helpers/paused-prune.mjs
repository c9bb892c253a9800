// Run by test/prune/race.test.ts: a prune (--keep-last 1 --grace 0) that stops once its
// sweep handshake succeeded (its marker is live, no backup is registered), before it
// deletes anything, and waits there to be killed. Lock timing comes from the environment
// (PLOOPVAULT_LOCK_TTL / PLOOPVAULT_LOCK_REFRESH), like the CLI's.
// Usage: node paused-prune.mjs REPO_URL STATE_DIR LOCK_HOST
import { openRepository } from "../../dist/src/commands/common.js";
import { lockTiming } from "../../dist/src/prune/locks.js";
import { runPrune } from "../../dist/src/prune/prune.js";

const [repoUrl, stateDir, host] = process.argv.slice(2);
const repo = await openRepository({ repo: repoUrl, stateDir });
const options = {
  policy: { last: 1 },
  graceMs: 0,
  waitMs: 60_000,
  host,
  timing: lockTiming(),
  log: (line) => process.stderr.write(`${line}\n`),
  warn: (line) => process.stderr.write(`warning: ${line}\n`),
};
await runPrune(repo, options, {
  beforeDelete: async () => {
    process.stderr.write("paused before deleting\n");
    // the lease timers are unref'd: this interval keeps the process (and its marker) alive
    await new Promise((resolve) => setTimeout(resolve, 120_000));
  },
});
await repo.close();
