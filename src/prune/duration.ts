/**
 * Durations on the command line: "90s", "15m", "2h", "7d", "2w", "1y", combinations such
 * as "1d12h", or a plain number of seconds ("0", "30", "0.5"). Units: s seconds,
 * m minutes, h hours, d days (24 h), w weeks (7 d), y years (365 d). Months are not a
 * unit (their length varies; use --keep-monthly or days).
 */
import { UsageError } from "../errors.js";

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000, y: 365 * 86_400_000 };

/** Milliseconds; `option` names the option in the usage error. */
export function parseDuration(text: string, option: string): number {
  const t = text.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  const parts = /^(?:\d+(?:\.\d+)?[smhdwy])+$/.test(t) ? t.match(/\d+(?:\.\d+)?[smhdwy]/g) : null;
  if (parts === null) {
    throw new UsageError(`${option}: "${text}" is not a duration (examples: 90s, 15m, 2h, 7d, 2w, 1y, 1d12h, or seconds)`);
  }
  let ms = 0;
  for (const part of parts) ms += Number(part.slice(0, -1)) * UNIT_MS[part.slice(-1)]!;
  return Math.round(ms);
}

/**
 * A commander argParser for duration options counted in seconds (--lock-wait,
 * --hook-timeout): the same syntax as every other duration ("10m", "1h30m", or seconds).
 */
export function durationSecondsOption(option: string, { allowZero }: { allowZero: boolean }): (value: string) => number {
  return (value: string): number => {
    const ms = parseDuration(value, option);
    if (ms < 0 || (!allowZero && ms === 0)) throw new UsageError(`${option} must be ${allowZero ? "0 or more" : "longer than 0"}, got "${value}"`);
    return ms / 1000;
  };
}

export function formatDuration(ms: number): string {
  const s = ms / 1000;
  if (s < 120) return `${Number(s.toFixed(1))} s`;
  if (s < 7200) return `${Number((s / 60).toFixed(1))} min`;
  if (s < 172_800) return `${Number((s / 3600).toFixed(1))} h`;
  return `${Number((s / 86_400).toFixed(1))} d`;
}
