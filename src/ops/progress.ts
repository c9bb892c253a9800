/**
 * Live progress on a terminal: one line per running task (a container being backed up,
 * a restore, a check), plus a total line when several run in parallel:
 *
 *   CT 101  [######-------------]  31%  412.0 MiB / 1.3 GiB  96.2 MiB/s  new 12.4 MiB  ETA 0:09
 *
 * The block is redrawn in place with ANSI cursor movement, at most every `intervalMs`
 * (and on a timer, so rates and ETAs stay fresh while a task waits on the network). Log
 * lines go through printAbove(): the block is erased, the line printed, the block redrawn,
 * so the scrollback only ever holds log lines. Lines are cut to the terminal width so a
 * narrow terminal never wraps (wrapping would break the cursor arithmetic).
 *
 * Shown only when stderr is a TTY, without -q, with the text log format, TERM is not
 * "dumb" and --no-progress is not given (shouldShowProgress). stdout is never touched, so
 * --json results and `restore --target -` streams stay clean.
 */
import { formatBytes } from "../util/format.js";
import { logger } from "./log.js";

export type ProgressUnit = "bytes" | "chunks";

export interface ProgressSample {
  done: number;
  total: number;
  /** Bytes newly stored (backup). */
  newBytes?: number;
}

interface Row {
  label: string;
  unit: ProgressUnit;
  done: number;
  total: number;
  newBytes: number | undefined;
  samples: { t: number; done: number }[];
}

const RATE_WINDOW_MS = 10_000;
const ESC = "\u001b[";

export interface ProgressStream {
  write(text: string): unknown;
  columns?: number;
  isTTY?: boolean;
}

export class ProgressDisplay {
  private readonly rows = new Map<string, Row>();
  private drawnLines = 0;
  private lastDraw = -Infinity;
  private timer: ReturnType<typeof setInterval> | null = null;
  private closed = false;

  constructor(
    private readonly stream: ProgressStream,
    private readonly intervalMs = 250,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** New figures for a task; the first call adds its line. Redraws at most every intervalMs. */
  update(key: string, label: string, sample: ProgressSample, unit: ProgressUnit = "bytes"): void {
    if (this.closed) return;
    const t = this.now();
    let row = this.rows.get(key);
    if (row === undefined) {
      row = { label, unit, done: 0, total: 0, newBytes: undefined, samples: [] };
      this.rows.set(key, row);
      this.startTimer();
    }
    row.label = label;
    row.done = sample.done;
    row.total = sample.total;
    row.newBytes = sample.newBytes;
    row.samples.push({ t, done: sample.done });
    while (row.samples.length > 2 && t - row.samples[1]!.t > RATE_WINDOW_MS) row.samples.shift();
    if (t - this.lastDraw >= this.intervalMs) this.draw();
  }

  /** The task finished: its line goes away (its result is logged by the command). */
  remove(key: string): void {
    if (!this.rows.delete(key)) return;
    this.draw();
    if (this.rows.size === 0) this.stopTimer();
  }

  /** Print log text above the block. */
  printAbove(text: string): void {
    if (this.closed || this.drawnLines === 0) {
      this.stream.write(text);
      return;
    }
    this.stream.write(this.eraseSequence() + text + this.blockText());
    this.lastDraw = this.now();
  }

  /** Erase the block and stop; later updates are ignored. */
  close(): void {
    if (this.closed) return;
    this.stopTimer();
    if (this.drawnLines > 0) this.stream.write(this.eraseSequence());
    this.drawnLines = 0;
    this.closed = true;
    this.rows.clear();
  }

  get lineCount(): number {
    return this.drawnLines;
  }

  /** The lines the block would show now (tests, and the renderer). */
  lines(): string[] {
    const t = this.now();
    const width = Math.max(40, (this.stream.columns ?? 0) > 0 ? this.stream.columns! - 1 : 100);
    const rows = [...this.rows.values()];
    const out = rows.map((r) => fit(renderRow(r.label, r.unit, r.done, r.total, r.newBytes, rate(r, t), width), width));
    if (rows.length > 1 && rows.every((r) => r.unit === "bytes")) {
      const done = rows.reduce((s, r) => s + r.done, 0);
      const total = rows.reduce((s, r) => s + r.total, 0);
      const hasNew = rows.some((r) => r.newBytes !== undefined);
      const newBytes = rows.reduce((s, r) => s + (r.newBytes ?? 0), 0);
      const speed = rows.reduce((s, r) => s + (Number.isNaN(rate(r, t)) ? 0 : rate(r, t)), 0);
      out.push(fit(renderRow(`total (${rows.length} running)`, "bytes", done, total, hasNew ? newBytes : undefined, speed, width), width));
    }
    return out;
  }

  private draw(): void {
    if (this.closed) return;
    this.stream.write(this.eraseSequence() + this.blockText());
    this.lastDraw = this.now();
  }

  private blockText(): string {
    const lines = this.lines();
    this.drawnLines = lines.length;
    return lines.map((l) => `${l}${ESC}K\n`).join("");
  }

  /** Cursor back to the first line of the block, and everything below it erased. */
  private eraseSequence(): string {
    const n = this.drawnLines;
    this.drawnLines = 0;
    return n === 0 ? "" : `${ESC}${n}A\r${ESC}J`;
  }

  private startTimer(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => {
      if (this.rows.size > 0) this.draw();
    }, this.intervalMs);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
  }
}

function rate(row: Row, t: number): number {
  const first = row.samples[0];
  const last = row.samples[row.samples.length - 1];
  if (first === undefined || last === undefined || last === first) return Number.NaN; // not known yet
  // Rates decay while nothing arrives (a stall shows as a falling rate, not a frozen one).
  const seconds = (Math.max(t, last.t) - first.t) / 1000;
  return seconds <= 0 ? 0 : (last.done - first.done) / seconds;
}

export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function renderRow(label: string, unit: ProgressUnit, done: number, total: number, newBytes: number | undefined, speed: number, width: number): string {
  const fraction = total > 0 ? Math.min(1, done / total) : 0;
  const pct = `${Math.floor(fraction * 100)}%`.padStart(4);
  const amount = unit === "bytes" ? `${formatBytes(done)} / ${formatBytes(total)}` : `${done} / ${total} chunks`;
  const speedText = Number.isNaN(speed) ? "--/s" : unit === "bytes" ? `${formatBytes(Math.round(speed))}/s` : `${speed.toFixed(0)}/s`;
  const eta = speed > 0 && total > done ? formatEta((total - done) / speed) : done >= total && total > 0 ? "0:00" : "--:--";
  const parts = [label.padEnd(6), pct, amount, speedText];
  if (newBytes !== undefined) parts.push(`new ${formatBytes(newBytes)}`);
  parts.push(`ETA ${eta}`);
  const plain = parts.join("  ");
  const barWidth = Math.min(20, width - plain.length - 4);
  if (barWidth < 8) return plain;
  const filled = Math.round(fraction * barWidth);
  const bar = `[${"#".repeat(filled)}${"-".repeat(barWidth - filled)}]`;
  return [parts[0], bar, ...parts.slice(1)].join("  ");
}

function fit(line: string, width: number): string {
  return line.length <= width ? line : line.slice(0, width);
}

// --- the process-wide display ---------------------------------------------------------

let enabled = false;
let active: ProgressDisplay | null = null;

export interface ProgressSettings {
  quiet?: boolean;
  progress?: boolean;
  logFormat?: string;
}

/** Progress is for people watching a terminal: never in pipes, cron mails, -q or JSON logs. */
export function shouldShowProgress(settings: ProgressSettings, stream: ProgressStream = process.stderr, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && settings.quiet !== true && settings.progress !== false && (settings.logFormat ?? "text") === "text" && env.TERM !== "dumb";
}

export function enableProgress(on: boolean): void {
  enabled = on;
}

/** The display when progress is on (created on first use), else null. */
export function progressDisplay(): ProgressDisplay | null {
  if (!enabled) return null;
  if (active === null) {
    const display = new ProgressDisplay(process.stderr);
    active = display;
    logger.setStderrWriter((text) => display.printAbove(text));
  }
  return active;
}

/** Erase the block (before the final error line, at exit). */
export function closeProgress(): void {
  if (active === null) return;
  active.close();
  logger.setStderrWriter(null);
  active = null;
  enabled = false;
}
