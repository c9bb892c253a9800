/**
 * What happens around every command, driven by its options (so a command opts in just by
 * having the option): before the action (main.ts preAction hook) the config file fills in
 * unset options, the logger opens --log-file, progress is switched on for a terminal, the
 * I/O priority drops to idle (--ionice, backup), and runs with --metrics-file or hooks are
 * armed; after the action (success or not, with the final exit code) the metrics file is
 * written and the matching hook runs.
 */
import { hostname } from "node:os";
import type { Command } from "commander";
import type { ContainerResult } from "../host/run.js";
import { errorLine } from "../errors.js";
import { TOOL_VERSION } from "../version.js";
import { applyConfig, loadConfig, type AppliedSetting, type ConfigFile } from "./config.js";
import { CONFIG_KEYS } from "./config-keys.js";
import { runHook } from "./hooks.js";
import { setIdleIoPriority } from "./ionice.js";
import { logger, type LogFormat } from "./log.js";
import { statusOf, writeMetricsFile, type FsCheckMetric, type RunSummary } from "./metrics.js";
import { closeProgress, enableProgress, progressDisplay, shouldShowProgress } from "./progress.js";

interface SessionOptions {
  config?: string;
  logFile?: string;
  logFormat?: LogFormat;
  quiet?: boolean;
  verbose?: boolean;
  progress?: boolean;
  ionice?: boolean;
  metricsFile?: string;
  hookSuccess?: string;
  hookFailure?: string;
  hookTimeout?: number;
  host?: string;
}

interface ArmedRun {
  command: string;
  startedAt: Date;
  options: SessionOptions;
  results: ContainerResult[];
  fsChecks: FsCheckMetric[];
}

let started: { command: string; at: number } | null = null;
let armed: ArmedRun | null = null;

const CONFIG_KEYS_BY_COMMAND = new Map(Object.entries(CONFIG_KEYS).map(([name, keys]) => [name, new Set(keys)]));

/** preAction: config, logging, progress, I/O priority, monitoring. */
export async function beforeCommand(program: Command, command: Command): Promise<void> {
  const config = await loadConfig((command.opts() as SessionOptions).config);
  // the table, not `program`: a run holds only its own command (src/main.ts)
  const applied = config === null ? [] : applyConfig(program, command, config, CONFIG_KEYS_BY_COMMAND);
  notePasswordOrigin(command, config, applied);
  const options = command.opts() as SessionOptions;
  logger.configure({
    quiet: options.quiet === true,
    verbose: options.verbose === true,
    format: options.logFormat ?? "text",
    ...(options.logFile === undefined ? {} : { file: options.logFile }),
    command: command.name(),
  });
  started = { command: command.name(), at: performance.now() };
  logger.fileOnly("info", `ploopvault ${TOOL_VERSION}: ${command.name()} started: ${process.argv.slice(2).join(" ")}`);
  if (config !== null) {
    for (const a of applied) logger.debug(`config ${config.path}:${a.line}: ${a.key}`);
  }
  enableProgress(shouldShowProgress({ quiet: options.quiet === true, progress: options.progress !== false, logFormat: options.logFormat ?? "text" }));
  if (options.ionice === true) {
    const r = await setIdleIoPriority();
    logger.debug(r.detail);
  }
  if (options.metricsFile !== undefined || options.hookSuccess !== undefined || options.hookFailure !== undefined) {
    armed = { command: command.name(), startedAt: new Date(), options, results: [], fsChecks: [] };
  }
}

/**
 * Where the repository password option came from, for messages that must point at it (a
 * password-file line in the config file breaks every command on an unencrypted repository:
 * the message names the file and line, not just "--password-file").
 */
function notePasswordOrigin(command: Command, config: ConfigFile | null, applied: readonly AppliedSetting[]): void {
  for (const [attribute, key, env] of [
    ["passwordFile", "password-file", "PLOOPVAULT_PASSWORD_FILE"],
    ["passwordCommand", "password-command", "PLOOPVAULT_PASSWORD_COMMAND"],
  ] as const) {
    const value = command.getOptionValue(attribute) as string | undefined;
    if (value === undefined) continue;
    const source = command.getOptionValueSource(attribute);
    const setting = applied.find((a) => a.attribute === attribute);
    const origin =
      source === "config" && config !== null && setting !== undefined
        ? `${key} = ${value} in config file ${config.path}, line ${setting.line}`
        : source === "env"
          ? `env ${env}=${value}`
          : `--${key} ${value}`;
    command.setOptionValueWithSource("passwordOrigin", origin, "implied");
    return;
  }
}

/** A per-container result of the running command (for metrics and hooks). */
export function recordResult(result: ContainerResult): void {
  progressDisplay()?.remove(`ct:${result.ct}`);
  armed?.results.push(result);
}

/** A backup's filesystem walk by check --fs (for metrics). */
export function recordFsCheck(metric: FsCheckMetric): void {
  armed?.fsChecks.push(metric);
}

/**
 * After the command, with its exit code: close the progress block, print the error line,
 * write metrics, run the hook. Never throws: a broken metrics directory or hook is a
 * warning, the exit code stays the command's.
 */
export async function afterCommand(exitCode: number, error: unknown): Promise<void> {
  closeProgress();
  if (error !== undefined) logger.error(errorLine(error));
  const run = armed;
  armed = null;
  if (run !== null) {
    const summary: RunSummary = {
      command: run.command,
      host: run.options.host ?? hostname(),
      startedAt: run.startedAt,
      finishedAt: new Date(),
      exitCode,
      status: statusOf(exitCode),
      error: error === undefined ? null : errorLine(error),
      results: run.results,
      ...(run.fsChecks.length > 0 ? { fsChecks: run.fsChecks } : {}),
    };
    if (run.options.metricsFile !== undefined) {
      try {
        await writeMetricsFile(run.options.metricsFile, summary);
        logger.debug(`metrics written to ${run.options.metricsFile}`);
      } catch (e) {
        logger.warn(`--metrics-file ${run.options.metricsFile}: cannot write (${(e as NodeJS.ErrnoException).code ?? errorLine(e)})`);
      }
    }
    const hook = exitCode === 0 ? run.options.hookSuccess : run.options.hookFailure;
    if (hook !== undefined && hook !== "") {
      const name = exitCode === 0 ? "--hook-success" : "--hook-failure";
      try {
        await runHook(summary, {
          name,
          command: hook,
          timeoutSeconds: run.options.hookTimeout ?? 300,
          log: (line) => logger.info(line),
          warn: (line) => logger.warn(line),
        });
      } catch (e) {
        logger.warn(`${name}: ${errorLine(e)}`);
      }
    }
  }
  if (started !== null) {
    logger.fileOnly(
      exitCode === 0 ? "info" : "error",
      `${started.command} finished with exit code ${exitCode} after ${((performance.now() - started.at) / 1000).toFixed(1)} s`,
    );
    started = null;
  }
  logger.close();
}
