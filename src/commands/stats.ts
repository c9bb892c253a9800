import { Command } from "commander";
import { ManifestCache } from "../repository/known-chunks.js";
import { validateName } from "../repository/layout.js";
import { repositoryStats, type Figures } from "../repository/stats.js";
import { formatBytes } from "../util/format.js";
import { addCommonOptions, openRepository, Output, type GlobalOptions } from "./common.js";

interface StatsOptions extends GlobalOptions {
  ct?: string;
  host?: string;
}

const x = (r: number): string => `${r.toFixed(2)}x`;

export function statsCommand(): Command {
  return addCommonOptions(new Command("stats"))
    .description("what the backups hold and what dedup and compression save, per container and host")
    .option("--ct <id>", "only backups of this container")
    .option("--host <name>", "only backups made on this host")
    .addHelpText(
      "after",
      `
Examples:
  ploopvault stats --repo s3://backups/all
  ploopvault stats --repo /srv/backup --ct 101 --host node1
  ploopvault stats --repo /srv/backup --json | jq .total.dedupRatio

Columns: LOGICAL (disk sizes summed over the backups: what raw restores write), DATA (the
allocated data in them), UNIQUE (each distinct chunk once: what dedup leaves), STORED (the
chunk objects as stored: what compression leaves), DEDUP = DATA/UNIQUE, COMPR =
UNIQUE/STORED. A group's STORED counts chunks it shares with other groups; the total
counts every chunk once. Reads every manifest (cached locally) and lists chunks/.
`,
    )
    .action(async (options: StatsOptions) => {
      const out = new Output(options);
      if (options.ct !== undefined) validateName("container id", options.ct);
      const repo = await openRepository(options);
      try {
        const stats = await repositoryStats(repo, {
          cache: ManifestCache.forRepository(repo, options.stateDir),
          ...(options.ct === undefined ? {} : { ct: options.ct }),
          ...(options.host === undefined ? {} : { host: options.host }),
        });
        if (out.json) {
          out.jsonResult(stats);
          return;
        }
        const row = (ct: string, host: string, f: Figures): string[] => [
          ct,
          host,
          String(f.backups),
          formatBytes(f.logicalBytes),
          formatBytes(f.dataBytes),
          formatBytes(f.uniqueBytes),
          formatBytes(f.storedBytes),
          x(f.dedupRatio),
          x(f.compressionRatio),
        ];
        out.table([
          ["CT", "HOST", "BACKUPS", "LOGICAL", "DATA", "UNIQUE", "STORED", "DEDUP", "COMPR"],
          ...stats.groups.map((g) => row(g.ct, g.host, g)),
          row("total", "", stats.total),
        ]);
        out.listing(
          `${stats.total.uniqueChunks} chunks referenced; data reduced ${x(stats.total.storedBytes === 0 ? 1 : stats.total.dataBytes / stats.total.storedBytes)} overall (dedup ${x(stats.total.dedupRatio)}, compression ${x(stats.total.compressionRatio)})`,
        );
        if (stats.unreferencedChunks > 0)
          out.listing(
            `${stats.unreferencedChunks} chunks (${formatBytes(stats.unreferencedBytes)}) are not referenced by these backups${options.ct === undefined && options.host === undefined ? ": prune removes them" : ""}`,
          );
        if (stats.missingChunks > 0) out.warn(`${stats.missingChunks} referenced chunks are missing: run ploopvault check`);
      } finally {
        await repo.close();
      }
    });
}
