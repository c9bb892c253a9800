import { Command, Option } from "commander";
import { UsageError } from "../errors.js";
import { decodeManifest } from "../manifest/format.js";
import { MAX_READ_BYTES, NbdServer, nbdUnixUri } from "../nbd/server.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { LazyBackupDisk } from "../restore/lazy-disk.js";
import { resolveBackup } from "../restore/resolve.js";
import { formatBytes, parseSize } from "../util/format.js";
import { backupArgument, hostFilter, hostOption, type BackupSelectionOptions } from "./backup-selection.js";
import { addCommonOptions, openRepository, Output, parsePositiveInt, type GlobalOptions } from "./common.js";

interface ServeNbdOptions extends GlobalOptions, BackupSelectionOptions {
  socket: string;
  cache: number;
  concurrency: number;
}

function cacheSize(value: string): number {
  const n = parseSize(value);
  if (n === null || n < MAX_READ_BYTES) throw new UsageError(`--cache must be a size of at least 32M, got "${value}"`);
  return n;
}

export function serveNbdCommand(): Command {
  return addCommonOptions(new Command("serve-nbd"))
    .description("serve a backup's disk read-only over NBD on a Unix socket, fetching chunks as they are read")
    .addArgument(backupArgument())
    .addOption(hostOption())
    .requiredOption("--socket <path>", "Unix socket to listen on (created 0600, removed on exit)")
    .addOption(new Option("--cache <size>", "decoded chunks kept in memory for all clients").default(64 * 1024 * 1024, "64M").argParser(cacheSize))
    .addOption(new Option("--concurrency <n>", "chunks fetched in parallel for one large read").default(8).argParser(parsePositiveInt("--concurrency")))
    .addHelpText(
      "after",
      `
Examples:
  ploopvault serve-nbd --repo s3://backups/node1 101:latest --socket /run/pv-101.sock &
  nbdinfo 'nbd+unix:///?socket=/run/pv-101.sock'          # size, read-only
  nbd-client -unix /run/pv-101.sock /dev/nbd0 -readonly -name ''
  mount -o ro,noload /dev/nbd0p1 /mnt/101                    # then copy files out

The export is the backup's logical disk (what restore --format raw writes), read-only;
only the chunks clients read are fetched. Serves until SIGINT/SIGTERM. docs/nbd.md shows
mounting a partition and boot-testing with qemu.
`,
    )
    .action(async (spec: string, options: ServeNbdOptions) => {
      const out = new Output(options);
      const repo = await openRepository(options);
      try {
        const cache = ManifestCache.forRepository(repo, options.stateDir);
        const ref = await resolveBackup(repo, spec, { metadata: (r) => cache.metadata(r), ...hostFilter(options) });
        const manifest = decodeManifest(await cache.manifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
        const disk = new LazyBackupDisk(repo, ref, manifest, { cacheBytes: options.cache, concurrency: options.concurrency });
        const name = `${ref.ct}/${ref.id}`;
        const server = new NbdServer(
          {
            name,
            description: `ploopvault backup ${name} (read-only)`,
            size: disk.size,
            read: (o, l) => disk.read(o, l),
            extents: (o, l, limit) => disk.extents(o, l, limit),
          },
          { log: (line) => out.warn(line) },
        );
        let stop: (signal: NodeJS.Signals) => void = () => undefined;
        const stopped = new Promise<NodeJS.Signals>((resolve) => (stop = resolve));
        process.on("SIGINT", stop);
        process.on("SIGTERM", stop);
        try {
          await server.listen(options.socket);
          const uri = nbdUnixUri(options.socket);
          if (out.json) out.jsonResult({ backup: ref.id, ct: ref.ct, socket: options.socket, uri, logicalBytes: disk.size, status: "serving" });
          out.info(`serving ${name} (${formatBytes(disk.size)}) read-only at ${uri}; stop with Ctrl-C`);
          const signal = await stopped;
          await server.close();
          const { chunksFetched, bytesFetched } = disk.stats;
          if (out.json)
            out.jsonResult({
              backup: ref.id,
              ct: ref.ct,
              connections: server.stats.connections,
              reads: server.stats.reads,
              bytesSent: server.stats.bytesSent,
              chunksFetched,
              bytesFetched,
              status: "stopped",
            });
          out.info(
            `${signal}: stopped after ${server.stats.connections} connection(s), ${server.stats.reads} reads; fetched ${chunksFetched} chunks (${formatBytes(bytesFetched)})`,
          );
        } finally {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          await server.close();
        }
      } finally {
        await repo.close();
      }
    });
}
