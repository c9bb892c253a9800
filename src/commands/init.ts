import { Command, Option } from "commander";
import { chunkerParamsForAverage, DEFAULT_AVG_CHUNK } from "../chunker/index.js";
import { newPassword, PASSWORD_ENV, passwordProvider, runPasswordCommand } from "../crypto/password.js";
import { errorLine, UsageError } from "../errors.js";
import { newRepositoryConfig, type ObjectLockConfig } from "../repository/config.js";
import { createRepository } from "../repository/create.js";
import { defaultLockBucket } from "../repository/object-lock.js";
import { parseDuration, formatDuration } from "../prune/duration.js";
import { parseRepoUrl } from "../uploader/open.js";
import { formatBytes, parseSize } from "../util/format.js";
import { addCommonOptions, conditionalWritesProbe, openStoreFromOptions, Output, repoUrl, type GlobalOptions } from "./common.js";

interface InitOptions extends GlobalOptions {
  chunkAvg: string;
  compressionLevel: string;
  encrypt?: boolean;
  objectLock?: string;
  lockMode: "governance" | "compliance";
  lockBucket?: string;
  lockExtension?: string;
}

/** `--object-lock DAYS`: a number of days, or a duration ("36h"; seconds for tests). */
function parseRetention(text: string, option: string): number {
  const ms = /^\s*\d+(\.\d+)?\s*$/.test(text) ? Number(text) * 86_400_000 : parseDuration(text, option);
  const seconds = Math.round(ms / 1000);
  if (!(seconds >= 1)) throw new UsageError(`${option} must be at least 1 second, got "${text}"`);
  if (seconds > 100 * 365 * 86400) throw new UsageError(`${option} must be at most 100 years, got "${text}"`);
  return seconds;
}

export function initCommand(): Command {
  return addCommonOptions(new Command("init"))
    .description("create a new repository (refuses an existing one)")
    .addOption(new Option("--chunk-avg <size>", "average chunk size, a power of two (e.g. 256K, 1M)").default(`${String(DEFAULT_AVG_CHUNK >> 10)}K`))
    .addOption(new Option("--compression-level <n>", "zstd level (1-19)").default("3"))
    .option("--encrypt", "encrypt everything stored (AES-256-GCM); the password comes from --password-file, PLOOPVAULT_PASSWORD or a prompt")
    .option("--object-lock <days>", "S3 Object Lock: keep every backup undeletable for DAYS (a number of days, or a duration such as 36h); docs/object-lock.md")
    .addOption(
      new Option("--lock-mode <mode>", "object lock mode: governance (an admin with s3:BypassGovernanceRetention may lift it) or compliance (nobody can)")
        .choices(["governance", "compliance"])
        .default("governance"),
    )
    .option("--lock-bucket <name>", "unversioned bucket for the lock objects of an object-lock repository (default: BUCKET-locks, created if missing)")
    .option(
      "--lock-extension <duration>",
      "object lock: retentions reach this far beyond what a backup needs (default DAYS/2): one extension per chunk in use per this period",
    )
    .addHelpText(
      "after",
      "\nExamples:\n  ploopvault init --repo /srv/backup\n  ploopvault init --repo s3://backups/node1 --endpoint http://minio:9000\n  PLOOPVAULT_PASSWORD_FILE=/root/.pv-pass ploopvault init --repo s3://backups/node1 --encrypt\n  ploopvault init --repo s3://backups-locked/node1 --object-lock 30 --lock-mode compliance\n",
    )
    .action(async (options: InitOptions) => {
      const out = new Output(options);
      const avg = parseSize(options.chunkAvg);
      if (avg === null) throw new UsageError(`--chunk-avg: cannot parse size "${options.chunkAvg}"`);
      const level = Number(options.compressionLevel);
      if (!Number.isInteger(level) || level < 1 || level > 19) throw new UsageError(`--compression-level must be 1..19, got "${options.compressionLevel}"`);
      let chunker;
      try {
        chunker = chunkerParamsForAverage(avg);
      } catch (error) {
        throw new UsageError(`--chunk-avg: ${errorLine(error)}`);
      }
      let password: string | undefined;
      if (options.encrypt) {
        passwordProvider(options); // refuses --password-file together with --password-command
        const command = options.passwordFile === undefined ? options.passwordCommand : undefined;
        password =
          command !== undefined
            ? await runPasswordCommand(command, "--password-command")
            : await newPassword({ file: options.passwordFile, option: "--password-file", envName: PASSWORD_ENV }, `new encrypted repository`);
      } else {
        const given = passwordProvider(options);
        if (given.given)
          throw new UsageError(`a password was given (${given.source}) but not --encrypt: add --encrypt, or remove it for an unencrypted repository`);
      }
      let objectLock: ObjectLockConfig | undefined;
      if (options.objectLock !== undefined) {
        const parsed = parseRepoUrl(repoUrl(options));
        if (parsed.kind !== "s3") throw new UsageError("--object-lock needs an S3 repository (s3://BUCKET[/PREFIX]): a local directory has no object lock");
        const retentionSeconds = parseRetention(options.objectLock, "--object-lock");
        const extensionSeconds =
          options.lockExtension === undefined ? Math.max(1, Math.round(retentionSeconds / 2)) : parseRetention(options.lockExtension, "--lock-extension");
        objectLock = { mode: options.lockMode, retentionSeconds, extensionSeconds, lockBucket: options.lockBucket ?? defaultLockBucket(parsed.bucket) };
        if (objectLock.lockBucket === parsed.bucket)
          throw new UsageError("--lock-bucket must be another bucket than the repository's (lock objects need an unversioned bucket)");
      } else if (options.lockBucket !== undefined || options.lockExtension !== undefined) {
        throw new UsageError("--lock-bucket and --lock-extension only apply with --object-lock");
      }
      const store = await openStoreFromOptions(options);
      try {
        const config = { ...newRepositoryConfig(chunker, level, new Date()), ...(objectLock === undefined ? {} : { objectLock }) };
        const repo = await createRepository(store, config, {
          ...(password === undefined ? {} : { password }),
          ...conditionalWritesProbe(options, store, out),
        });
        const encryption = repo.keyId === null ? null : { scheme: repo.config.encryption!.scheme, key: repo.keyId };
        const lock = repo.config.objectLock ?? null;
        if (out.json)
          out.jsonResult({
            repository: repo.location,
            id: repo.config.id,
            chunker: repo.config.chunker,
            compression: repo.config.compression,
            encryption,
            objectLock: lock,
          });
        out.info(
          `created ${encryption ? "encrypted " : ""}repository ${repo.config.id} at ${repo.location} (chunks avg ${formatBytes(chunker.avgSize)}, zstd level ${level}${encryption ? `, AES-256-GCM, key ${encryption.key}` : ""})`,
        );
        if (encryption) out.info("keep the password safe: without it (or another key's password) the backups cannot be restored");
        if (lock) {
          out.info(
            `S3 Object Lock (${lock.mode}): every backup stays retained for ${formatDuration(lock.retentionSeconds * 1000)}; lock objects in bucket ${lock.lockBucket}; give backup nodes append-only credentials and run prune from a trusted place (docs/object-lock.md)`,
          );
        }
      } finally {
        await store.close();
      }
    });
}
