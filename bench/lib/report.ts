/** The benchmark's Markdown report: issue 4's targets first, then every measured run. */
import type { LargeDisk } from "./large-disks.js";
import type { Measured } from "./measure.js";
import type { PutCeiling } from "./s3.js";
import type { BackupStep, BenchDisk, InputKind, RepoSize, RestoreStep, SeededRestoreStep, ToolName } from "./tools.js";
import { formatBytes } from "../../src/util/format.js";

export interface TargetResult {
  tool: ToolName;
  input: InputKind;
  store: "local" | "s3";
  label: string;
  encrypted?: boolean;
  first?: BackupStep;
  repoAfterFirst?: RepoSize;
  unchanged?: BackupStep;
  repoAfterUnchanged?: RepoSize;
  untouched?: BackupStep;
  restore?: RestoreStep;
  restoreVerified?: boolean;
  /** ploopvault: restore of the disk with ~1 % changed, with and without --seed. */
  seeded?: SeededRestoreStep;
  error?: string;
  /** With --repeat: repetitions that failed (the others are reported). */
  failedRuns?: number;
  failedError?: string;
  /**
   * With --repeat: the highest peak RSS of any run of any repetition (peakRssOfRun). The
   * steps above are the median runs, and the memory target is for every run.
   */
  peakRssMiBAllRuns?: number;
}

/** The highest peak RSS of the runs of one repetition (seeded restores included), MiB. */
export function peakRssOfRun(t: TargetResult): number | undefined {
  const steps = [t.first, t.unchanged, t.untouched, t.restore, t.seeded?.unseeded, t.seeded?.seeded, t.seeded?.inPlace];
  const peaks = steps.filter((s) => s !== undefined).map((s) => s!.measured.peakRssMiB);
  return peaks.length === 0 ? undefined : Math.max(...peaks);
}

export interface LargeDiskResult {
  disk: LargeDisk;
  backup?: BackupStep;
  restore?: RestoreStep;
  error?: string;
}

export interface BenchReport {
  date: string;
  command: string;
  /** nice value the run used, null = unchanged. */
  nice: number | null;
  machine: { cpu: string; cores: number; memGiB: number; kernel: string; node: string };
  versions: Partial<Record<ToolName, string>>;
  notes: string[];
  corpus: { dir: string; scale: string | null; disks: BenchDisk[] };
  restoreCt: string;
  local: TargetResult[];
  s3: TargetResult[];
  s3Server?: string;
  ceiling: PutCeiling | null;
  large: LargeDiskResult[];
  loadBefore: number;
  loadAfter: number;
  seconds: number;
  repeat: number;
}

const MB = 1e6;
const RSS_LIMIT_MIB = 256;
const INPUT_NAMES: Record<InputKind, string> = { ploop: "--disk", container: "container mode", raw: "raw disks", image: "ploop images" };

function f(n: number | null | undefined, digits = 1): string {
  return n === null || n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(digits);
}

function row(cells: (string | number)[]): string {
  return `| ${cells.join(" | ")} |`;
}

function cpu(m: Measured): number {
  return m.userSeconds + m.sysSeconds;
}

function find(list: TargetResult[], tool: ToolName, input: InputKind, encrypted = false): TargetResult | undefined {
  return list.find((r) => r.tool === tool && r.input === input && r.error === undefined && (r.encrypted === true) === encrypted);
}

interface Versus {
  pv: number | undefined;
  other: number | undefined;
  /** CPU seconds of both, for time measures (less sensitive to other jobs than wall time). */
  pvCpu?: number | undefined;
  otherCpu?: number | undefined;
}

function ratioCell(v: Versus, limit: number, higherIsBetter = false): [string, string, string] {
  if (v.pv === undefined || v.other === undefined || v.other === 0) return [f(v.other), "-", "-"];
  const ratio = v.pv / v.other;
  const met = higherIsBetter ? ratio >= limit : ratio <= limit;
  const cpuRatio = v.pvCpu !== undefined && v.otherCpu !== undefined && v.otherCpu > 0 ? ` (CPU ${(v.pvCpu / v.otherCpu).toFixed(2)}x)` : "";
  return [f(v.other), `${ratio.toFixed(2)}x${cpuRatio}`, met ? "yes" : "**no**"];
}

/** Wall and CPU seconds of two measured runs, for ratioCell (undefined where a run is missing). */
function versusMeasured(pv: Measured | undefined, other: Measured | undefined): Versus {
  return {
    pv: pv?.seconds,
    other: other?.seconds,
    pvCpu: pv === undefined ? undefined : cpu(pv),
    otherCpu: other === undefined ? undefined : cpu(other),
  };
}

function targetsTable(r: BenchReport): string[] {
  const pv = find(r.local, "ploopvault", "ploop");
  const rr = find(r.local, "restic", "raw");
  const ri = find(r.local, "restic", "image");
  const lines = [
    row(["measure", "ploopvault", "restic, raw disks", "ratio", "met", "restic, ploop images", "ratio", "met", "target"]),
    row(["---", "---:", "---:", "---:", "---", "---:", "---:", "---", "---"]),
  ];
  const pvCt = find(r.local, "ploopvault", "container");
  const add = (
    name: string,
    get: (t: TargetResult) => number | undefined,
    limit: number,
    target: string,
    mine = pv,
    getCpu?: (t: TargetResult) => number | undefined,
  ): void => {
    const p = mine === undefined ? undefined : get(mine);
    const pc = mine === undefined || getCpu === undefined ? undefined : getCpu(mine);
    const other = (t: TargetResult | undefined): Versus => ({
      pv: p,
      other: t === undefined ? undefined : get(t),
      pvCpu: pc,
      otherCpu: t === undefined || getCpu === undefined ? undefined : getCpu(t),
    });
    lines.push(row([name, f(p), ...ratioCell(other(rr), limit), ...ratioCell(other(ri), limit), target]));
  };
  const stepCpu = (s: { measured: Measured } | undefined): number | undefined => (s === undefined ? undefined : cpu(s.measured));
  add(
    "first full backup of the 4 disks, s",
    (t) => t.first?.measured.seconds,
    0.5,
    "<= 0.5x restic",
    pv,
    (t) => stepCpu(t.first),
  );
  const pvEnc = find(r.local, "ploopvault", "ploop", true);
  if (pvEnc !== undefined)
    add(
      "first full backup, ploopvault encrypted (restic always encrypts), s",
      (t) => t.first?.measured.seconds,
      0.5,
      "<= 0.5x restic",
      pvEnc,
      (t) => stepCpu(t.first),
    );
  add(
    "unchanged re-backup of the 4 disks, s",
    (t) => t.unchanged?.measured.seconds,
    0.2,
    "<= 0.2x restic",
    pv,
    (t) => stepCpu(t.unchanged),
  );
  if (pvCt !== undefined)
    add(
      "unchanged re-backup, ploopvault in container mode (running containers: a snapshot each, incremental from the kept delta), s",
      (t) => t.unchanged?.measured.seconds,
      0.2,
      "<= 0.2x restic",
      pvCt,
      (t) => stepCpu(t.unchanged),
    );
  add(
    `restore of one disk (${r.restoreCt}), s`,
    (t) => t.restore?.measured.seconds,
    0.5,
    "<= 0.5x restic",
    pv,
    (t) => stepCpu(t.restore),
  );
  add("repository after the first backup, MB", (t) => (t.repoAfterFirst === undefined ? undefined : t.repoAfterFirst.bytes / MB), 1.0, "<= 1.0x restic");

  // Peak RSS: every ploopvault run of this report (every repetition, seeded restores and
  // the large disks included): the target is for every run, not the median one.
  const peakOf = (t: TargetResult): number | undefined => t.peakRssMiBAllRuns ?? peakRssOfRun(t);
  const pvPeaks: number[] = [];
  for (const t of [...r.local, ...r.s3]) {
    const peak = t.tool === "ploopvault" ? peakOf(t) : undefined;
    if (peak !== undefined) pvPeaks.push(peak);
  }
  for (const l of r.large) for (const s of [l.backup, l.restore]) if (s) pvPeaks.push(s.measured.peakRssMiB);
  const pvRss = pvPeaks.length === 0 ? undefined : Math.max(...pvPeaks);
  const rssOf = (t: TargetResult | undefined): string => {
    const peak = t === undefined ? undefined : peakOf(t);
    return peak === undefined ? "-" : f(peak, 0);
  };
  const rssMet = pvRss === undefined ? "-" : pvRss <= RSS_LIMIT_MIB ? "yes" : "**no**";
  lines.push(
    row([
      `peak RSS, MiB (every ploopvault run${r.repeat > 1 ? " of every repetition" : ""}, seeded restores${r.large.length > 0 ? " and the 1 GiB and 8 GiB disks" : ""} included)`,
      f(pvRss, 0),
      rssOf(rr),
      "",
      rssMet,
      rssOf(ri),
      "",
      "",
      `<= ${RSS_LIMIT_MIB} MiB`,
    ]),
  );

  const pvS3 = find(r.s3, "ploopvault", "ploop");
  if (pvS3 !== undefined) {
    const s3Versus = (t: TargetResult | undefined): Versus => versusMeasured(pvS3.first?.measured, t?.first?.measured);
    lines.push(
      row([
        "first full backup into the RGW (S3), s",
        f(pvS3.first?.measured.seconds),
        ...ratioCell(s3Versus(find(r.s3, "restic", "raw")), 0.6),
        ...ratioCell(s3Versus(find(r.s3, "restic", "image")), 0.6),
        "<= 0.6x restic (issue 15)",
      ]),
    );
  }
  if (pvS3?.first?.addedBytes != null && r.ceiling !== null) {
    const stored = pvS3.first.addedBytes / pvS3.first.measured.seconds / MB;
    const ceiling = r.ceiling.bytesPerSecond / MB;
    const ratio = stored / ceiling;
    lines.push(
      row([
        "S3 first backup: stored MB/s vs the RGW's PUT ceiling",
        f(stored),
        `ceiling ${f(ceiling)}`,
        `${ratio.toFixed(2)}x`,
        ratio >= 0.8 ? "yes" : "**no**",
        "",
        "",
        "",
        ">= 0.8x ceiling",
      ]),
    );
  }
  return lines;
}

/**
 * Issue 7: what encryption costs, encrypted / unencrypted ploopvault on the same disks.
 * Wall time includes the key derivation every command does once (scrypt, ~0.5 s by
 * design, like restic's); "pipeline" is the commands' own reported seconds, without it.
 */
function encryptionTable(r: BenchReport): string[] {
  const plain = find(r.local, "ploopvault", "ploop");
  const enc = find(r.local, "ploopvault", "ploop", true);
  if (plain === undefined || enc === undefined) return [];
  const lines = [
    row(["step", "unencrypted wall s", "encrypted wall s", "ratio", "unencrypted pipeline s", "encrypted pipeline s", "ratio", "within 10%"]),
    row(["---", "---:", "---:", "---:", "---:", "---:", "---:", "---"]),
  ];
  const ratio = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined || a === 0 ? "-" : `${(b / a).toFixed(2)}x`);
  const steps: [string, (t: TargetResult) => { measured: Measured; pipelineSeconds?: number } | undefined][] = [
    ["first backup of the 4 disks (1 command)", (t) => t.first],
    ["unchanged re-backup (1 command)", (t) => t.unchanged],
    [`restore of ${r.restoreCt} (1 command)`, (t) => t.restore],
  ];
  for (const [name, get] of steps) {
    const a = get(plain);
    const b = get(enc);
    const pa = a?.pipelineSeconds;
    const pb = b?.pipelineSeconds;
    const met = pa === undefined || pb === undefined ? "-" : pb / pa <= 1.1 ? "yes" : "**no**";
    lines.push(
      row([
        name,
        f(a?.measured.seconds, 2),
        f(b?.measured.seconds, 2),
        ratio(a?.measured.seconds, b?.measured.seconds),
        f(pa, 2),
        f(pb, 2),
        ratio(pa, pb),
        met,
      ]),
    );
  }
  return lines;
}

/**
 * Issue 15 item 4: restore against restic (raw disks) from each store, and the seeded
 * restore of the same disk with ~1 % of its clusters changed against its unseeded restore.
 */
function restoreTable(r: BenchReport): string[] {
  const lines = [
    row(["store", "measure", "ploopvault s", "compared with", "s", "ratio", "met", "target"]),
    row(["---", "---", "---:", "---", "---:", "---:", "---", "---"]),
  ];
  for (const [store, list] of [
    ["local", r.local],
    ["S3 (RGW)", r.s3],
  ] as const) {
    const pv = find(list, "ploopvault", "ploop");
    if (pv === undefined) continue;
    const rs = find(list, "restic", "raw");
    if (pv.restore !== undefined && rs?.restore !== undefined) {
      const [, ratio, met] = ratioCell(versusMeasured(pv.restore.measured, rs.restore.measured), 0.5);
      lines.push(
        row([
          store,
          `restore of ${r.restoreCt}`,
          f(pv.restore.measured.seconds, 2),
          "restic restore (raw disk)",
          f(rs.restore.measured.seconds, 2),
          ratio,
          met,
          "<= 0.5x restic",
        ]),
      );
    }
    const sr = pv.seeded;
    if (sr !== undefined) {
      const changed = `${sr.changedClusters} of ${sr.allocatedClusters} clusters changed`;
      const differ = sr.verified ? "" : "; **results differ**";
      // each seeded variant against the same restore unseeded
      const againstUnseeded = (measure: string, run: Measured): void => {
        const [, ratio, met] = ratioCell(versusMeasured(run, sr.unseeded.measured), 0.1);
        lines.push(
          row([
            store,
            measure,
            f(run.seconds, 2),
            `the same restore unseeded (${sr.fetchedUnseeded} chunks fetched)`,
            f(sr.unseeded.measured.seconds, 2),
            ratio,
            met,
            "<= 0.1x unseeded",
          ]),
        );
      };
      againstUnseeded(`restore --seed over yesterday's file (${changed}; ${sr.fetchedSeeded} of ${sr.chunks} chunks fetched${differ})`, sr.seeded.measured);
      if (sr.inPlace !== undefined) {
        const written = sr.writtenInPlace === undefined ? "?" : formatBytes(sr.writtenInPlace);
        againstUnseeded(
          `restore --in-place over yesterday's file (${changed}; ${sr.fetchedInPlace ?? "?"} of ${sr.chunks} chunks fetched, ${written} written${differ})`,
          sr.inPlace.measured,
        );
      }
    }
  }
  return lines.length > 2 ? lines : [];
}

/** Wall seconds, with the range over repetitions when there were several. */
function wall(step: { measured: Measured; range?: [number, number]; runs?: number }): string {
  const w = f(step.measured.seconds, 2);
  return step.range !== undefined && (step.runs ?? 1) > 1 ? `${w} (${f(step.range[0], 1)}-${f(step.range[1], 1)})` : w;
}

function runsTable(list: TargetResult[], disks: BenchDisk[], restoreCt: string, s3: boolean): string[] {
  const data = disks.reduce((s, d) => s + d.dataBytes, 0);
  const restoreData = disks.find((d) => d.ct === restoreCt)?.dataBytes ?? 0;
  const lines = [
    row([
      "tool, input",
      "scenario",
      "wall s",
      "data MB/s",
      "CPU s",
      "peak RSS MiB",
      "added MB",
      s3 ? "bucket MB (objects)" : "repo MB (on disk)",
      s3 ? "RGW CPU s" : "other CPU s",
    ]),
    row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
  ];
  for (const t of list) {
    const name = `${t.tool}, ${INPUT_NAMES[t.input]}${t.encrypted ? ", encrypted" : ""}`;
    if (t.failedRuns)
      lines.push(row([name, `${t.failedRuns} repetition(s) FAILED`, (t.failedError ?? "").split("\n")[0]!.replace(/\|/g, "/"), "", "", "", "", "", ""]));
    if (t.error !== undefined) {
      lines.push(row([name, "FAILED", t.error.split("\n")[0]!.replace(/\|/g, "/"), "", "", "", "", "", ""]));
      continue;
    }
    const last = (m: Measured): string => (s3 ? f(m.serverCpuSeconds) : f(m.otherCpuSeconds));
    const repo = (s: RepoSize | undefined): string =>
      s === undefined ? "-" : s.diskBytes === null ? `${f(s.bytes / MB)} (${s.objects})` : `${f(s.bytes / MB)} (${f(s.diskBytes / MB)})`;
    const backup = (scenario: string, step: BackupStep | undefined, size: RepoSize | undefined): void => {
      if (step === undefined) return;
      const m = step.measured;
      lines.push(
        row([
          name,
          scenario,
          wall(step),
          f(data / MB / m.seconds, 0),
          f(cpu(m)),
          f(m.peakRssMiB, 0),
          step.addedBytes === null ? "-" : f(step.addedBytes / MB),
          repo(size),
          last(m),
        ]),
      );
    };
    backup("first backup", t.first, t.repoAfterFirst);
    backup(t.input === "container" ? "unchanged (nothing written)" : "unchanged, files touched", t.unchanged, t.repoAfterUnchanged);
    backup("unchanged, not touched", t.untouched, undefined);
    if (t.restore) {
      const m = t.restore.measured;
      const verified = t.restoreVerified ? "" : " (**content differs**)";
      lines.push(
        row([
          name,
          `restore ${restoreCt}${verified}`,
          `${wall(t.restore)}, sync ${f(t.restore.syncSeconds, 2)}`,
          f(restoreData / MB / m.seconds, 0),
          f(cpu(m)),
          f(m.peakRssMiB, 0),
          "",
          "",
          last(m),
        ]),
      );
    }
  }
  return lines;
}

function largeName(name: string): string {
  return name === "1g" ? "1 GiB, full" : name === "8g" ? "8 GiB, 1/8 allocated" : name;
}

export function renderReport(r: BenchReport): string {
  const disks = r.corpus.disks;
  const data = disks.reduce((s, d) => s + d.dataBytes, 0);
  const virtual = disks.reduce((s, d) => s + d.virtualBytes, 0);
  const out: string[] = [];
  out.push("## Results");
  out.push("");
  out.push(`Command: \`${r.command}\``);
  out.push("");
  out.push(
    `Run ${r.date.slice(0, 16).replace("T", " ")} UTC, ${(r.seconds / 60).toFixed(1)} min; ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memGiB.toFixed(0)} GiB RAM, Linux ${r.machine.kernel}, Node ${r.machine.node}; load average ${r.loadBefore.toFixed(2)} before, ${r.loadAfter.toFixed(2)} after${r.nice === null ? "" : `; every tool (and the S3 server) ran at nice ${r.nice}`}.`,
  );
  out.push(`Tools: ${Object.values(r.versions).join("; ")}${r.s3Server ? `; S3 server: ${r.s3Server.replace(/ \([0-9a-f]{40}\)/, "")}` : ""}.`);
  out.push(
    `Corpus${r.corpus.scale ? ` (scale ${r.corpus.scale})` : ""}: ${disks.length} disks (${disks.map((d) => d.ct).join(", ")}), ${f(virtual / MB, 0)} MB virtual, ${f(data / MB, 0)} MB of data (allocated clusters). ` +
      `"data MB/s" divides these ${f(data / MB, 0)} MB (restore: the ${f((disks.find((d) => d.ct === r.restoreCt)?.dataBytes ?? 0) / MB, 0)} MB of disk ${r.restoreCt}) by the wall time, the same numerator for every tool.`,
  );
  if (r.repeat > 1)
    out.push(
      `Every tool ran ${r.repeat} times, interleaved; each step shows the median run (its CPU, RSS and sizes) and the range of wall times; the peak RSS target takes the highest of all runs.`,
    );
  for (const n of r.notes) out.push(`Note: ${n}.`);
  out.push("");
  out.push("### Targets of issues 4 and 15 (ratios = ploopvault / restic, same run; CPU = ratio of CPU seconds, user + system)");
  out.push("");
  out.push(...targetsTable(r));
  out.push("");
  const restores = restoreTable(r);
  if (restores.length > 0) {
    out.push("### Issue 15: restore at the store's speed (wall s incl. `sync FILE`; CPU = ratio of CPU seconds)");
    out.push("");
    out.push(...restores);
    out.push("");
  }
  const encryption = encryptionTable(r);
  if (encryption.length > 0) {
    out.push("### Issue 7: encrypted / unencrypted ploopvault (local repository, same run)");
    out.push("");
    out.push(...encryption);
    out.push("");
    out.push(
      `Wall time includes the key derivation each command does once (scrypt N=2^17, r=8: ~0.5 s and 128 MiB by design, as restic's); ` +
        `"pipeline" is the commands' own reported seconds after it (reading, chunking, ids, compression, encryption, storing).`,
    );
    out.push("");
  }
  out.push("### Local repositories");
  out.push("");
  out.push(...runsTable(r.local, disks, r.restoreCt, false));
  out.push("");
  out.push(
    `"other CPU s" is CPU time the rest of the machine used during the run (2 cores: a run with more than a few seconds there was disturbed). ` +
      `"added MB": what the tool reports storing (ploopvault: compressed new chunks; restic: data_added; borg: deduplicated size). ` +
      `Restore times include \`sync FILE\` (in brackets), so every tool ends with the file on disk; ploopvault fsyncs itself.`,
  );
  if (r.s3.length > 0) {
    out.push("");
    out.push("### S3 (Ceph RGW on 127.0.0.1, same machine)");
    out.push("");
    out.push(...runsTable(r.s3, disks, r.restoreCt, true));
    out.push("");
    const pv = find(r.s3, "ploopvault", "ploop");
    if (r.ceiling !== null) {
      const c = r.ceiling;
      out.push(
        `RGW PUT ceiling (plain AWS SDK loop, no ploopvault code): ${c.objects} objects of ${c.objectBytes} bytes (ploopvault's mean stored chunk) at concurrency ${c.concurrency} in ${f(c.seconds)} s = **${f(c.bytesPerSecond / MB)} MB/s**, ` +
          `using ${f(c.serverCpuSeconds)} s of RGW CPU (${f((c.serverCpuSeconds / ((c.objects * c.objectBytes) / MB)) * 100, 2)} s per 100 MB) and ${f(c.clientCpuSeconds)} s of client CPU.`,
      );
      if (pv?.first?.addedBytes != null) {
        const m = pv.first.measured;
        const stored = pv.first.addedBytes;
        const rate = stored / m.seconds;
        out.push(
          `ploopvault's first S3 backup stored ${f(stored / MB)} MB in ${f(m.seconds)} s = **${f(rate / MB)} MB/s** (${((rate / c.bytesPerSecond) * 100).toFixed(0)}% of the ceiling). ` +
            `It needed ${f(cpu(m))} s of client CPU while the RGW used ${f(m.serverCpuSeconds)} s: on ${r.machine.cores} cores shared by client and server, no client can store these bytes in less than ` +
            `${f((cpu(m) + m.serverCpuSeconds) / r.machine.cores)} s (${f(stored / MB / ((cpu(m) + m.serverCpuSeconds) / r.machine.cores))} MB/s) without using less CPU.`,
        );
      }
      out.push("");
    }
    const rs = find(r.s3, "restic", "raw");
    if (pv?.first && rs?.first) {
      out.push(
        `First S3 backup, ploopvault / restic (raw disks): ${(pv.first.measured.seconds / rs.first.measured.seconds).toFixed(2)}x; unchanged re-backup: ${pv.unchanged && rs.unchanged ? (pv.unchanged.measured.seconds / rs.unchanged.measured.seconds).toFixed(2) : "-"}x; restore: ${pv.restore && rs.restore ? (pv.restore.measured.seconds / rs.restore.measured.seconds).toFixed(2) : "-"}x.`,
      );
      out.push("");
    }
    out.push(`"RGW CPU s": CPU time of the Ceph daemons (radosgw, ceph-osd, ceph-mon) during the run, which share the 2 cores with the client.`);
  }
  if (r.large.length > 0) {
    out.push("");
    out.push("### Memory on large disks (ploopvault, local repository)");
    out.push("");
    out.push(row(["disk", "virtual MiB", "data MiB", "backup s", "data MB/s", "backup peak RSS MiB", "restore s", "restore peak RSS MiB"]));
    out.push(row(["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]));
    for (const l of r.large) {
      if (l.error !== undefined) {
        out.push(
          row([
            largeName(l.disk.name),
            f(l.disk.sizeBytes / 2 ** 20, 0),
            f(l.disk.dataBytes / 2 ** 20, 0),
            "FAILED",
            l.error.split("\n")[0]!.replace(/\|/g, "/"),
            "",
            "",
            "",
          ]),
        );
        continue;
      }
      const b = l.backup?.measured;
      const s = l.restore?.measured;
      out.push(
        row([
          largeName(l.disk.name),
          f(l.disk.sizeBytes / 2 ** 20, 0),
          f(l.disk.dataBytes / 2 ** 20, 0),
          b ? f(b.seconds, 2) : "-",
          b ? f(l.disk.dataBytes / MB / b.seconds, 0) : "-",
          b ? f(b.peakRssMiB, 0) : "-",
          s ? f(s.seconds, 2) : "-",
          s ? f(s.peakRssMiB, 0) : "-",
        ]),
      );
    }
    out.push("");
    out.push("Half of the clusters random, half text-like: nearly every chunk is new, compressed and stored (the worst case for memory).");
  }
  return out.join("\n");
}
