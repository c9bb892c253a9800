import { Command, Option } from "commander";
import { checkRepository } from "../check/check.js";
import { PloopvaultError } from "../errors.js";
import { progressDisplay } from "../ops/progress.js";
import { addCommonOptions, openRepository, Output, parsePositiveInt, type GlobalOptions } from "./common.js";

interface CheckOptions extends GlobalOptions {
  readData?: boolean;
  concurrency: number;
}

export function checkCommand(): Command {
  return addCommonOptions(new Command("check"))
    .description("verify that every backup's manifest and chunks are present (and, with --read-data, intact)")
    .option("--read-data", "download, decompress and re-hash every referenced chunk")
    .addOption(new Option("--concurrency <n>", "chunks read in parallel").default(8).argParser(parsePositiveInt("--concurrency")))
    .addHelpText(
      "after",
      `
Examples:
  # every manifest decodes and every chunk it references exists (cheap: listings only)
  ploopvault check --repo /srv/backup
  # also download, decompress and re-hash every referenced chunk (reads the whole repository)
  ploopvault check --repo s3://backups/node1 --read-data --limit-download 50M
  ploopvault check --repo s3://backups/node1 --json | jq .damaged

Exit code 1 when a backup is damaged (each one is listed on stderr and under "damaged"
with --json). Missing and corrupt chunks are recorded in the repository (missing/) so
that the next backups upload them again from the containers' disks. Unreferenced chunks
are normal after an interrupted backup; prune removes them.
`,
    )
    .action(async (options: CheckOptions) => {
      const out = new Output(options);
      const repo = await openRepository(options);
      try {
        const progress = progressDisplay();
        const report = await checkRepository(repo, {
          readData: options.readData === true,
          concurrency: options.concurrency,
          recordForRepair: true,
          warn: (line) => out.warn(line),
          ...(progress === null ? {} : { onProgress: (done: number, total: number) => progress.update("check", "check", { done, total }, "chunks") }),
        });
        progress?.remove("check");
        if (out.json) out.jsonResult({ ...report, status: report.damaged.length === 0 ? "ok" : "damaged" });
        out.info(`checked ${report.backups} backups, ${report.chunksReferenced} referenced chunks${options.readData ? ` (${report.chunksRead} read and verified)` : ""}, ${report.chunksUnreferenced} unreferenced`);
        for (const l of report.locks.filter((x) => x.expired)) {
          out.warn(`expired lock ${l.key}${l.holder ? ` of ${l.holder}` : ""}, last refreshed ${l.ageSeconds} s ago (by this host's clock): its process died; it blocks nobody, the next prune removes it`);
        }
        for (const d of report.damaged) for (const p of d.problems) out.info(`damaged backup ${d.ct}/${d.id}: ${p}`);
        if (report.chunksRecordedForRepair > 0) {
          out.warn(`${report.chunksRecordedForRepair} missing or corrupt chunk(s) recorded under missing/: the next backup of a disk that still holds their data uploads them again, which repairs every backup using them (docs/operations.md, "Repairing a repository")`);
        }
        if (report.damaged.length > 0) {
          const names = report.damaged.map((d) => `${d.ct}/${d.id}`);
          throw new PloopvaultError(`check failed: ${names.length} damaged backup${names.length === 1 ? "" : "s"}: ${names.slice(0, 10).join(", ")}${names.length > 10 ? ", ..." : ""}`);
        }
      } finally {
        await repo.close();
      }
    });
}
