/**
 * Prometheus textfile metrics (node_exporter --collector.textfile.directory), written
 * after every run of a command that has --metrics-file, success or not, atomically (temp
 * file in the same directory, fsync, rename): the collector never reads half a file.
 *
 * Names are ploopvault_<command>_..., labels host (and ct for per-container series):
 *
 *   _last_run_timestamp_seconds        end of the last run
 *   _last_run_duration_seconds
 *   _last_run_exit_code                0 ok, 1 failure, 2 usage, 3 partial, 4 host lock busy, 5 wrong password
 *   _last_run_success                  1 if the exit code was 0
 *   _last_success_timestamp_seconds    end of the last run that exited 0 (kept across failures)
 *   _runs_total, _failures_total       counters kept across runs (in the file itself)
 *   _containers{status="ok"|"failed"}  containers in the last run
 *   _container_success{ct}             1 if the container's backup succeeded in the last run
 *   _container_last_success_timestamp_seconds{ct}   kept across failures
 *   _container_duration_seconds{ct}    last attempt
 *   _container_logical_bytes{ct}       disk size, of the last successful backup (kept across failures)
 *   _container_read_bytes{ct}          bytes read from the image, idem
 *   _container_new_bytes{ct}           bytes newly stored (after dedup and compression), idem
 *   _container_new_chunks{ct}          idem
 *   _container_failures_total{ct}      counter kept across runs
 *
 * `check --fs` adds, per container whose newest (or given) backup it walked (labels ct and
 * backup_host, the node that made the backup; host is the node that ran the check):
 *
 *   _fs_ok{ct}                          1 if its filesystem walked without damage
 *   _fs_errors{ct}                      damage found (0 when ok)
 *   _fs_files{ct}, _fs_directories{ct}  what the walk saw
 *   _fs_bytes_fetched{ct}               repository bytes the walk fetched
 *   _fs_duration_seconds{ct}
 *   _fs_backup_timestamp_seconds{ct}    when the checked backup was taken (alert on its age)
 *   _fs_last_ok_timestamp_seconds{ct}   end of the last run that found it ok (kept across failures)
 *
 * What is "kept across runs" is read back from the previous file. A container that is not
 * in a successful run disappears from the file (it was removed from the host); after a run
 * that failed, containers of the previous file that this run did not report keep their
 * series with success 0, so alerts on their age keep firing instead of going absent. Use
 * one metrics file per cron job.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { ContainerResult } from "../host/run.js";

export type RunStatus = "success" | "partial" | "failure";

export interface RunSummary {
  command: string;
  host: string;
  startedAt: Date;
  finishedAt: Date;
  exitCode: number;
  status: RunStatus;
  error: string | null;
  results: ContainerResult[];
  /** check --fs: one per backup walked. */
  fsChecks?: FsCheckMetric[];
}

export interface FsCheckMetric {
  ct: string;
  /** The host that made the checked backup (label backup_host: container ids repeat across hosts). */
  backupHost: string;
  ok: boolean;
  errors: number;
  files: number;
  directories: number;
  bytesFetched: number;
  seconds: number;
  /** When the checked backup was taken (ISO 8601). */
  backupTime: string;
}

type Labels = Record<string, string>;
interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function unescapeLabel(value: string): string {
  return value.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
}

/** Samples of a textfile (only what this module writes needs to round-trip). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line.trim());
    if (!m || line.startsWith("#")) continue;
    const labels: Labels = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = unescapeLabel(l[2]!);
    const value = Number(m[3]);
    if (Number.isFinite(value)) out.push({ name: m[1]!, labels, value });
  }
  return out;
}

function formatValue(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(3);
}

export function statusOf(exitCode: number): RunStatus {
  return exitCode === 0 ? "success" : exitCode === 3 ? "partial" : "failure";
}

interface Family {
  help: string;
  type: "gauge" | "counter";
  samples: Sample[];
}

export function renderMetrics(summary: RunSummary, previousText: string | null): string {
  const p = `ploopvault_${summary.command.replace(/[^a-zA-Z0-9_]/g, "_")}_`;
  const previous = previousText === null ? [] : parseMetrics(previousText);
  const prev = (name: string, ct?: string): number | undefined =>
    previous.find((s) => s.name === p + name && (ct === undefined ? s.labels.ct === undefined : s.labels.ct === ct))?.value;
  const host = summary.host;
  const end = summary.finishedAt.getTime() / 1000;
  const ok = summary.exitCode === 0;

  const families = new Map<string, Family>();
  const add = (name: string, type: Family["type"], help: string, labels: Labels, value: number | undefined): void => {
    if (value === undefined) return;
    const full = p + name;
    let family = families.get(full);
    if (family === undefined) {
      family = { help, type, samples: [] };
      families.set(full, family);
    }
    family.samples.push({ name: full, labels: { ...labels, host }, value });
  };

  add("last_run_timestamp_seconds", "gauge", "End time of the last run (Unix seconds).", {}, end);
  add("last_run_duration_seconds", "gauge", "Duration of the last run.", {}, (summary.finishedAt.getTime() - summary.startedAt.getTime()) / 1000);
  add(
    "last_run_exit_code",
    "gauge",
    "Exit code of the last run (0 ok, 1 failure, 2 usage, 3 partial, 4 host lock busy, 5 wrong repository password).",
    {},
    summary.exitCode,
  );
  add("last_run_success", "gauge", "1 if the last run exited 0.", {}, ok ? 1 : 0);
  add(
    "last_success_timestamp_seconds",
    "gauge",
    "End time of the last run that exited 0 (Unix seconds).",
    {},
    ok ? end : prev("last_success_timestamp_seconds"),
  );
  add("runs_total", "counter", "Runs recorded in this file.", {}, (prev("runs_total") ?? 0) + 1);
  add("failures_total", "counter", "Runs that did not exit 0.", {}, (prev("failures_total") ?? 0) + (ok ? 0 : 1));
  if (summary.results.length > 0 || summary.command === "backup") {
    add("containers", "gauge", "Containers in the last run, by outcome.", { status: "ok" }, summary.results.filter((r) => r.status === "ok").length);
    add("containers", "gauge", "Containers in the last run, by outcome.", { status: "failed" }, summary.results.filter((r) => r.status !== "ok").length);
  }

  const perCt = (r: { ct: string; status: "ok" | "error" | "not-run"; seconds?: number; result?: ContainerResult }): void => {
    const labels = { ct: r.ct };
    const good = r.status === "ok";
    const res = r.result;
    add("container_success", "gauge", "1 if the container's backup succeeded in the last run.", labels, good ? 1 : 0);
    add(
      "container_last_success_timestamp_seconds",
      "gauge",
      "End time of the container's last successful backup (Unix seconds).",
      labels,
      good ? end : prev("container_last_success_timestamp_seconds", r.ct),
    );
    add(
      "container_duration_seconds",
      "gauge",
      "Duration of the container's last backup attempt.",
      labels,
      r.seconds ?? prev("container_duration_seconds", r.ct),
    );
    add(
      "container_logical_bytes",
      "gauge",
      "Disk size of the container's last successful backup.",
      labels,
      good ? res?.logicalBytes : prev("container_logical_bytes", r.ct),
    );
    add(
      "container_read_bytes",
      "gauge",
      "Bytes read from the images by the container's last successful backup.",
      labels,
      good ? res?.readBytes : prev("container_read_bytes", r.ct),
    );
    add(
      "container_new_bytes",
      "gauge",
      "Bytes newly stored by the container's last successful backup.",
      labels,
      good ? res?.newBytesStored : prev("container_new_bytes", r.ct),
    );
    add(
      "container_new_chunks",
      "gauge",
      "Chunks newly stored by the container's last successful backup.",
      labels,
      good ? res?.newChunks : prev("container_new_chunks", r.ct),
    );
    add(
      "container_failures_total",
      "counter",
      "Failed backups of the container.",
      labels,
      (prev("container_failures_total", r.ct) ?? 0) + (r.status === "error" ? 1 : 0),
    );
  };
  const reported = new Set<string>();
  for (const r of summary.results) {
    reported.add(r.ct);
    perCt({ ct: r.ct, status: r.status, seconds: r.seconds, result: r });
  }
  if (!ok) {
    const before = new Set(previous.filter((s) => s.name === `${p}container_success` && s.labels.ct !== undefined).map((s) => s.labels.ct!));
    for (const ct of [...before].sort()) if (!reported.has(ct)) perCt({ ct, status: "not-run" });
  }

  const fsReported = new Set<string>();
  const prevFs = (name: string, ct: string, backupHost: string): number | undefined =>
    previous.find((s) => s.name === p + name && s.labels.ct === ct && s.labels.backup_host === backupHost)?.value;
  const perFs = (m: FsCheckMetric | { ct: string; backupHost: string; ok: false }): void => {
    const labels = { ct: m.ct, backup_host: m.backupHost };
    const full = "files" in m;
    const kept = (name: string, value: number | undefined): number | undefined => (full ? value : prevFs(name, m.ct, m.backupHost));
    add("fs_ok", "gauge", "1 if the container's backup holds a filesystem that walked without damage (check --fs).", labels, m.ok ? 1 : 0);
    add("fs_errors", "gauge", "Damage found in the filesystem of the container's backup.", labels, kept("fs_errors", full ? m.errors : undefined));
    add("fs_files", "gauge", "Files in the filesystem of the container's backup.", labels, kept("fs_files", full ? m.files : undefined));
    add("fs_directories", "gauge", "Folders in the filesystem of the container's backup.", labels, kept("fs_directories", full ? m.directories : undefined));
    add("fs_bytes_fetched", "gauge", "Repository bytes the filesystem walk fetched.", labels, kept("fs_bytes_fetched", full ? m.bytesFetched : undefined));
    add("fs_duration_seconds", "gauge", "Duration of the filesystem walk.", labels, kept("fs_duration_seconds", full ? m.seconds : undefined));
    add(
      "fs_backup_timestamp_seconds",
      "gauge",
      "When the checked backup was taken (Unix seconds).",
      labels,
      kept("fs_backup_timestamp_seconds", full ? Date.parse(m.backupTime) / 1000 : undefined),
    );
    add(
      "fs_last_ok_timestamp_seconds",
      "gauge",
      "End of the last run that found the container's backup filesystem ok (Unix seconds).",
      labels,
      m.ok ? end : prevFs("fs_last_ok_timestamp_seconds", m.ct, m.backupHost),
    );
  };
  for (const m of summary.fsChecks ?? []) {
    fsReported.add(`${m.backupHost}\0${m.ct}`);
    perFs(m);
  }
  if (!ok) {
    // a failed run keeps the containers it did not reach, as not ok (alerts keep firing)
    for (const s of previous.filter((x) => x.name === `${p}fs_ok` && x.labels.ct !== undefined && x.labels.backup_host !== undefined)) {
      if (!fsReported.has(`${s.labels.backup_host}\0${s.labels.ct}`)) perFs({ ct: s.labels.ct!, backupHost: s.labels.backup_host!, ok: false });
    }
  }

  const lines: string[] = [];
  for (const [name, family] of families) {
    lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`);
    for (const s of family.samples) {
      const labels = Object.entries(s.labels)
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(",");
      lines.push(`${name}{${labels}} ${formatValue(s.value)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** Write the metrics file atomically, carrying counters and last-success times over. */
export async function writeMetricsFile(path: string, summary: RunSummary): Promise<void> {
  let previous: string | null = null;
  try {
    previous = await readFile(path, "utf8");
  } catch {
    previous = null;
  }
  const text = renderMetrics(summary, previous);
  await mkdir(dirname(path), { recursive: true });
  // node_exporter reads only *.prom: the temp name does not end in .prom.
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(3).toString("hex")}.tmp`);
  const fh = await open(temp, "wx", 0o644);
  try {
    await fh.writeFile(text);
    await fh.sync();
    await fh.close();
    await rename(temp, path);
  } catch (error) {
    await fh.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw error;
  }
}
