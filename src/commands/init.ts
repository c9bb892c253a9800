import { Command, Option } from "commander";
import { chunkerParamsForAverage, DEFAULT_AVG_CHUNK } from "../chunker/index.js";
import { newPassword, PASSWORD_ENV, passwordProvider, runPasswordCommand } from "../crypto/password.js";
import { UsageError } from "../errors.js";
import { newRepositoryConfig } from "../repository/config.js";
import { createRepository } from "../repository/create.js";
import { formatBytes, parseSize } from "../util/format.js";
import { addCommonOptions, conditionalWritesProbe, openStoreFromOptions, Output, type GlobalOptions } from "./common.js";

interface InitOptions extends GlobalOptions {
  chunkAvg: string;
  compressionLevel: string;
  encrypt?: boolean;
}

export function initCommand(): Command {
  return addCommonOptions(new Command("init"))
    .description("create a new repository (refuses an existing one)")
    .addOption(new Option("--chunk-avg <size>", "average chunk size, a power of two (e.g. 256K, 1M)").default(String(DEFAULT_AVG_CHUNK >> 10) + "K"))
    .addOption(new Option("--compression-level <n>", "zstd level (1-19)").default("3"))
    .option("--encrypt", "encrypt everything stored (AES-256-GCM); the password comes from --password-file, PLOOPVAULT_PASSWORD or a prompt")
    .addHelpText(
      "after",
      "\nExamples:\n  ploopvault init --repo /srv/backup\n  ploopvault init --repo s3://backups/node1 --endpoint http://minio:9000\n  PLOOPVAULT_PASSWORD_FILE=/root/.pv-pass ploopvault init --repo s3://backups/node1 --encrypt\n",
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
        throw new UsageError(`--chunk-avg: ${error instanceof Error ? error.message : String(error)}`);
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
        if (given.given) throw new UsageError(`a password was given (${given.source}) but not --encrypt: add --encrypt, or remove it for an unencrypted repository`);
      }
      const store = await openStoreFromOptions(options);
      try {
        const repo = await createRepository(store, newRepositoryConfig(chunker, level, new Date()), {
          ...(password === undefined ? {} : { password }),
          ...conditionalWritesProbe(options, store, out),
        });
        const encryption = repo.keyId === null ? null : { scheme: repo.config.encryption!.scheme, key: repo.keyId };
        if (out.json) out.jsonResult({ repository: repo.location, id: repo.config.id, chunker: repo.config.chunker, compression: repo.config.compression, encryption });
        out.info(
          `created ${encryption ? "encrypted " : ""}repository ${repo.config.id} at ${repo.location} (chunks avg ${formatBytes(chunker.avgSize)}, zstd level ${level}${encryption ? `, AES-256-GCM, key ${encryption.key}` : ""})`,
        );
        if (encryption) out.info("keep the password safe: without it (or another key's password) the backups cannot be restored");
      } finally {
        await store.close();
      }
    });
}
