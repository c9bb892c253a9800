import { resolve } from "node:path";
import { Command, Option } from "commander";
import { PloopvaultError, UsageError } from "../errors.js";
import { progressDisplay } from "../ops/progress.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { decodeManifest } from "../manifest/format.js";
import { restoreFilesFromBackup } from "../files/restore-files.js";
import { resolveBackup } from "../restore/resolve.js";
import { planRestore, RESTORE_CONCURRENCY, restorePloop, restoreRaw, restoreToStream, type RestoreFormat, type RestoreResult } from "../restore/restore.js";
import { checkInPlace, IN_PLACE_SUFFIX, inPlaceMarker, restoreRawInPlace, resumeHint, type InPlaceResult } from "../restore/in-place.js";
import { parseRepoUrl } from "../uploader/open.js";
import { formatBytes, formatSeconds } from "../util/format.js";
import { backupArgument, backupSelection, hostFilter, hostOption, partitionOption, type BackupSelectionOptions } from "./backup-selection.js";
import { addCommonOptions, openRepository, Output, parsePositiveInt, withInterrupts, type GlobalOptions } from "./common.js";

interface RestoreOptions extends GlobalOptions, BackupSelectionOptions {
  target: string;
  format: RestoreFormat;
  force?: boolean;
  dryRun?: boolean;
  concurrency?: number;
  seed?: string;
  inPlace?: boolean;
  include?: string[];
}

export function restoreCommand(): Command {
  return addCommonOptions(new Command("restore"))
    .description("restore a backup as a ploop disk, a sparse raw image, or a raw stream on stdout")
    .addArgument(backupArgument())
    .addOption(hostOption())
    .requiredOption("--target <path>", "ploop: directory to create (PATH/root.hdd, PATH/DiskDescriptor.xml); raw: file; '-' = raw to stdout")
    .addOption(new Option("--format <format>", "output format").choices(["ploop", "raw"]).default("ploop"))
    .option("--force", "replace an existing target")
    .addOption(
      new Option(
        "--concurrency <n>",
        `chunks fetched in parallel (default ${RESTORE_CONCURRENCY.local} from a directory, ${RESTORE_CONCURRENCY.s3} from S3)`,
      ).argParser(parsePositiveInt("--concurrency")),
    )
    .option(
      "--seed <file>",
      "an older copy of this disk (raw image, ploop image, DiskDescriptor.xml or its directory; the target itself): only chunks it does not hold are fetched",
    )
    .option(
      "--in-place",
      `with --format raw --force: rewrite only what differs in the existing --target file (it is its own seed); it works under the name TARGET${IN_PLACE_SUFFIX} until done, and the same command resumes from that after a crash`,
    )
    .option("--include <path...>", "restore only these files and folders of the backed-up filesystem into the folder --target (docs/file-restore.md)")
    .addOption(partitionOption("with --include: partition of the disk to read"))
    .option("--dry-run", "check the backup and the target and say what would be written; write nothing")
    .addHelpText(
      "after",
      `
Examples:
  # the newest backup of container 101 as a ploop disk for a new container 201
  ploopvault restore --repo /srv/backup 101:latest --target /vz/private/201/root.hdd
  # a given backup (ids: ploopvault snapshots --ct 101), or a unique prefix of its id
  ploopvault restore --repo /srv/backup 101/20240101T020000Z-1a2b3c4d --target /tmp/101
  # several nodes share the repository and each has a container 101: name the node
  ploopvault restore --repo s3://backups/all node1/101:latest --target /vz/private/201/root.hdd
  # a sparse raw image, e.g. to loop-mount and copy single files out
  ploopvault restore --repo /srv/backup 101 --format raw --target /tmp/101.raw
  # what would be written, and whether the target is acceptable
  ploopvault restore --repo /srv/backup 101:latest --target /vz/private/201/root.hdd --dry-run
  # a raw stream on stdout
  ploopvault restore --repo /srv/backup 101 --target - | gzip > 101.raw.gz
  # yesterday's restore as the seed: only what changed since is fetched
  ploopvault restore --repo s3://backups/node1 101 --format raw --target /tmp/101.raw --force --seed /tmp/101.raw
  # the same, rewriting only the blocks that changed (works as /tmp/101.raw${IN_PLACE_SUFFIX} until done)
  ploopvault restore --repo s3://backups/node1 101 --format raw --target /tmp/101.raw --force --in-place
  # without starving other traffic
  ploopvault restore --repo s3://backups/node1 101 --target /tmp/101 --limit-download 50M
  # single files and folders, with owners, modes, times and xattrs, into /tmp/r/var/www/shop
  ploopvault restore --repo s3://backups/node1 101:latest --include /var/www/shop --target /tmp/r

A restored ploop disk is PATH/root.hdd + PATH/DiskDescriptor.xml (+ the container's
ve.conf as saved at backup time); docs/operations.md shows how to register it as a new
container. The target is written under a temporary name and renamed into place when
complete; Ctrl-C removes the partial files. --in-place instead renames the target to
TARGET${IN_PLACE_SUFFIX}, rewrites it there and renames it back when complete; after a
crash, Ctrl-C or an error only TARGET${IN_PLACE_SUFFIX} is left, and running the same
command again resumes from it (docs/operations.md, "Rewriting only what changed").
`,
    )
    .action(async (spec: string, options: RestoreOptions) => {
      const out = new Output(options);
      if (options.inPlace === true) checkInPlaceOptions(options, options.target === "-");
      if (options.include !== undefined) {
        if (options.dryRun === true) throw new UsageError("--dry-run applies to whole-disk restores, not to --include (ls shows what --include would restore)");
        return restoreIncluded(spec, options, out);
      }
      const toStdout = options.target === "-";
      if (toStdout && options.format === "ploop" && process.argv.includes("--format")) throw new UsageError("--target - streams a raw disk: use --format raw");
      if (toStdout && process.stdout.isTTY === true && options.dryRun !== true)
        throw new UsageError("--target -: stdout is a terminal; refusing to print a binary disk image there (redirect it to a file or a pipe)");
      const repo = await openRepository(options);
      try {
        const notice = options.inPlace === true ? `stopping; ${resumeHint(options.target)}` : "stopping, removing the partial restore";
        await withInterrupts(out, notice, async (signal) => {
          const cache = ManifestCache.forRepository(repo, options.stateDir);
          const ref = await resolveBackup(repo, spec, { metadata: (r) => cache.metadata(r), ...hostFilter(options) });
          const manifest = decodeManifest(await cache.manifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
          if (options.dryRun === true && options.inPlace === true) {
            const how = await checkInPlace(options.target, options.force === true);
            const plan = await planRestore(manifest, "-", "stdout", false);
            if (out.json) out.jsonResult({ backup: ref.id, ct: ref.ct, target: options.target, format: "raw", dryRun: true, inPlace: how, ...plan });
            out.listing(
              `would ${how === "resume" ? `resume the in-place restore in ${inPlaceMarker(options.target)}` : "restore in place"} ${ref.ct}/${ref.id} over ${options.target}: ${formatBytes(plan.logicalBytes)} disk, ${formatBytes(plan.dataBytes)} data in ${plan.chunks} chunks, fetching only those whose bytes differ there`,
            );
            return;
          }
          if (options.dryRun === true) {
            const plan = await planRestore(manifest, options.target, toStdout ? "stdout" : options.format, options.force === true);
            if (out.json)
              out.jsonResult({ backup: ref.id, ct: ref.ct, target: options.target, format: toStdout ? "raw" : options.format, dryRun: true, ...plan });
            out.listing(
              `would restore ${ref.ct}/${ref.id} to ${toStdout ? "stdout" : options.target}${plan.replaces ? " (replacing what a restore writes there)" : ""}: ${formatBytes(plan.logicalBytes)} disk, ${formatBytes(plan.dataBytes)} data in ${plan.chunks} chunks to fetch${options.seed === undefined ? "" : " (at most: the seed supplies the chunks it holds)"}`,
            );
            for (const file of plan.files) out.listing(`  ${file}`);
            for (const file of plan.removes) out.listing(`  ${file} (removed: an image of the disk it replaces)`);
            return;
          }
          const progress = progressDisplay();
          const label = `restore ${ref.ct}`;
          const opts = {
            concurrency: options.concurrency ?? RESTORE_CONCURRENCY[parseRepoUrl(repo.location).kind === "s3" ? "s3" : "local"],
            ...(options.seed === undefined ? {} : { seed: options.seed }),
            signal,
            ...(progress === null ? {} : { onProgress: (done: number, total: number) => progress.update("restore", label, { done, total }) }),
          };
          let result: RestoreResult | InPlaceResult;
          if (options.inPlace === true) result = await restoreRawInPlace(repo, ref, manifest, options.target, options.force === true, opts);
          else if (toStdout) result = await restoreToStream(repo, ref, manifest, process.stdout, opts);
          else if (options.format === "raw") result = await restoreRaw(repo, ref, manifest, options.target, options.force === true, opts);
          else result = await restorePloop(repo, ref, manifest, options.target, options.force === true, opts);
          progress?.remove("restore");
          if (signal.aborted) throw new PloopvaultError(`restore of ${ref.ct}/${ref.id} interrupted`);
          const summary = { backup: ref.id, ct: ref.ct, target: options.target, format: toStdout ? "raw" : options.format, ...result, status: "ok" };
          if (out.json && !toStdout) out.jsonResult(summary);
          const inPlace =
            "writtenBytes" in result
              ? ` (in place${result.resumed ? ", resumed" : ""}: ${result.fetchedChunks} of ${result.chunks} chunks fetched, ${formatBytes(result.readBytes)} read, ${formatBytes(result.writtenBytes)} written, ${formatBytes(result.zeroedBytes)} zeroed)`
              : "";
          out.info(
            `restored ${ref.ct}/${ref.id} to ${toStdout ? "stdout" : options.target}: ${formatBytes(result.logicalBytes)} disk, ${formatBytes(result.dataBytes)} data in ${formatSeconds(result.seconds)}${inPlace}`,
          );
          if (
            options.seed !== undefined &&
            options.inPlace !== true &&
            options.format === "raw" &&
            !toStdout &&
            resolve(options.seed) === resolve(options.target)
          )
            out.info(
              `hint: --in-place instead of --seed ${options.seed} would have written only the blocks that differ, not all ${formatBytes(result.dataBytes)} (the file is then rewritten under ${inPlaceMarker(options.target)}, resumable after a crash, instead of replaced at once)`,
            );
          const free = manifest.metadata.freeSpace;
          if (free)
            out.info(
              `backup ${ref.ct}/${ref.id} was taken with --skip-free: ${formatBytes(free.skippedBytes)} of free filesystem space was not stored and reads as zeros (docs/skip-free.md)`,
            );
        });
      } finally {
        await repo.close();
      }
    });
}

/** --in-place: a raw restore over an existing file, which is its own seed. */
function checkInPlaceOptions(options: RestoreOptions, toStdout: boolean): void {
  if (options.include !== undefined) throw new UsageError("--in-place applies to whole-disk raw restores, not to --include");
  if (toStdout) throw new UsageError("--in-place rewrites an existing file: --target - streams to stdout");
  if (options.format !== "raw") throw new UsageError("--in-place rewrites a raw disk image: add --format raw");
  if (options.seed !== undefined && resolve(options.seed) !== resolve(options.target))
    throw new UsageError(`--in-place uses the target ${options.target} as its own seed: --seed ${options.seed} does not apply`);
}

async function restoreIncluded(spec: string, options: RestoreOptions, out: Output): Promise<void> {
  if (process.argv.includes("--format")) throw new UsageError("--include restores files into the folder --target: --format does not apply");
  if (options.target === "-") throw new UsageError("--include needs a folder as --target (dump writes single files to stdout)");
  if (options.seed !== undefined) throw new UsageError("--seed applies to whole-disk restores, not to --include");
  const repo = await openRepository(options);
  try {
    const result = await withInterrupts(out, null, (signal) =>
      restoreFilesFromBackup(repo, spec, options.stateDir, {
        includes: options.include!,
        target: options.target,
        force: options.force === true,
        signal,
        warn: (line) => out.warn(line),
        ...backupSelection(options),
      }),
    );
    for (const s of result.skipped) out.warn(`${s}: a socket, not restored`);
    if (out.json) out.jsonResult({ ...result, target: options.target, includes: options.include, status: "ok" });
    out.info(
      `restored ${result.files} files, ${result.dirs} folders, ${result.symlinks} symlinks, ${result.hardlinks} hard links, ${result.specials} special files (${formatBytes(result.dataBytes)}) of ${result.ct}/${result.backup} into ${options.target}; fetched ${formatBytes(result.bytesFetched)} in ${result.chunksFetched} chunks`,
    );
  } finally {
    await repo.close();
  }
}
