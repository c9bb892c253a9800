import { resolve } from "node:path";
import { Command, Option } from "commander";
import { availableParallelism } from "node:os";
import { defaultContainerId, findContainerConfig, readDescriptorBytes } from "../backup/disk-source.js";
import { backupDisk } from "../backup/pipeline.js";
import { PloopvaultError, UsageError } from "../errors.js";
import { openLogicalDisk } from "../ploop/disk.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { validateName } from "../repository/layout.js";
import { formatBytes, formatSeconds } from "../util/format.js";
import { addCommonOptions, defaultHost, openRepository, Output, parsePositiveInt, type GlobalOptions } from "./common.js";

interface BackupOptions extends GlobalOptions {
  disk?: string;
  name?: string;
  host: string;
  time?: string;
  uploadConcurrency: number;
  threads: number;
}

function parseThreads(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new UsageError(`--threads must be 0..64, got "${value}"`);
  return n;
}

export function backupCommand(): Command {
  return addCommonOptions(new Command("backup"))
    .description("back up a ploop disk (--disk DiskDescriptor.xml of a stopped container)")
    .option("--disk <path>", "DiskDescriptor.xml of a ploop disk to back up, read directly (container must be stopped)")
    .option("--name <ct>", "container id recorded for --disk (default: the descriptor's folder's parent name)")
    .addOption(new Option("--host <name>", "host name recorded in the backup").default(defaultHost()))
    .option("--time <iso8601>", "record this time instead of now (imports, tests)")
    .addOption(new Option("--upload-concurrency <n>", "parallel uploads").default(8).argParser(parsePositiveInt("--upload-concurrency")))
    .addOption(new Option("--threads <n>", "worker threads for hashing and compression (0 = main thread only)").default(availableParallelism()).argParser(parseThreads))
    .addHelpText("after", "\nExamples:\n  ploopvault backup --repo /srv/backup --disk /vz/private/101/root.hdd/DiskDescriptor.xml\n")
    .action(async (options: BackupOptions) => {
      const out = new Output(options);
      if (options.disk === undefined) throw new UsageError("nothing to back up: give --disk PATH/DiskDescriptor.xml");
      const time = options.time === undefined ? new Date() : new Date(options.time);
      if (Number.isNaN(time.getTime())) throw new UsageError(`--time: "${options.time}" is not an ISO 8601 time`);
      const descriptorPath = resolve(options.disk);
      const ct = validateName("container id", options.name ?? defaultContainerId(descriptorPath));
      const repo = await openRepository(options);
      try {
        const disk = await openLogicalDisk(descriptorPath);
        try {
          if (disk.inUseImages.length > 0) {
            throw new PloopvaultError(`${disk.inUseImages[0]}: image is marked in use (container running, or not shut down cleanly); back up a running container by CTID so a snapshot is taken, or run "ploop check" on a stopped one`);
          }
          const result = await backupDisk(repo, ManifestCache.forRepository(repo, options.stateDir), {
            disk,
            ct,
            descriptorXml: await readDescriptorBytes(descriptorPath),
            containerConfig: await findContainerConfig(descriptorPath),
            snapshotGuid: null,
            sourceFormatVersion: disk.formatVersion,
          }, { host: options.host, time, workerThreads: options.threads, uploadConcurrency: options.uploadConcurrency });
          const { metadata } = result.manifest;
          const s = result.stats;
          if (out.json) {
            out.jsonResult({ ct, backup: metadata.id, status: "ok", logicalBytes: metadata.disk.logicalBytes, readBytes: s.readBytes, dataBytes: s.dataBytes, holeBytes: s.holeBytes, chunks: s.chunks, newChunks: s.newChunks, newBytesStored: s.newBytesStored, seconds: s.seconds });
          }
          out.info(`backup ${ct}/${metadata.id}: ${formatBytes(metadata.disk.logicalBytes)} disk, ${formatBytes(s.readBytes)} read, ${s.newChunks} new of ${s.chunks} chunks (${formatBytes(s.newBytesStored)} stored) in ${formatSeconds(s.seconds)}`);
        } finally {
          await disk.close();
        }
      } finally {
        await repo.close();
      }
    });
}
