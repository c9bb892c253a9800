/**
 * Log lines with levels, to stderr and optionally to a log file.
 *
 * stderr (docs/operations.md, "Logs and progress"): `error` and `warn` always, `info`
 * unless -q, `debug` only with -v (and not -q). Text format keeps the plain lines the
 * CLI always printed ("warning: ..." for warnings, "ploopvault: ..." for the final error);
 * `--log-format json` turns every stderr line into one JSON object instead.
 *
 * --log-file FILE: appended to (O_APPEND, so concurrent runs interleave whole lines),
 * created with its parent directories; it always gets `info` and above whatever -q says
 * (cron runs with -q and the file still tells what happened), `debug` with -v. Every
 * file line carries a timestamp, the level, the command and the pid.
 *
 * A live progress display (progress.ts) can take over stderr writes so log lines are
 * printed above its redrawn block instead of through it.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { UsageError } from "../errors.js";

export type LogLevel = "error" | "warn" | "info" | "debug";
export type LogFormat = "text" | "json";

export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

export interface LogSettings {
  quiet?: boolean;
  verbose?: boolean;
  format?: LogFormat;
  /** Append to this file (always info and above). */
  file?: string;
  /** Command name recorded in file lines ("backup"). */
  command?: string;
}

type StderrWriter = (text: string) => void;

const LEVEL_TAG: Record<LogLevel, string> = { error: "ERROR", warn: "WARN ", info: "INFO ", debug: "DEBUG" };

export class Logger {
  private quiet = false;
  private verbose = false;
  private format: LogFormat = "text";
  private command = "";
  private fileFd: number | null = null;
  private filePath: string | null = null;
  private writer: StderrWriter = (text) => {
    process.stderr.write(text);
  };
  private defaultWriter: StderrWriter = this.writer;

  /** Apply settings; a log file is opened once (later calls with the same path keep it). */
  configure(settings: LogSettings): void {
    if (settings.quiet !== undefined) this.quiet = settings.quiet;
    if (settings.verbose !== undefined) this.verbose = settings.verbose;
    if (settings.format !== undefined) this.format = settings.format;
    if (settings.command !== undefined) this.command = settings.command;
    if (settings.file !== undefined && settings.file !== "" && settings.file !== this.filePath) this.openFile(settings.file);
  }

  get isQuiet(): boolean {
    return this.quiet;
  }

  get isVerbose(): boolean {
    return this.verbose;
  }

  get logFormat(): LogFormat {
    return this.format;
  }

  get logFile(): string | null {
    return this.filePath;
  }

  /** Route stderr output through `writer` (the progress display); null restores it. */
  setStderrWriter(writer: StderrWriter | null): void {
    this.writer = writer ?? this.defaultWriter;
  }

  error(message: string, fields?: Record<string, unknown>): void {
    this.emit("error", message, fields, true);
  }

  warn(message: string, fields?: Record<string, unknown>): void {
    this.emit("warn", message, fields, true);
  }

  info(message: string, fields?: Record<string, unknown>): void {
    this.emit("info", message, fields, !this.quiet);
  }

  debug(message: string, fields?: Record<string, unknown>): void {
    if (!this.verbose) return;
    this.emit("debug", message, fields, !this.quiet);
  }

  /** A line for the log file only (run start and end records). */
  fileOnly(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    this.toFile(level, message, fields);
  }

  close(): void {
    if (this.fileFd === null) return;
    try {
      fsyncSync(this.fileFd);
    } catch {
      // a log file on a filesystem without fsync (a pipe, /dev/stderr): nothing to flush
    }
    try {
      closeSync(this.fileFd);
    } catch {
      // already closed
    }
    this.fileFd = null;
    this.filePath = null;
  }

  private emit(level: LogLevel, message: string, fields: Record<string, unknown> | undefined, toStderr: boolean): void {
    this.toFile(level, message, fields);
    if (!toStderr) return;
    if (this.format === "json") {
      this.writer(`${JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...fields })}\n`);
      return;
    }
    const prefix = level === "warn" ? "warning: " : level === "error" ? "ploopvault: " : "";
    this.writer(`${prefix}${message}\n`);
  }

  private toFile(level: LogLevel, message: string, fields: Record<string, unknown> | undefined): void {
    if (this.fileFd === null) return;
    if (level === "debug" && !this.verbose) return;
    const time = new Date().toISOString();
    const line =
      this.format === "json"
        ? JSON.stringify({ time, level, command: this.command || undefined, pid: process.pid, msg: message, ...fields })
        : `${time} ${LEVEL_TAG[level]} ${this.command || "ploopvault"}[${process.pid}] ${message}${fields === undefined ? "" : ` ${JSON.stringify(fields)}`}`;
    try {
      writeSync(this.fileFd, `${line}\n`);
    } catch {
      // a full disk must not turn a good backup into a failure: the stderr line still goes out
    }
  }

  private openFile(path: string): void {
    this.close();
    try {
      mkdirSync(dirname(path), { recursive: true });
      this.fileFd = openSync(path, "a", 0o640);
      this.filePath = path;
    } catch (error) {
      throw new UsageError(`--log-file ${path}: cannot open for appending (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
  }
}

/** The process-wide logger (one CLI command per process). */
export const logger = new Logger();
