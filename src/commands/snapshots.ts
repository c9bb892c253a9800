import { Command } from "commander";
import { protectedBackups } from "../prune/protection.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { formatBytes } from "../util/format.js";
import { addCommonOptions, openRepository, Output, type GlobalOptions } from "./common.js";

interface SnapshotsOptions extends GlobalOptions {
  ct?: string;
  host?: string;
  tag?: string[];
}

export function snapshotsCommand(): Command {
  return addCommonOptions(new Command("snapshots"))
    .description("list backups in the repository")
    .option("--ct <id>", "only backups of this container")
    .option("--host <name>", "only backups made on this host")
    .option("--tag <tag>", "only backups with this tag (repeat: any of them)", (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .addHelpText(
      "after",
      `
Examples:
  ploopvault snapshots --repo /srv/backup
  ploopvault snapshots --repo s3://backups/node1 --ct 101
  ploopvault snapshots --repo s3://backups/all --host node1
  ploopvault snapshots --repo /srv/backup --tag pre-upgrade
  # newest backup time per container, for a script
  ploopvault snapshots --repo s3://backups/node1 --json | jq 'group_by(.ct) | map(max_by(.time) | {ct, time})'

Columns: ID (use CT/ID or CT:latest with restore), CT, HOST (the node that made it),
TIME (UTC), SIZE (the disk), DATA (allocated data in it), NEW (bytes this backup added to
the repository after dedup and compression), P (protected: prune and forget leave it),
TAGS and NOTE (backup --tag/--note).
`,
    )
    .action(async (options: SnapshotsOptions) => {
      const out = new Output(options);
      const repo = await openRepository(options);
      try {
        const cache = ManifestCache.forRepository(repo, options.stateDir);
        const protectedOnes = await protectedBackups(repo.store);
        const rows = [];
        for (const ref of await repo.listBackups(options.ct)) {
          const metadata = await cache.metadata(ref);
          if (options.host !== undefined && metadata.host !== options.host) continue;
          if (options.tag !== undefined && !options.tag.some((t) => metadata.tags?.includes(t))) continue;
          rows.push({
            id: metadata.id,
            ct: metadata.ct,
            host: metadata.host,
            time: metadata.time,
            logicalBytes: metadata.disk.logicalBytes,
            dataBytes: metadata.stats.dataBytes,
            newBytesStored: metadata.stats.newBytesStored,
            chunks: metadata.stats.chunks,
            snapshotGuid: metadata.source.snapshotGuid,
            // --skip-free: this much of the disk held free filesystem space and restores as zeros
            ...(metadata.freeSpace ? { skippedFreeBytes: metadata.freeSpace.skippedBytes } : {}),
            protected: protectedOnes.has(`${ref.ct}/${ref.id}`),
            tags: metadata.tags ?? [],
            note: metadata.note ?? null,
          });
        }
        rows.sort((a, b) => (a.time === b.time ? (a.id < b.id ? -1 : 1) : a.time < b.time ? -1 : 1));
        if (out.json) {
          out.jsonResult(rows);
          return;
        }
        const annotated = rows.some((r) => r.tags.length > 0 || r.note !== null);
        const table = [["ID", "CT", "HOST", "TIME", "SIZE", "DATA", "NEW", "P", ...(annotated ? ["TAGS", "NOTE"] : [])]];
        for (const r of rows) {
          table.push([
            r.id,
            r.ct,
            r.host,
            r.time.replace(/\.\d+Z$/, "Z"),
            formatBytes(r.logicalBytes),
            formatBytes(r.dataBytes) + (r.skippedFreeBytes !== undefined ? "*" : ""),
            formatBytes(r.newBytesStored),
            r.protected ? "P" : "",
            ...(annotated ? [r.tags.join(","), r.note ?? ""] : []),
          ]);
        }
        out.table(table);
        out.info(`${rows.length} backup${rows.length === 1 ? "" : "s"}`);
        if (rows.some((r) => r.skippedFreeBytes !== undefined))
          out.info("* taken with --skip-free: free filesystem space was not stored and restores as zeros");
      } finally {
        await repo.close();
      }
    });
}
