/**
 * Issue 4's benchmark: ploopvault against restic and borg on the bench corpus (four
 * ext4 container disks, scripts/corpus.ts), into fresh local repositories and, with
 * --s3, into a throwaway Ceph RGW; plus a memory check on a 1 GiB and an 8 GiB disk and
 * the RGW's own PUT ceiling. Prints a Markdown report and writes it into --out (between
 * the "bench:begin/end" markers if the file has them, so hand-written analysis stays).
 *
 *   npm run bench -- [--corpus DIR] [--scale small|bench] [--s3|--no-s3]
 *                    [--tools ploopvault,restic,borg] [--inputs raw,image]
 *                    [--out FILE.md] [--work DIR] [--no-large-disks] [--keep]
 *
 * Scenarios (every tool, fresh repository and cache each):
 *   first      first backup of the 4 disks
 *   unchanged  the same 4 disks again, input files touched first (new mtime/ctime, same
 *              content: what a running container's image looks like the next day)
 *   untouched  (restic, borg) a third run without touching: their metadata shortcut
 *   restore    one disk (101) back to a file, then `sync FILE`, verified by SHA-256
 * restic and borg read the disk either as ploop's flattening to a raw file ("raw") or
 * as the ploop image files themselves ("image"); ploopvault reads the ploop disk.
 */
import { readFile, readdir, rm, mkdir, writeFile } from "node:fs/promises";
import { cpus, setPriority, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { buildCorpus, type CorpusScale } from "../scripts/corpus.js";
import { openLogicalDisk } from "../src/ploop/disk.js";
import { sha256File, touch, warmCache } from "./lib/files.js";
import { flattenDisk } from "./lib/flatten.js";
import { ensureLargeDisk, LARGE_DISKS } from "./lib/large-disks.js";
import { loadAverage, requireGnuTime } from "./lib/measure.js";
import { peakRssOfRun, renderReport, type BenchReport, type LargeDiskResult, type TargetResult } from "./lib/report.js";
import { measurePutCeiling, rgwUnavailable, startRgw, type PutCeiling, type RgwServer } from "./lib/s3.js";
import { INSTALL_HINT, makeTarget, TOOL_NAMES, toolVersion, type BenchDisk, type InputKind, type Target, type ToolEnv, type ToolName } from "./lib/tools.js";
import { PLOOPVAULT_CLI } from "./lib/ploopvault-command.js";

const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const RESTORE_CT = "101";
const CEILING_SECONDS = 15;
const PV_UPLOAD_CONCURRENCY = 8;

const USAGE = `usage: npm run bench -- [options]   (or: node dist/bench/run.js [options])
  --corpus DIR          use this corpus (scripts/corpus.ts layout) instead of building one
  --scale small|bench   corpus to build when --corpus is not given (default bench)
  --s3 | --no-s3        also run ploopvault and restic against a throwaway Ceph RGW
                        (default: on when running as root with the ceph packages installed)
  --tools LIST          ploopvault,restic,borg (default all; missing tools are skipped)
  --inputs LIST         what restic/borg read: raw,image (default both)
  --out FILE.md         write the report there (default docs/performance.md; '-' = stdout only)
  --work DIR            scratch space (default .tmp/bench)
  --no-large-disks      skip the 1 GiB / 8 GiB memory check
  --no-container-mode   skip ploopvault's container mode (ploop snapshot + kept delta,
                        incremental re-backup; needs root and the ploop package)
  --no-encrypted        skip the extra run of ploopvault with an encrypted repository
  --keep                keep repositories and restored files
  --repeat N            run every tool N times, interleaved, and report the median of
                        each step (with the range); for a machine shared with other jobs
  --nice N              run the bench, every tool and the S3 server at this CPU priority
                        (e.g. -20 as root on a shared machine; inherited by all children)`;

interface Options {
  corpus?: string;
  scale: CorpusScale;
  s3: boolean | "auto";
  tools: ToolName[];
  inputs: ("raw" | "image")[];
  out: string;
  work: string;
  largeDisks: boolean;
  containerMode: boolean;
  /** Also run ploopvault --encrypt (local). */
  encrypted: boolean;
  keep: boolean;
  /** Scheduling priority (nice value) for the bench and everything it starts, e.g. -20. */
  nice: number | null;
  /** Runs of every tool (interleaved); the median of each step is reported. */
  repeat: number;
}

function parseList<T extends string>(value: string | undefined, allowed: readonly T[], name: string): T[] {
  const items = (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const i of items) if (!allowed.includes(i as T)) throw new Error(`${name}: unknown "${i}" (allowed: ${allowed.join(", ")})`);
  if (items.length === 0) throw new Error(`${name}: empty list`);
  return items as T[];
}

function parseOptions(argv: string[]): Options | null {
  const o: Options = {
    scale: "bench",
    s3: "auto",
    tools: [...TOOL_NAMES],
    inputs: ["raw", "image"],
    out: join(PROJECT_ROOT, "docs/performance.md"),
    work: join(PROJECT_ROOT, ".tmp/bench"),
    largeDisks: true,
    containerMode: true,
    encrypted: true,
    keep: false,
    nice: null,
    repeat: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--corpus") o.corpus = resolve(value());
    else if (a === "--scale") {
      const v = value();
      if (v !== "small" && v !== "bench") throw new Error(`--scale: "${v}" is not small or bench`);
      o.scale = v;
    } else if (a === "--s3") o.s3 = true;
    else if (a === "--no-s3") o.s3 = false;
    else if (a === "--tools") o.tools = parseList(value(), TOOL_NAMES, "--tools");
    else if (a === "--inputs") o.inputs = parseList(value(), ["raw", "image"] as const, "--inputs");
    else if (a === "--out") o.out = value() === "-" ? "-" : resolve(argv[i]!);
    else if (a === "--work") o.work = resolve(value());
    else if (a === "--no-large-disks") o.largeDisks = false;
    else if (a === "--no-container-mode") o.containerMode = false;
    else if (a === "--no-encrypted") o.encrypted = false;
    else if (a === "--keep") o.keep = true;
    else if (a === "--repeat") {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1 || n > 9) throw new Error(`--repeat: "${argv[i]}" is not 1..9`);
      o.repeat = n;
    } else if (a === "--nice") {
      const n = Number(value());
      if (!Number.isInteger(n) || n < -20 || n > 19) throw new Error(`--nice: "${argv[i]}" is not -20..19`);
      o.nice = n;
    } else if (a === "-h" || a === "--help") {
      process.stdout.write(`${USAGE}\n`);
      return null;
    } else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  return o;
}

const t0 = performance.now();
function log(line: string): void {
  process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
}

/** The corpus' disks with their logical hashes and data sizes. */
async function loadCorpus(dir: string): Promise<BenchDisk[]> {
  const sums = new Map<string, string>();
  try {
    for (const line of (await readFile(join(dir, "SHA256SUMS"), "utf8")).split("\n")) {
      const [ct, sha] = line.trim().split(/\s+/);
      if (ct && sha) sums.set(ct, sha);
    }
  } catch {
    throw new Error(`${dir}/SHA256SUMS missing: not a corpus built by scripts/corpus.ts`);
  }
  const cts = (await readdir(dir, { withFileTypes: true }))
    .filter((d) => d.isDirectory() && sums.has(d.name))
    .map((d) => d.name)
    .sort();
  const disks: BenchDisk[] = [];
  for (const ct of cts) {
    const descriptorPath = join(dir, ct, "root.hdd", "DiskDescriptor.xml");
    const disk = await openLogicalDisk(descriptorPath);
    try {
      if (disk.imagePaths.length !== 1) throw new Error(`${descriptorPath}: the bench expects single-image disks`);
      const dataBytes = disk.allocatedRuns().reduce((s, r) => s + r.length, 0);
      disks.push({ ct, descriptorPath, imagePath: disk.imagePaths[0]!, sha256: sums.get(ct)!, dataBytes, virtualBytes: disk.sizeBytes });
    } finally {
      await disk.close();
    }
  }
  if (disks.length === 0) throw new Error(`${dir}: no disks`);
  return disks;
}

interface Plan {
  tool: ToolName;
  input: InputKind;
  store: "local" | "s3";
  encrypted?: boolean;
}

function plans(o: Options, s3: boolean): Plan[] {
  const list: Plan[] = [];
  const stores: ("local" | "s3")[] = s3 ? ["local", "s3"] : ["local"];
  for (const store of stores) {
    // The comparison first (close together in time), ploopvault's variants after it.
    for (const tool of o.tools) {
      if (tool === "ploopvault") list.push({ tool, input: "ploop", store });
      else if (tool === "restic" || store === "local") for (const input of o.inputs) list.push({ tool, input, store });
    }
    if (store === "local" && o.tools.includes("ploopvault")) {
      if (o.encrypted) list.push({ tool: "ploopvault", input: "ploop", store, encrypted: true });
      if (o.containerMode) list.push({ tool: "ploopvault", input: "container", store });
    }
  }
  return list;
}

/**
 * The median run of each step over repetitions (odd counts: the middle one; even: the
 * lower middle), with the range of wall times; a step's own numbers stay together.
 */
function medianResult(runs: TargetResult[]): TargetResult {
  const ok = runs.filter((r) => r.error === undefined);
  if (ok.length === 0) return runs[0]!;
  if (ok.length === 1 && runs.length === 1) return ok[0]!;
  const pick = <T extends { measured: { seconds: number } }>(steps: (T | undefined)[]): T | undefined => {
    const list = steps.filter((s): s is T => s !== undefined).sort((a, b) => a.measured.seconds - b.measured.seconds);
    if (list.length === 0) return undefined;
    const m = list[Math.floor((list.length - 1) / 2)]!;
    return { ...m, range: [list[0]!.measured.seconds, list[list.length - 1]!.measured.seconds], runs: list.length };
  };
  const base = ok[0]!;
  const result: TargetResult = { ...base };
  result.first = pick(ok.map((r) => r.first));
  result.unchanged = pick(ok.map((r) => r.unchanged));
  result.untouched = pick(ok.map((r) => r.untouched));
  result.restore = pick(ok.map((r) => r.restore));
  const seededRuns = ok
    .map((r) => r.seeded)
    .filter((x): x is NonNullable<typeof x> => x !== undefined)
    .sort((a, b) => a.seeded.measured.seconds - b.seeded.measured.seconds);
  if (seededRuns.length > 0) result.seeded = seededRuns[Math.floor((seededRuns.length - 1) / 2)];
  result.restoreVerified = ok.every((r) => r.restoreVerified === true);
  const peaks = ok.map(peakRssOfRun).filter((p) => p !== undefined);
  if (peaks.length > 0) result.peakRssMiBAllRuns = Math.max(...peaks);
  if (runs.length > ok.length) {
    result.failedRuns = runs.length - ok.length;
    result.failedError = runs.find((r) => r.error !== undefined)!.error!;
  }
  return result;
}

/** One repository through first / unchanged / (untouched) / restore. */
async function runTarget(
  target: Target,
  disks: BenchDisk[],
  restoreDisk: BenchDisk,
  work: string,
  imageSha: (d: BenchDisk) => Promise<string>,
  keep: boolean,
): Promise<TargetResult> {
  const result: TargetResult = { tool: target.tool, input: target.input, store: target.store, label: target.label, encrypted: target.encrypted === true };
  try {
    await target.init();
    await target.prepare?.(disks);
    const inputs = target.inputs(disks);
    await warmCache(inputs);
    log(`${target.label}: first backup`);
    result.first = await target.backup(disks);
    result.repoAfterFirst = await target.repoSize();
    log(`${target.label}: first backup ${result.first.measured.seconds.toFixed(1)} s, repo ${(result.repoAfterFirst.bytes / 1e6).toFixed(0)} MB`);
    await touch(target.touched(disks));
    result.unchanged = await target.backup(disks);
    result.repoAfterUnchanged = await target.repoSize();
    log(`${target.label}: unchanged re-backup ${result.unchanged.measured.seconds.toFixed(1)} s`);
    if (result.unchanged.modes) log(`${target.label}: modes ${result.unchanged.modes.join(", ")}`);
    if (target.tool !== "ploopvault" && target.store === "local") {
      result.untouched = await target.backup(disks);
      log(`${target.label}: untouched re-backup ${result.untouched.measured.seconds.toFixed(1)} s`);
    }
    const out = join(work, `restore-${target.tool}-${target.input}-${target.store}`);
    await rm(out, { recursive: true, force: true });
    result.restore = await target.restore(restoreDisk, out);
    const expected = target.input === "image" ? await imageSha(restoreDisk) : restoreDisk.sha256;
    const got = await sha256File(result.restore.file);
    result.restoreVerified = got === expected;
    if (!result.restoreVerified) log(`${target.label}: RESTORED FILE DIFFERS (sha256 ${got}, expected ${expected})`);
    log(`${target.label}: restore ${result.restore.measured.seconds.toFixed(1)} s${result.restoreVerified ? ", verified" : ""}`);
    if (target.seededRestore !== undefined && result.restoreVerified) {
      result.seeded = await target.seededRestore(restoreDisk, out, result.restore.file);
      const sr = result.seeded;
      const inPlace = sr.inPlace === undefined ? "" : `, --in-place ${sr.inPlace.measured.seconds.toFixed(1)} s (${sr.fetchedInPlace} fetched)`;
      log(
        `${target.label}: ${sr.changedClusters} of ${sr.allocatedClusters} clusters changed; restore ${sr.unseeded.measured.seconds.toFixed(1)} s (${sr.fetchedUnseeded} chunks fetched), over yesterday's file with --seed ${sr.seeded.measured.seconds.toFixed(1)} s (${sr.fetchedSeeded} of ${sr.chunks} fetched)${inPlace}${sr.verified ? ", verified" : ", RESULTS DIFFER"}`,
      );
    }
    if (!keep) await rm(out, { recursive: true, force: true });
  } catch (error) {
    result.error = error instanceof Error ? error.message : String(error);
    log(`${target.label}: FAILED: ${result.error}`);
  } finally {
    if (!keep) await target.cleanup();
  }
  return result;
}

async function machineInfo(): Promise<BenchReport["machine"]> {
  const kernel = (await readFile("/proc/sys/kernel/osrelease", "utf8").catch(() => "?")).trim();
  return { cpu: cpus()[0]?.model ?? "?", cores: cpus().length, memGiB: totalmem() / 2 ** 30, kernel, node: process.version };
}

function commandLine(argv: string[]): string {
  const quoted = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(" ");
  if (process.env.npm_lifecycle_event === "bench") return `npm run bench${quoted ? ` -- ${quoted}` : ""}`;
  return `node dist/bench/run.js${quoted ? ` ${quoted}` : ""}`;
}

const BEGIN = "<!-- bench:begin (generated by bench/run.ts; edits inside are overwritten) -->";
const END = "<!-- bench:end -->";

async function writeOut(path: string, section: string): Promise<void> {
  let existing: string | null = null;
  try {
    existing = await readFile(path, "utf8");
  } catch {
    existing = null;
  }
  const block = `${BEGIN}\n${section.trim()}\n${END}`;
  let text: string;
  const b = existing?.indexOf("<!-- bench:begin") ?? -1;
  const e = existing?.indexOf(END) ?? -1;
  if (existing !== null && b >= 0 && e > b) text = `${existing.slice(0, b)}${block}${existing.slice(e + END.length)}`;
  else if (existing !== null) text = `${existing.trimEnd()}\n\n${block}\n`;
  else text = `# Performance\n\n${block}\n`;
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}

async function main(argv: string[]): Promise<number> {
  // The SDK's "node >= 22 soon" notice on stderr (bench/lib/s3.ts) is noise here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  const o = parseOptions(argv);
  if (o === null) return 0;
  await requireGnuTime();
  if (o.nice !== null) {
    setPriority(0, o.nice);
    log(`CPU priority set to nice ${o.nice} for the bench and everything it starts`);
  }
  const ploopBin = join(PROJECT_ROOT, "scripts/ploop-offline");
  const env: ToolEnv = { work: o.work, ploopBin, ploopvault: [PLOOPVAULT_CLI], s3: null };
  await mkdir(o.work, { recursive: true });
  const notes: string[] = [];

  const versions: Partial<Record<ToolName, string>> = {};
  const tools: ToolName[] = [];
  for (const tool of o.tools) {
    const v = await toolVersion(tool, env);
    if (v === null) {
      const msg = `${tool} not found: skipped (install: ${INSTALL_HINT[tool]})`;
      log(msg);
      notes.push(msg);
      continue;
    }
    versions[tool] = v;
    tools.push(tool);
  }
  o.tools = tools;
  if (tools.length === 0) throw new Error("no tool to run");

  if (o.containerMode && tools.includes("ploopvault")) {
    const r = await execa(ploopBin, ["--help"], { reject: false, all: true });
    if (process.getuid?.() !== 0 || r.exitCode === 127) {
      o.containerMode = false;
      notes.push("ploopvault's container mode skipped: it drives ploop (apt-get install ploop) through scripts/ploop-offline as root");
    }
  }

  let s3 = false;
  if (o.s3 !== false) {
    const why = await rgwUnavailable();
    if (why === null) s3 = true;
    else if (o.s3 === true) throw new Error(`--s3: ${why}`);
    else notes.push(`S3 part skipped: ${why}`);
  }
  if (s3 && !tools.includes("ploopvault")) s3 = false;

  // Corpus
  let corpusDir = o.corpus;
  if (corpusDir === undefined) {
    corpusDir = join(o.work, `corpus-${o.scale}`);
    log(`building the ${o.scale} corpus in ${corpusDir}`);
    await rm(corpusDir, { recursive: true, force: true });
    await buildCorpus(corpusDir, { scale: o.scale, log: (l) => log(`corpus: ${l}`) });
  }
  const disks = await loadCorpus(corpusDir);
  const restoreDisk = disks.find((d) => d.ct === RESTORE_CT) ?? disks[0]!;
  const rawDir = join(o.work, "raw");
  const generic = tools.some((t) => t !== "ploopvault");
  if (generic && o.inputs.includes("raw")) {
    for (const d of disks) d.rawPath = await flattenDisk(d, rawDir, ploopBin, log);
  }
  const imageShas = new Map<string, string>();
  const imageSha = async (d: BenchDisk): Promise<string> => {
    if (!imageShas.has(d.ct)) imageShas.set(d.ct, await sha256File(d.imagePath));
    return imageShas.get(d.ct)!;
  };
  if (generic && o.inputs.includes("image")) await imageSha(restoreDisk);

  const report: BenchReport = {
    date: new Date().toISOString(),
    command: commandLine(argv),
    nice: o.nice,
    machine: await machineInfo(),
    versions,
    notes,
    corpus: { dir: corpusDir, scale: o.corpus === undefined ? o.scale : null, disks },
    restoreCt: restoreDisk.ct,
    local: [],
    s3: [],
    large: [],
    ceiling: null,
    repeat: o.repeat,
    loadBefore: await loadAverage(),
    loadAfter: 0,
    seconds: 0,
  };

  const all = plans({ ...o, tools }, s3);
  const dirs = { corpus: corpusDir, raw: rawDir };
  // Repetitions are interleaved (every tool once, then every tool again): other jobs on
  // the machine then disturb all tools alike, and the median of each step is reported.
  const local = all.filter((x) => x.store === "local");
  const localRuns: TargetResult[][] = local.map(() => []);
  for (let rep = 1; rep <= o.repeat; rep++) {
    if (o.repeat > 1) log(`local repetition ${rep} of ${o.repeat}`);
    for (const [i, p] of local.entries())
      localRuns[i]!.push(await runTarget(makeTarget(p.tool, p.input, p.store, env, dirs, p.encrypted), disks, restoreDisk, o.work, imageSha, o.keep));
  }
  report.local = localRuns.map(medianResult);

  if (o.largeDisks && tools.includes("ploopvault")) {
    for (const spec of LARGE_DISKS) {
      const disk = await ensureLargeDisk(spec, join(o.work, "large-disks"), log);
      const target = makeTarget("ploopvault", "ploop", "local", env, { corpus: corpusDir, raw: rawDir });
      const r: LargeDiskResult = { disk };
      try {
        await target.init();
        const bd: BenchDisk = {
          ct: spec.name,
          descriptorPath: disk.descriptorPath,
          imagePath: join(dirname(disk.descriptorPath), "root.hds"),
          sha256: "",
          dataBytes: disk.dataBytes,
          virtualBytes: disk.sizeBytes,
        };
        await warmCache([bd.imagePath]);
        r.backup = await target.backup([bd]);
        const out = join(o.work, `restore-large-${spec.name}`);
        await rm(out, { recursive: true, force: true });
        r.restore = await target.restore(bd, out);
        await rm(out, { recursive: true, force: true });
        log(
          `large disk ${spec.name}: backup ${r.backup.measured.seconds.toFixed(1)} s, ${r.backup.measured.peakRssMiB.toFixed(0)} MiB peak; restore ${r.restore.measured.seconds.toFixed(1)} s, ${r.restore.measured.peakRssMiB.toFixed(0)} MiB peak`,
        );
      } catch (error) {
        r.error = error instanceof Error ? error.message : String(error);
        log(`large disk ${spec.name}: FAILED: ${r.error}`);
      } finally {
        await target.cleanup();
      }
      report.large.push(r);
    }
  }

  let rgw: RgwServer | null = null;
  try {
    if (s3) {
      rgw = await startRgw(join(PROJECT_ROOT, "scripts/rgw.sh"), join(o.work, `rgw-${process.pid}`), log);
      env.s3 = rgw;
      report.s3Server = (await toolVersionOf("radosgw", ["--version"])) ?? "radosgw";
      const remote = all.filter((x) => x.store === "s3");
      const remoteRuns: TargetResult[][] = remote.map(() => []);
      const ceilings: PutCeiling[] = [];
      for (let rep = 1; rep <= o.repeat; rep++) {
        if (o.repeat > 1) log(`S3 repetition ${rep} of ${o.repeat}`);
        for (const [i, p] of remote.entries()) {
          const r = await runTarget(makeTarget(p.tool, p.input, p.store, env, dirs, p.encrypted), disks, restoreDisk, o.work, imageSha, o.keep);
          remoteRuns[i]!.push(r);
          if (p.tool === "ploopvault" && r.first?.newChunks && r.first.addedBytes) {
            const objectBytes = Math.round(r.first.addedBytes / r.first.newChunks);
            log(`RGW PUT ceiling: ${objectBytes} B objects at concurrency ${PV_UPLOAD_CONCURRENCY} for ${CEILING_SECONDS} s`);
            const c = await measurePutCeiling(rgw, objectBytes, PV_UPLOAD_CONCURRENCY, CEILING_SECONDS);
            log(`RGW PUT ceiling: ${(c.bytesPerSecond / 1e6).toFixed(1)} MB/s (${c.objects} objects)`);
            ceilings.push(c);
          }
        }
      }
      report.s3 = remoteRuns.map(medianResult);
      ceilings.sort((a, b) => a.bytesPerSecond - b.bytesPerSecond);
      report.ceiling = ceilings[Math.floor((ceilings.length - 1) / 2)] ?? null;
    }
  } finally {
    if (rgw !== null) await rgw.stop();
  }

  report.loadAfter = await loadAverage();
  report.seconds = (performance.now() - t0) / 1000;
  const md = renderReport(report);
  process.stdout.write(`${md}\n`);
  if (o.out !== "-") {
    await writeOut(o.out, md);
    log(`report written to ${o.out}`);
  }
  const failed =
    [...report.local, ...report.s3].filter((r) => r.error !== undefined || r.restoreVerified === false || r.seeded?.verified === false).length +
    report.large.filter((r) => r.error !== undefined).length;
  return failed > 0 ? 1 : 0;
}

async function toolVersionOf(cmd: string, args: string[]): Promise<string | null> {
  const r = await execa(cmd, args, { reject: false });
  return r.exitCode === 0 ? String(r.stdout).trim().split("\n")[0]! : null;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
