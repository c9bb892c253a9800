import { Command, Option } from "commander";
import { UsageError } from "../errors.js";
import { fetchStats, openBackupFilesystemBySpec } from "../files/backup-fs.js";
import { dumpFileContent, dumpTar, requireDumpable, streamSink, type ByteSink } from "../files/dump.js";
import { withDumpTarget } from "../files/dump-target.js";
import { resolveItem } from "../files/listing.js";
import { watchStdout } from "../files/stdout.js";
import { displayPath } from "../fs/walk.js";
import { formatBytes } from "../util/format.js";
import { backupArgument, backupSelection, hostOption, partitionOption, type BackupSelectionOptions } from "./backup-selection.js";
import { addCommonOptions, keepRunningWithoutStdout, openRepository, Output, type GlobalOptions } from "./common.js";

interface DumpOptions extends GlobalOptions, BackupSelectionOptions {
  archive?: "tar";
  target?: string;
  force?: boolean;
}

export function dumpCommand(): Command {
  return addCommonOptions(new Command("dump"))
    .description("write a file from a backup to stdout, or a folder as a tar stream, fetching only what it needs")
    .addArgument(backupArgument())
    .argument("<path>", "file or folder inside the backed-up filesystem")
    .addOption(new Option("--archive <format>", "a tar stream even for a single file").choices(["tar"]))
    .option("--target <file>", "write to FILE (created owner-only, complete or not at all) instead of stdout")
    .option("--force", "replace an existing --target file")
    .addOption(partitionOption())
    .addOption(hostOption())
    .addHelpText(
      "after",
      `
Examples:
  ploopvault dump --repo s3://backups/node1 101:latest /etc/nginx/nginx.conf > nginx.conf
  ploopvault dump --repo s3://backups/node1 101:latest /var/www/shop | tar -tvf -
  ploopvault dump --repo s3://backups/node1 101:latest /var/www/shop | tar --xattrs --xattrs-include='*' -xpf - -C /tmp/out

A folder becomes a POSIX (pax) tar stream with owners, modes, times (ns), symlinks, hard
links, device nodes, xattrs and ACLs (SCHILY.xattr), sparse files kept sparse (GNU sparse
format 1.0); its paths are the filesystem paths without the leading "/". Sockets are
skipped. With --json the summary (bytes written, bytes fetched) goes to stdout when
--target is given, else to stderr.
`,
    )
    .action(async (spec: string, path: string, options: DumpOptions) => {
      const out = new Output(options);
      if (options.target === undefined && process.stdout.isTTY)
        throw new UsageError("refusing to write a dump to a terminal: redirect stdout or use --target FILE");
      const repo = await openRepository(options);
      try {
        const backup = await openBackupFilesystemBySpec(repo, spec, options.stateDir, backupSelection(options));
        for (const w of backup.fs.warnings) out.warn(w);
        const item = await resolveItem(backup.fs, path);
        requireDumpable(item);
        const asTar = item.inode.type === "dir" || options.archive === "tar";
        const write = async (sink: ByteSink): Promise<{ entries: number; skipped: string[] }> => {
          if (!asTar) {
            await dumpFileContent(backup.fs, item.inode, sink);
            return { entries: 1, skipped: [] };
          }
          return dumpTar(backup.fs, item, sink);
        };
        let written = 0;
        const counting = (sink: ByteSink): ByteSink => ({
          write: (data) => {
            written += data.length;
            return sink.write(data);
          },
        });
        if (options.target === undefined) {
          // the data is cut: say so in one line and exit 1, not the listing commands' quiet 141
          keepRunningWithoutStdout();
          watchStdout();
        }
        const result =
          options.target === undefined
            ? await write(counting(streamSink(process.stdout)))
            : await withDumpTarget(options.target, options.force === true, (sink) => write(counting(sink)));
        for (const s of result.skipped) out.warn(`${s}: a socket, not stored in the tar stream`);
        const stats = fetchStats(backup.disk.stats);
        const summary = {
          backup: backup.ref.id,
          ct: backup.ref.ct,
          path: displayPath(item.components),
          format: asTar ? "tar" : "file",
          entries: result.entries,
          bytesWritten: written,
          ...stats,
          status: "ok",
        };
        if (out.json) {
          if (options.target !== undefined) out.jsonResult(summary);
          else process.stderr.write(`${JSON.stringify(summary)}\n`);
        }
        out.info(
          `dumped ${summary.path} of ${backup.ref.ct}/${backup.ref.id} (${asTar ? `tar, ${result.entries} entries, ` : ""}${formatBytes(written)}); fetched ${formatBytes(stats.bytesFetched)} in ${stats.chunksFetched} chunks`,
        );
      } finally {
        await repo.close();
      }
    });
}
