/**
 * What every command shares: repository options, opening the store, output modes.
 * Logs go to stderr; --json results go to stdout; -q silences stderr on success.
 */
import { hostname } from "node:os";
import { Option, type Command } from "commander";
import { UsageError } from "../errors.js";
import { Repository } from "../repository/repository.js";
import { openStore } from "../uploader/open.js";
import type { ObjectStore } from "../uploader/store.js";

export interface GlobalOptions {
  repo?: string;
  endpoint?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  stateDir: string;
}

export const DEFAULT_STATE_DIR = "/var/lib/ploopvault";

export function addCommonOptions(cmd: Command): Command {
  return cmd
    .option("--repo <url>", "repository: s3://BUCKET[/PREFIX], file://PATH or a directory (env PLOOPVAULT_REPO)")
    .option("--endpoint <url>", "S3 endpoint URL for non-AWS servers (env AWS_ENDPOINT_URL)")
    .option("--json", "machine-readable result on stdout")
    .option("-q, --quiet", "no log output on success")
    .option("-v, --verbose", "more log output")
    .addOption(new Option("--state-dir <dir>", "local state: journal, caches").env("PLOOPVAULT_STATE").default(DEFAULT_STATE_DIR));
}

export class Output {
  constructor(private readonly options: GlobalOptions) {}

  get json(): boolean {
    return this.options.json === true;
  }

  /** A normal log line (stderr), silenced by -q. */
  info(line: string): void {
    if (!this.options.quiet) process.stderr.write(`${line}\n`);
  }

  /** A log line only with -v. */
  debug(line: string): void {
    if (this.options.verbose && !this.options.quiet) process.stderr.write(`${line}\n`);
  }

  /** Something the operator should see even with -q (recoveries, warnings). */
  warn(line: string): void {
    process.stderr.write(`warning: ${line}\n`);
  }

  /** Human result line on stdout (not in --json mode). */
  result(line: string): void {
    if (!this.json) process.stdout.write(`${line}\n`);
  }

  jsonResult(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value)}\n`);
  }
}

export function repoUrl(options: GlobalOptions): string {
  const url = options.repo ?? process.env.PLOOPVAULT_REPO;
  if (url === undefined || url === "") throw new UsageError("no repository given: use --repo URL or set PLOOPVAULT_REPO");
  return url;
}

export function openStoreFromOptions(options: GlobalOptions): ObjectStore {
  const endpoint = options.endpoint ?? process.env.AWS_ENDPOINT_URL;
  return openStore(repoUrl(options), endpoint === undefined ? {} : { endpoint });
}

export async function openRepository(options: GlobalOptions): Promise<Repository> {
  const store = openStoreFromOptions(options);
  try {
    return await Repository.open(store);
  } catch (error) {
    await store.close();
    throw error;
  }
}

export function defaultHost(): string {
  return hostname();
}

export function parsePositiveInt(name: string): (value: string) => number {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, got "${value}"`);
    return n;
  };
}
