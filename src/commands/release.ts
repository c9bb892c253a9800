import { join } from "node:path";
import { Command, Option } from "commander";
import { listContainers, resolveContainers } from "../host/containers.js";
import { releaseKeptSnapshot } from "../host/incremental.js";
import { SnapshotJournal } from "../host/journal.js";
import { KeptSnapshots } from "../host/kept-snapshot.js";
import { recoverInterrupted, recoverUnjournaled } from "../host/snapshot-lifecycle.js";
import { errorLine, PloopvaultError, UsageError } from "../errors.js";
import { PloopCli } from "../host/ploop-cli.js";
import { durationSecondsOption } from "../prune/duration.js";
import { validateName } from "../repository/layout.js";
import { acquireHostLock } from "../host/host-lock.js";
import { addCommonOptions, Output, type GlobalOptions } from "./common.js";

interface ReleaseOptions extends GlobalOptions {
  all?: boolean;
  ploopBin: string;
  privateRoot: string;
  vzlistBin: string;
  lockWait: number;
}

interface ReleaseResult {
  ct: string;
  /** The kept snapshot merged (from this state dir's record), or null. */
  released: string | null;
  /** Snapshots of this state dir found without a journal entry or record, merged. */
  merged: string[];
  error?: string;
}

export function releaseCommand(): Command {
  return addCommonOptions(new Command("release"))
    .description(
      "merge the snapshot that incremental backups keep, and any other snapshot this ploopvault made and left (e.g. after its state dir was lost), giving the container back its own disk (e.g. before a resize or compact); the next backup reads the whole disk",
    )
    .argument("[ctid...]", "containers")
    .option("--all", "every container on this host (vzlist -a, else <private-root>/*/root.hdd) and every container with a kept snapshot")
    .addOption(new Option("--ploop-bin <path>", "ploop command line to drive").env("PLOOPVAULT_PLOOP").default("ploop"))
    .addOption(new Option("--private-root <dir>", "where container private areas live").default("/vz/private"))
    .addOption(new Option("--vzlist-bin <path>", "vzlist binary (the private root is scanned if it is missing)").default("vzlist"))
    .addOption(
      new Option("--lock-wait <duration>", "how long to wait for another ploopvault run on this host (e.g. 10m; a plain number is seconds)")
        .default(600, "10m")
        .argParser(durationSecondsOption("--lock-wait", { allowZero: true })),
    )
    .addHelpText("after", "\nExamples:\n  ploopvault release 101          # before: vzctl set 101 --diskspace 200G\n  ploopvault release --all\n")
    .action(async (ctids: string[], options: ReleaseOptions) => {
      const out = new Output(options);
      if (ctids.length > 0 === (options.all === true)) throw new UsageError("give container ids or --all");
      for (const ct of ctids) validateName("container id", ct);
      const lock = await acquireHostLock(join(options.stateDir, "run.lock"), { waitSeconds: options.lockWait });
      try {
        const kept = new KeptSnapshots(options.stateDir);
        const journal = new SnapshotJournal(options.stateDir);
        const ploop = new PloopCli({ bin: options.ploopBin, log: (line) => out.debug(line) });
        const log = (line: string): void => out.info(line);
        // Finish what an interrupted run left first: its snapshots are journaled, and the
        // search for unexplained snapshots below must not mistake them for lost ones.
        await recoverInterrupted(journal, ploop, log, { isKept: async (ct, guid) => (await kept.get(ct))?.snapshotGuid.toLowerCase() === guid.toLowerCase() });
        const discovery = { vzlistBin: options.vzlistBin, privateRoot: options.privateRoot, log: (line: string) => out.debug(line) };

        // Which disk each container has: the kept record says where its snapshot was taken;
        // otherwise (lost state dir, --all) the host's container list.
        const disks = new Map<string, string | Error>();
        const records = await kept.list();
        if (options.all) {
          for (const c of await listContainers(discovery)) disks.set(c.ct, c.descriptorPath);
          for (const r of records) disks.set(r.ct, r.descriptorPath);
        } else {
          for (const ct of ctids) {
            const record = records.find((r) => r.ct === ct);
            if (record !== undefined) {
              disks.set(ct, record.descriptorPath);
              continue;
            }
            try {
              disks.set(ct, (await resolveContainers([ct], discovery))[0]!.descriptorPath);
            } catch (error) {
              disks.set(ct, error instanceof Error ? error : new PloopvaultError(String(error)));
            }
          }
        }

        const results: ReleaseResult[] = [];
        for (const [ct, disk] of disks) {
          if (lock.lost.aborted) throw lock.lost.reason instanceof Error ? lock.lost.reason : new PloopvaultError(String(lock.lost.reason));
          const result: ReleaseResult = { ct, released: null, merged: [] };
          results.push(result);
          if (disk instanceof Error) {
            result.error = errorLine(disk);
            continue;
          }
          try {
            result.released = await releaseKeptSnapshot({ ct, descriptorPath: disk, ploop, journal, kept, log });
            const reports = await recoverUnjournaled([{ ct, descriptorPath: disk }], journal, ploop, log, { keptGuids: new Set() });
            result.merged = reports
              .filter((r) => r.action === "merged" || r.action === "merged-after-clearing-in-use" || r.action === "already-merged")
              .map((r) => r.snapshotGuid);
            const failed = reports.find((r) => r.action === "failed" || r.action === "locked" || r.action === "orphan-delta-left");
            if (failed !== undefined) result.error = `snapshot ${failed.snapshotGuid}: ${failed.detail}`;
          } catch (error) {
            result.error = errorLine(error);
          }
          if (result.error === undefined) {
            const what = [
              result.released ? `kept snapshot ${result.released} merged` : "",
              result.merged.length > 0 ? `left-behind snapshot${result.merged.length > 1 ? "s" : ""} ${result.merged.join(", ")} merged` : "",
            ].filter((x) => x !== "");
            out.info(`container ${ct}: ${what.length > 0 ? what.join("; ") : "no snapshot of ours"}`);
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
