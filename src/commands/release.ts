import { join } from "node:path";
import { Command, Option } from "commander";
import { releaseKeptSnapshot } from "../backup/incremental.js";
import { SnapshotJournal } from "../backup/journal.js";
import { KeptSnapshots } from "../backup/kept-snapshot.js";
import { PloopvaultError, UsageError } from "../errors.js";
import { PloopCli } from "../ploop/driver.js";
import { validateName } from "../repository/layout.js";
import { acquireHostLock } from "../util/host-lock.js";
import { addCommonOptions, Output, type GlobalOptions } from "./common.js";

interface ReleaseOptions extends GlobalOptions {
  all?: boolean;
  ploopBin: string;
  lockWait: number;
}

export function releaseCommand(): Command {
  return addCommonOptions(new Command("release"))
    .description("merge the snapshot that incremental backups keep, giving the container back its single-image disk (e.g. before a resize or compact); the next backup reads the whole disk")
    .argument("[ctid...]", "containers")
    .option("--all", "every container with a kept snapshot on this host")
    .addOption(new Option("--ploop-bin <path>", "ploop command line to drive").env("PLOOPVAULT_PLOOP").default("ploop"))
    .addOption(new Option("--lock-wait <seconds>", "how long to wait for another ploopvault run on this host").default(600).argParser(Number))
    .addHelpText("after", "\nExamples:\n  ploopvault release 101          # before: vzctl set 101 --diskspace 200G\n  ploopvault release --all\n")
    .action(async (ctids: string[], options: ReleaseOptions) => {
      const out = new Output(options);
      if ((ctids.length > 0) === (options.all === true)) throw new UsageError("give container ids or --all");
      for (const ct of ctids) validateName("container id", ct);
      const lock = await acquireHostLock(join(options.stateDir, "run.lock"), { waitSeconds: options.lockWait });
      try {
        const kept = new KeptSnapshots(options.stateDir);
        const journal = new SnapshotJournal(options.stateDir);
        const ploop = new PloopCli({ bin: options.ploopBin, log: (line) => out.debug(line) });
        const targets = options.all ? (await kept.list()).map((k) => k.ct) : ctids;
        const results: { ct: string; released: string | null; error?: string }[] = [];
        for (const ct of targets) {
          try {
            const released = await releaseKeptSnapshot({ ct, descriptorPath: "", ploop, journal, kept, log: (line) => out.info(line) });
            results.push({ ct, released });
            out.info(released ? `container ${ct}: kept snapshot ${released} merged` : `container ${ct}: no kept snapshot`);
          } catch (error) {
            results.push({ ct, released: null, error: error instanceof Error ? error.message : String(error) });
          }
        }
        if (out.json) out.jsonResult(results);
        const failed = results.filter((r) => r.error !== undefined);
        if (failed.length > 0) throw new PloopvaultError(`release failed: ${failed.map((r) => `${r.ct}: ${r.error}`).join("; ")}`);
      } finally {
        await lock.release();
      }
    });
}
