import { Command } from "commander";
import { fetchStats, openBackupFilesystemBySpec } from "../files/backup-fs.js";
import { listNodes, longLine } from "../files/listing.js";
import { watchStdout } from "../files/stdout.js";
import { formatBytes } from "../util/format.js";
import { backupArgument, backupSelection, hostOption, partitionOption, type BackupSelectionOptions } from "./backup-selection.js";
import { addCommonOptions, openRepository, Output, type GlobalOptions } from "./common.js";

interface LsOptions extends GlobalOptions, BackupSelectionOptions {
  long?: boolean;
  recursive?: boolean;
}

export function lsCommand(): Command {
  return addCommonOptions(new Command("ls"))
    .description("list files in a backup's filesystem, fetching only the metadata it needs")
    .addArgument(backupArgument())
    .argument("[path]", "folder or file inside the backed-up filesystem", "/")
    .option("-l, --long", "type and permissions, links, owner, group, size, mtime (UTC) and symlink targets")
    .option("-R, --recursive", "everything below the folder")
    .addOption(partitionOption())
    .addOption(hostOption())
    .addHelpText(
      "after",
      `
Examples:
  ploopvault ls --repo s3://backups/node1 101:latest /var/www
  ploopvault ls --repo s3://backups/node1 101:latest /var/www/shop --long --recursive
  ploopvault ls --repo /srv/backup 101/20240101T020000Z-1a2b3c4d /etc --json | jq -r 'select(.struct_type=="node") | .path'

Paths are printed as UTF-8; a backslash and bytes that are not printable UTF-8 are
escaped as \\\\ and \\xNN, and dump/restore accept paths written that way.
With --json: one object per entry ("struct_type": "node": path, name, type, mode,
permissions, uid, gid, size, links, inode, mtime, target), then a summary
("struct_type": "summary") with the entries listed and the bytes fetched.
`,
    )
    .action(async (spec: string, path: string, options: LsOptions) => {
      const out = new Output(options);
      const repo = await openRepository(options);
      try {
        const backup = await openBackupFilesystemBySpec(repo, spec, options.stateDir, backupSelection(options));
        for (const w of backup.fs.warnings) out.warn(w);
        let entries = 0;
        const stdout = watchStdout();
        for await (const node of listNodes(backup.fs, path, { recursive: options.recursive === true })) {
          if (stdout.closed) return;
          // let a broken pipe's 'error' event in now and then (the loop itself never leaves the microtask queue)
          if (++entries % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
          if (out.json) out.jsonResult({ struct_type: "node", ...node });
          else out.result(options.long ? longLine(node) : node.path);
        }
        const stats = fetchStats(backup.disk.stats);
        if (out.json) out.jsonResult({ struct_type: "summary", backup: backup.ref.id, ct: backup.ref.ct, path, entries, ...stats, status: "ok" });
        out.info(
          `${entries} entries of ${backup.ref.ct}/${backup.ref.id}:${path}; fetched ${formatBytes(stats.bytesFetched)} in ${stats.chunksFetched} chunks`,
        );
      } finally {
        await repo.close();
      }
    });
}
