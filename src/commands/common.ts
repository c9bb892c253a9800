/**
 * What every command shares: repository options, opening the store, output modes.
 * Logs go to stderr (src/ops/log.ts: levels, --log-file, --log-format); --json results go
 * to stdout; -q makes a successful run print nothing but the listing or data it was asked
 * for (and --json results). Options left unset on the command line and in
 * the environment come from the config file (src/ops/config.ts, applied by main.ts).
 */
import { hostname } from "node:os";
import { Option, type Command } from "commander";
import { passwordProvider } from "../crypto/password.js";
import { PloopvaultError, UsageError } from "../errors.js";
import { LOG_FORMATS, logger, type LogFormat } from "../ops/log.js";
import { rateOption, withRateLimits } from "../uploader/rate-limit.js";
import type { Repository } from "../repository/repository.js";
import type { ConditionalWritesOptions } from "../repository/conditional-writes.js";
import { openTrustedRepository } from "../repository/trust.js";
import { defaultLockHost, lockBody, uniqueLockKey } from "../prune/locks.js";
import { openStore } from "../uploader/open.js";
import type { ObjectStore } from "../uploader/store.js";

export interface GlobalOptions {
  repo?: string;
  endpoint?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  stateDir: string;
  /** Password of an encrypted repository (else env PLOOPVAULT_PASSWORD or a terminal prompt). */
  passwordFile?: string;
  /** A command printing the password (restic's --password-command). */
  passwordCommand?: string;
  /** Where the password option came from when not the command line (set by src/ops/session.ts). */
  passwordOrigin?: string;
  config?: string;
  logFile?: string;
  logFormat?: LogFormat;
  /** false with --no-progress. */
  progress?: boolean;
  /** Bytes per second (--limit-upload / --limit-download). */
  limitUpload?: number;
  limitDownload?: number;
}

import { DEFAULT_STATE_DIR } from "../util/state-dir.js";
export { DEFAULT_STATE_DIR };

export function addCommonOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--repo <url>", "repository: s3://BUCKET[/PREFIX], file://PATH or a directory").env("PLOOPVAULT_REPO"))
    .addOption(new Option("--endpoint <url>", "S3 endpoint URL for non-AWS servers").env("AWS_ENDPOINT_URL"))
    .option("--json", "machine-readable result on stdout")
    .option("-q, --quiet", "no log output on success")
    .option("-v, --verbose", "more log output")
    .addOption(
      new Option("--password-file <file>", "password of an encrypted repository (else env PLOOPVAULT_PASSWORD, or a prompt on a terminal)").env(
        "PLOOPVAULT_PASSWORD_FILE",
      ),
    )
    .addOption(new Option("--password-command <command>", "run COMMAND (/bin/sh -c) and use what it prints as the password").env("PLOOPVAULT_PASSWORD_COMMAND"))
    .addOption(new Option("--state-dir <dir>", "local state: journal, caches").env("PLOOPVAULT_STATE").default(DEFAULT_STATE_DIR))
    .addOption(new Option("--config <file>", 'config file (default /etc/ploopvault/ploopvault.conf if it exists; "" = none)').env("PLOOPVAULT_CONFIG"))
    .addOption(new Option("--limit-upload <rate>", "limit uploads to RATE bytes/s (e.g. 20M = 20 MiB/s)").argParser(rateOption("--limit-upload")))
    .addOption(new Option("--limit-download <rate>", "limit downloads to RATE bytes/s (e.g. 50M)").argParser(rateOption("--limit-download")))
    .addOption(new Option("--log-file <file>", "also append log lines with timestamps to FILE (info level even with -q)"))
    .addOption(new Option("--log-format <format>", "log line format on stderr and in the log file").choices(LOG_FORMATS).default("text"))
    .option("--no-progress", "no live progress line on a terminal");
}

export class Output {
  constructor(private readonly options: GlobalOptions) {
    logger.configure({ quiet: options.quiet === true, verbose: options.verbose === true });
  }

  get json(): boolean {
    return this.options.json === true;
  }

  /** A normal log line (stderr), silenced by -q; always in the --log-file. */
  info(line: string): void {
    logger.info(line);
  }

  /** A log line only with -v. */
  debug(line: string): void {
    logger.debug(line);
  }

  /** Something the operator should see even with -q (recoveries, warnings). */
  warn(line: string): void {
    logger.warn(line);
  }

  /** A human report line on stdout (what was done): not in --json mode, not with -q. */
  result(line: string): void {
    if (!this.json && this.options.quiet !== true) process.stdout.write(`${line}\n`);
  }

  /**
   * A line of the listing the command was asked for (snapshots, key list, stats, diff):
   * stdout, even with -q (like a restore to stdout), not in --json mode.
   */
  listing(line: string): void {
    if (!this.json) process.stdout.write(`${line}\n`);
  }

  /** Rows as aligned columns (the first row is the header). */
  table(rows: readonly (readonly string[])[]): void {
    if (rows.length === 0) return;
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? "").length)));
    for (const row of rows)
      this.listing(
        row
          .map((cell, i) => cell.padEnd(widths[i]!))
          .join("  ")
          .trimEnd(),
      );
  }

  jsonResult(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value)}\n`);
  }
}

let mustFinishWithoutStdout = false;

/**
 * `ploopvault snapshots | head -1`: the reader went away (EPIPE). Like any Unix tool that
 * dies of SIGPIPE, stop at once and quietly (exit 141), unless the command said it must
 * finish its work anyway (backup: snapshots to merge back; its --json lines are then lost).
 * Later writes to stdout are dropped, so nothing waits for a "drain" that never comes.
 */
export function installStdoutGuard(exit: (code: number) => void): void {
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
    process.stdout.write = ((_chunk: unknown, ...rest: unknown[]) => {
      const callback = rest.find((r) => typeof r === "function") as (() => void) | undefined;
      if (callback !== undefined) queueMicrotask(callback);
      return true;
    }) as typeof process.stdout.write;
    if (!mustFinishWithoutStdout) exit(141);
  });
}

/** This command finishes its work even if stdout is closed under it. */
export function keepRunningWithoutStdout(): void {
  mustFinishWithoutStdout = true;
}

export function repoUrl(options: GlobalOptions): string {
  const url = options.repo ?? process.env.PLOOPVAULT_REPO;
  if (url === undefined || url === "") throw new UsageError("no repository given: use --repo URL or set PLOOPVAULT_REPO");
  return url;
}

/** The repository's store, wrapped in the bandwidth limits (--limit-upload/--limit-download). */
export async function openStoreFromOptions(options: GlobalOptions): Promise<ObjectStore> {
  const endpoint = options.endpoint || process.env.AWS_ENDPOINT_URL || undefined;
  const store = await openStore(repoUrl(options), endpoint === undefined ? {} : { endpoint });
  return withRateLimits(store, { upload: options.limitUpload, download: options.limitDownload });
}

/**
 * How this host reaches the repository: its location, plus the endpoint for S3 (the same
 * bucket name on another server is another repository). Keys what the state dir
 * remembers about it (src/repository/trust.ts, conditional-writes.ts).
 */
export function repositoryServer(options: GlobalOptions, store: ObjectStore): string {
  const endpoint = options.endpoint || process.env.AWS_ENDPOINT_URL || undefined;
  return store.location.startsWith("s3://") && endpoint !== undefined ? `${store.location} at ${endpoint}` : store.location;
}

/** How init and prune probe the server for conditional writes (a probe lock object under locks/). */
export function conditionalWritesProbe(options: GlobalOptions, store: ObjectStore, out: Output): Omit<ConditionalWritesOptions, "purpose"> {
  const host = defaultLockHost();
  const probeTiming = { ttlMs: 60_000, refreshMs: 10_000, marginMs: 20_000, pollMs: 1000 };
  const started = new Date();
  return {
    stateDir: options.stateDir,
    server: repositoryServer(options, store),
    probeKey: uniqueLockKey("probe", host),
    probeBody: () => lockBody("probe", host, probeTiming, started),
    warn: (line) => out.warn(line),
  };
}

/**
 * Open the repository, checked against what this host remembers about it (a plaintext
 * config where an encrypted repository was is refused, whatever the password source).
 */
export async function openRepository(options: GlobalOptions): Promise<Repository> {
  const store = await openStoreFromOptions(options);
  try {
    return await openTrustedRepository(store, { stateDir: options.stateDir, location: repositoryServer(options, store), password: passwordProvider(options) });
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

/**
 * Run `work` with an AbortSignal that SIGINT and SIGTERM fire (the first one also warns
 * "SIGNAL received: `notice`"), and take the handlers away after: the commands' one way
 * of stopping cleanly when interrupted.
 */
export async function withInterrupts<T>(out: Output, notice: string | null, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (!abort.signal.aborted && notice !== null) out.warn(`${signal} received: ${notice}`);
    abort.abort(new PloopvaultError(`interrupted by ${signal}`));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    return await work(abort.signal);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
