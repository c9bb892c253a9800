import { Command, Option } from "commander";
import { chunkerParamsForAverage, DEFAULT_AVG_CHUNK } from "../chunker/index.js";
import { UsageError } from "../errors.js";
import { newRepositoryConfig } from "../repository/config.js";
import { Repository } from "../repository/repository.js";
import { formatBytes, parseSize } from "../util/format.js";
import { addCommonOptions, openStoreFromOptions, Output, type GlobalOptions } from "./common.js";

interface InitOptions extends GlobalOptions {
  chunkAvg: string;
  compressionLevel: string;
}

export function initCommand(): Command {
  return addCommonOptions(new Command("init"))
    .description("create a new repository (refuses an existing one)")
    .addOption(new Option("--chunk-avg <size>", "average chunk size, a power of two (e.g. 256K, 1M)").default(String(DEFAULT_AVG_CHUNK >> 10) + "K"))
    .addOption(new Option("--compression-level <n>", "zstd level (1-19)").default("3"))
    .addHelpText("after", "\nExamples:\n  ploopvault init --repo /srv/backup\n  ploopvault init --repo s3://backups/node1 --endpoint http://minio:9000\n")
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
      const store = openStoreFromOptions(options);
      try {
        await store.ensureContainer?.();
        const repo = await Repository.init(store, newRepositoryConfig(chunker, level, new Date()));
        if (out.json) out.jsonResult({ repository: repo.location, id: repo.config.id, chunker: repo.config.chunker, compression: repo.config.compression });
        out.info(`created repository ${repo.config.id} at ${repo.location} (chunks avg ${formatBytes(chunker.avgSize)}, zstd level ${level})`);
      } finally {
        await store.close();
      }
    });
}
