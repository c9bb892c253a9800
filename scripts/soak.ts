/**
 * Soak test (not part of the suite): loops backup / restore / check / prune through the
 * fault-injecting proxy (test/helpers/fault-proxy.ts) for a given time, and verifies that
 * nothing is ever lost or wrong:
 *
 *   - a backup either succeeds (its manifest is listed) or fails cleanly: exit 1, one line
 *     on stderr, and no manifest;
 *   - every restore that succeeds is bit-identical to the source disk as it was when that
 *     backup was taken (sha256 of the logical disk, raw format; ploop format is read back
 *     with the project's reader); a failing one exits 1 with one line and leaves no target;
 *   - `check --read-data` passes, or fails cleanly; a damage report is re-checked without
 *     the proxy (damage in transit is not damage);
 *   - `prune --keep-last` (when the command exists) may forget backups; every backup whose
 *     manifest is still listed must stay restorable.
 * At the end, with the proxy out of the way, every remaining backup is restored and
 * verified, and `check --read-data` must pass.
 *
 *   npm run build && node dist/scripts/soak.js --minutes 10 [--seed N] [--faults moderate|heavy]
 *        [--attempts N] [--endpoint URL --access-key K --secret-key S] [--work DIR] [--keep]
 *
 * --attempts N lowers the S3 attempts per request (AWS_MAX_ATTEMPTS) of the operations
 * under test, so that faults also make whole operations fail (and their cleanliness and
 * what prune does afterwards get tested).
 *
 * Without --endpoint (or PLOOPVAULT_TEST_S3_ENDPOINT & co) it starts its own Ceph RGW with
 * scripts/rgw.sh (needs root) and purges it afterwards. The source disks are the small
 * corpus (scripts/corpus.ts) plus a copy of 101 that is changed before each of its
 * backups (clusters rewritten and newly allocated), so backups keep adding new chunks and
 * prune has something to delete.
 *
 * Prints a line per operation, then: operations (ok / clean failures by kind), faults
 * injected by kind, unclean failures and corruptions. Exit 0 only if both are 0.
 */
import { createHash, randomBytes } from "node:crypto";
import { cp, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { execa } from "execa";
import * as Minio from "minio";
import { openLogicalDisk } from "../src/ploop/disk.js";
import { writeClusterToTop } from "../test/helpers/delta-writer.js";
import { FAULT_KINDS, MODERATE_FAULTS, startFaultProxy, type FaultKind, type FaultRates } from "../test/helpers/fault-proxy.js";
import { buildCorpus } from "./corpus.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    seed: { type: "string" },
    faults: { type: "string", default: "moderate" },
    endpoint: { type: "string" },
    "access-key": { type: "string" },
    "secret-key": { type: "string" },
    work: { type: "string" },
    keep: { type: "boolean", default: false },
    attempts: { type: "string" },
  },
});

const projectRoot = resolve(import.meta.dirname, "../..");
/**
 * The CLI runs from a private copy of dist/ (inside the project, so node_modules resolve):
 * a rebuild by someone else during the soak must not change the code under test.
 */
const snapshotDir = join(projectRoot, ".tmp", `soak-dist-${process.pid}`);
const CLI = join(snapshotDir, "dist", "src", "cli.js");
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error(`--minutes must be a positive number, got ${values.minutes}`);
const seed = values.seed === undefined ? randomBytes(4).readUInt32LE(0) : Number(values.seed);
const rates: Partial<FaultRates> =
  values.faults === "heavy"
    ? { error500: 0.06, slowDown503: 0.04, resetRequest: 0.04, resetResponse: 0.04, truncate: 0.04, stall: 0.01, delay: 0.04, corrupt: 0.005 }
    : { ...MODERATE_FAULTS, corrupt: 0.002 };

/** A tiny seeded PRNG for the choice of operations (the proxy has its own). */
let state = seed >>> 0 || 1;
function random(): number {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 4294967296;
}
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

interface CliOutcome {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
}

interface BackupRecord {
  ct: string;
  id: string;
  sha256: string;
}

type Op = "init" | "backup" | "restore-raw" | "restore-ploop" | "check" | "prune";
const stats = new Map<Op, { ok: number; clean: number; unclean: number; seconds: number }>();
const cleanReasons = new Map<string, number>();
const problems: string[] = [];
let corruptions = 0;
let transitDamage = 0;

function tally(op: Op, outcome: "ok" | "clean" | "unclean", seconds: number): void {
  const s = stats.get(op) ?? { ok: 0, clean: 0, unclean: 0, seconds: 0 };
  s[outcome]++;
  s.seconds += seconds;
  stats.set(op, s);
}

function log(line: string): void {
  process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

/** Exit 1 with exactly one "ploopvault: ..." line and no stack trace. */
function isCleanFailure(r: CliOutcome): boolean {
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  return !r.timedOut && r.code === 1 && lines.length === 1 && lines[0]!.startsWith("ploopvault: ") && !/\n\s+at /.test(r.stderr);
}

/** A short label for why a clean failure happened (for the summary). */
function reason(r: CliOutcome): string {
  const line = r.stderr.split("\n").find((l) => l.startsWith("ploopvault: ")) ?? "";
  if (/body cut short|body read failed/.test(line)) return "body cut short after all attempts";
  if (/unreachable/.test(line)) return "endpoint unreachable after all attempts";
  if (/InternalError|SlowDown|HTTP 5\d\d/.test(line)) return "5xx after all attempts";
  if (/read twice|does not match its id|cannot be decompressed/.test(line)) return "chunk damaged in transit twice";
  if (/lock|registration|lease/i.test(line)) return "lock/registration";
  return line.slice(12, 90);
}

async function sha256OfDisk(descriptor: string): Promise<string> {
  const disk = await openLogicalDisk(descriptor);
  try {
    const h = createHash("sha256");
    const block = Buffer.alloc(8 << 20);
    for (let at = 0; at < disk.sizeBytes; at += block.length) {
      const view = block.subarray(0, Math.min(block.length, disk.sizeBytes - at));
      await disk.read(at, view);
      h.update(view);
    }
    return h.digest("hex");
  } finally {
    await disk.close();
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const { createReadStream } = await import("node:fs");
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function main(): Promise<void> {
  const work = values.work ?? (await mkdtemp(join(tmpdir(), "pv-soak-")));
  await mkdir(work, { recursive: true });
  let endpoint = values.endpoint ?? process.env.PLOOPVAULT_TEST_S3_ENDPOINT;
  let accessKey = values["access-key"] ?? process.env.PLOOPVAULT_TEST_S3_ACCESS_KEY ?? "";
  let secretKey = values["secret-key"] ?? process.env.PLOOPVAULT_TEST_S3_SECRET_KEY ?? "";
  let rgwDir: string | undefined;
  const started = Date.now();
  await mkdir(snapshotDir, { recursive: true });
  await cp(join(projectRoot, "dist"), join(snapshotDir, "dist"), { recursive: true });
  try {
    if (!endpoint) {
      rgwDir = join(projectRoot, ".tmp", `rgw-soak-${process.pid}`);
      const r = await execa("bash", [join(projectRoot, "scripts/rgw.sh"), "start", rgwDir, String(20000 + Math.floor(random() * 9000))], {
        env: { RGW_WATCH_PID: String(process.pid) },
        stderr: "inherit",
      });
      const kv = new Map(r.stdout.split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const));
      endpoint = kv.get("endpoint")!;
      accessKey = kv.get("access")!;
      secretKey = kv.get("secret")!;
      log(`started Ceph RGW at ${endpoint} (${rgwDir})`);
    }
    const url = new URL(endpoint);
    const minio = new Minio.Client({
      endPoint: url.hostname,
      port: Number(url.port || 80),
      useSSL: url.protocol === "https:",
      accessKey,
      secretKey,
      region: "us-east-1",
      pathStyle: true,
    });
    const bucket = `pv-soak-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
    await minio.makeBucket(bucket, "us-east-1");

    log("building the source disks (small corpus)");
    const corpusDir = join(work, "private");
    const cts = (await buildCorpus(corpusDir, { scale: "small" })).map((c) => c.ctid).sort();
    await cp(join(corpusDir, "101"), join(corpusDir, "201"), { recursive: true });
    const sources = [...cts, "201"];
    const descriptorOf = (ct: string): string => join(corpusDir, ct, "root.hdd", "DiskDescriptor.xml");

    const proxy = await startFaultProxy({ target: endpoint, seed, rates, stallMs: 30_000 });
    log(`fault proxy ${proxy.url} -> ${endpoint}, seed ${seed}, rates ${JSON.stringify(rates)}`);
    const repoUrl = `s3://${bucket}/repo`;
    const stateDir = join(work, "state");
    const baseEnv = {
      AWS_ACCESS_KEY_ID: accessKey,
      AWS_SECRET_ACCESS_KEY: secretKey,
      AWS_REGION: "us-east-1",
      PLOOPVAULT_S3_IDLE_TIMEOUT_MS: "2000",
      PLOOPVAULT_S3_RETRY_BUDGET_MS: "120000",
    };
    // --attempts N: fewer attempts per request than the default, so that faults also make operations fail (cleanly)
    const viaProxy = { ...baseEnv, AWS_ENDPOINT_URL: proxy.url, ...(values.attempts === undefined ? {} : { AWS_MAX_ATTEMPTS: values.attempts }) };
    const direct = { ...baseEnv, AWS_ENDPOINT_URL: endpoint };

    const cli = async (args: string[], env: Record<string, string>): Promise<CliOutcome> => {
      const t = performance.now();
      const r = await execa(process.execPath, [CLI, args[0]!, "--repo", repoUrl, "--state-dir", stateDir, ...args.slice(1)], {
        env,
        reject: false,
        timeout: 15 * 60_000,
        stripFinalNewline: false,
      });
      return {
        code: r.exitCode ?? -1,
        stdout: String(r.stdout),
        stderr: String(r.stderr),
        seconds: (performance.now() - t) / 1000,
        timedOut: r.timedOut === true,
      };
    };
    const manifests = async (): Promise<Set<string>> => {
      const keys = new Set<string>();
      for await (const item of minio.listObjectsV2(bucket, "repo/backups/", true) as AsyncIterable<Minio.BucketItem>) {
        if (item.name?.endsWith("/manifest")) keys.add(item.name.slice("repo/".length));
      }
      return keys;
    };
    const keyOf = (r: { ct: string; id: string }): string => `backups/${r.ct}/${r.id}/manifest`;
    const failure = (op: Op, r: CliOutcome, what: string): void => {
      if (isCleanFailure(r)) {
        tally(op, "clean", r.seconds);
        const why = reason(r);
        cleanReasons.set(`${op}: ${why}`, (cleanReasons.get(`${op}: ${why}`) ?? 0) + 1);
        log(`${what}: failed cleanly (${r.stderr.trim().slice(12, 200)})`);
      } else {
        tally(op, "unclean", r.seconds);
        problems.push(`${what}: UNCLEAN failure (exit ${r.code}${r.timedOut ? ", timed out" : ""}): ${r.stderr.trim().slice(0, 500)}`);
        log(problems[problems.length - 1]!);
      }
    };

    // init through the proxy: retried until it succeeds (a clean failure leaves no config)
    for (;;) {
      const r = await cli(["init", "--chunk-avg", "256K"], viaProxy);
      if (r.code === 0) {
        tally("init", "ok", r.seconds);
        break;
      }
      failure("init", r, "init");
      if (!isCleanFailure(r)) throw new Error("init failed uncleanly");
    }
    const prune = (await execa(process.execPath, [CLI, "prune", "--help"], { reject: false })).exitCode === 0;
    log(prune ? "prune command found: pruning with --keep-last 2 --grace 0" : "no prune command: skipping prune");

    const records: BackupRecord[] = [];
    const deadline = started + minutes * 60_000;
    let n = 0;
    while (Date.now() < deadline) {
      n++;
      const roll = random();
      const op: Op =
        records.length === 0 || roll < 0.4
          ? "backup"
          : roll < 0.65
            ? "restore-raw"
            : roll < 0.75
              ? "restore-ploop"
              : roll < 0.87
                ? "check"
                : prune
                  ? "prune"
                  : "restore-raw";
      if (op === "backup") {
        const ct = pick(sources);
        if (ct === "201") {
          // the mutable disk: rewrite some allocated clusters and allocate new ones
          for (let i = 1 + Math.floor(random() * 4); i > 0; i--) {
            await writeClusterToTop(descriptorOf(ct), Math.floor(random() * 256), randomBytes(1 << 20));
          }
        }
        const sha = await sha256OfDisk(descriptorOf(ct));
        const before = await manifests();
        const r = await cli(
          ["backup", "--disk", descriptorOf(ct), "--name", ct, "--json", "-q", "--threads", String(Math.min(2, availableParallelism()))],
          viaProxy,
        );
        const after = await manifests();
        const appeared = [...after].filter((k) => !before.has(k));
        if (r.code === 0) {
          const id = (JSON.parse(r.stdout.trim().split("\n").pop()!) as { backup: string }).backup;
          if (!appeared.includes(keyOf({ ct, id })) || appeared.length !== 1) {
            problems.push(`backup ${ct}/${id}: exit 0 but manifests appeared: ${JSON.stringify(appeared)}`);
            tally(op, "unclean", r.seconds);
          } else {
            tally(op, "ok", r.seconds);
            records.push({ ct, id, sha256: sha });
            log(`#${n} backup ${ct}/${id}: ok in ${r.seconds.toFixed(1)} s`);
          }
        } else {
          failure(op, r, `#${n} backup ${ct}`);
          if (appeared.length > 0) {
            problems.push(`backup ${ct}: failed (exit ${r.code}) but left manifests ${JSON.stringify(appeared)}`);
            log(problems[problems.length - 1]!);
          }
        }
      } else if (op === "restore-raw" || op === "restore-ploop") {
        const rec = random() < 0.5 ? records[records.length - 1]! : pick(records);
        const target = join(work, "restore", op === "restore-raw" ? "disk.raw" : "ploop");
        await rm(join(work, "restore"), { recursive: true, force: true });
        const r = await cli(["restore", `${rec.ct}/${rec.id}`, "--format", op === "restore-raw" ? "raw" : "ploop", "--target", target], viaProxy);
        if (r.code === 0) {
          const sha = op === "restore-raw" ? await sha256OfFile(target) : await sha256OfDisk(join(target, "DiskDescriptor.xml"));
          if (sha !== rec.sha256) {
            corruptions++;
            problems.push(`CORRUPTION: restore of ${rec.ct}/${rec.id} (${op}) has sha256 ${sha}, the source had ${rec.sha256}`);
            log(problems[problems.length - 1]!);
            tally(op, "unclean", r.seconds);
          } else {
            tally(op, "ok", r.seconds);
            log(`#${n} ${op} ${rec.ct}/${rec.id}: ok, bit-identical, ${r.seconds.toFixed(1)} s`);
          }
        } else {
          failure(op, r, `#${n} ${op} ${rec.ct}/${rec.id}`);
          if (await exists(target)) {
            problems.push(`${op} ${rec.ct}/${rec.id}: failed but the target exists`);
            log(problems[problems.length - 1]!);
          }
          const left = (await readdir(join(work, "restore")).catch(() => [] as string[])).filter((f) => !f.startsWith("."));
          if (left.length > 0) problems.push(`${op} ${rec.ct}/${rec.id}: failed and left ${left.join(", ")}`);
        }
      } else if (op === "check") {
        const r = await cli(["check", "--read-data", "-q"], viaProxy);
        if (r.code === 0) {
          tally(op, "ok", r.seconds);
          log(`#${n} check --read-data: ok, ${r.seconds.toFixed(1)} s`);
        } else if (/check failed/.test(r.stderr)) {
          // damage reported: is it real, or was a chunk damaged in transit twice?
          const again = await cli(["check", "--read-data", "-q"], direct);
          if (again.code === 0) {
            transitDamage++;
            tally(op, "clean", r.seconds);
            log(`#${n} check: damage reported through the proxy, none without it (damaged in transit twice)`);
          } else {
            corruptions++;
            problems.push(`CORRUPTION: check --read-data without faults fails: ${again.stderr.trim().slice(0, 500)}`);
            log(problems[problems.length - 1]!);
            tally(op, "unclean", r.seconds);
          }
        } else {
          failure(op, r, `#${n} check`);
        }
      } else {
        const r = await cli(["prune", "--keep-last", "2", "--grace", "0", "--wait", "5s"], viaProxy);
        if (r.code === 0 || r.code === 3) {
          tally(op, "ok", r.seconds);
          log(`#${n} prune: ${r.code === 0 ? "ok" : "backups forgotten, deletion deferred"}, ${r.seconds.toFixed(1)} s`);
        } else {
          failure(op, r, `#${n} prune`);
        }
        // forgotten backups leave the record; every listed one must stay restorable
        const listed = await manifests();
        for (let i = records.length - 1; i >= 0; i--) if (!listed.has(keyOf(records[i]!))) records.splice(i, 1);
      }
    }

    // final verification without faults: everything listed restores bit-identical, check passes
    log(`final verification without the proxy: ${records.length} backups`);
    const listed = await manifests();
    for (const key of listed) {
      if (!records.some((r) => keyOf(r) === key)) problems.push(`manifest ${key} is listed but no backup of this run succeeded with it`);
    }
    for (const rec of records) {
      const target = join(work, "final.raw");
      await rm(target, { force: true });
      const r = await cli(["restore", `${rec.ct}/${rec.id}`, "--format", "raw", "--target", target], direct);
      const sha = r.code === 0 ? await sha256OfFile(target) : null;
      if (sha !== rec.sha256) {
        corruptions++;
        problems.push(`CORRUPTION: final restore of ${rec.ct}/${rec.id}: ${r.code === 0 ? `sha256 ${sha}, expected ${rec.sha256}` : r.stderr.trim()}`);
        log(problems[problems.length - 1]!);
      }
    }
    const check = await cli(["check", "--read-data"], direct);
    if (check.code !== 0) {
      corruptions++;
      problems.push(`CORRUPTION: final check --read-data fails: ${check.stderr.trim().slice(0, 500)}`);
    }
    const finalLine = check.stderr.split("\n").find((l) => l.startsWith("checked")) ?? "";

    await proxy.close();
    const counters = proxy.counters;
    const faults = FAULT_KINDS.reduce((s, k) => s + counters[k], 0);
    const totalOps = [...stats.values()].reduce((s, v) => s + v.ok + v.clean + v.unclean, 0);
    const unclean = [...stats.values()].reduce((s, v) => s + v.unclean, 0) + problems.filter((p) => !p.startsWith("CORRUPTION")).length;
    console.log("");
    console.log(
      `soak: ${((Date.now() - started) / 60_000).toFixed(1)} min, seed ${seed}, faults "${values.faults}"${values.attempts === undefined ? "" : `, ${values.attempts} attempts per request`}`,
    );
    console.log(`operations: ${totalOps}`);
    for (const [op, s] of stats) {
      console.log(
        `  ${op.padEnd(14)} ok ${String(s.ok).padStart(4)}  clean failures ${String(s.clean).padStart(3)}  unclean ${s.unclean}  (avg ${(s.seconds / Math.max(1, s.ok + s.clean + s.unclean)).toFixed(1)} s)`,
      );
    }
    for (const [why, count] of [...cleanReasons].sort((a, b) => b[1] - a[1])) console.log(`    clean failure: ${why} x${count}`);
    if (transitDamage > 0) console.log(`  check damage reports that were transit damage (gone without the proxy): ${transitDamage}`);
    console.log(
      `requests through the proxy: ${counters.requests}; faults injected: ${faults} (${FAULT_KINDS.filter((k: FaultKind) => counters[k] > 0)
        .map((k) => `${k} ${counters[k]}`)
        .join(", ")})`,
    );
    console.log(`final: ${records.length} backups restored bit-identical without faults; ${finalLine}`);
    console.log(`unclean failures: ${unclean}`);
    console.log(`corruptions: ${corruptions}`);
    for (const p of problems) console.log(`  ${p}`);
    process.exitCode = corruptions === 0 && unclean === 0 ? 0 : 1;
    if (!values.keep) await removeBucket(minio, bucket);
  } finally {
    await rm(snapshotDir, { recursive: true, force: true });
    if (rgwDir !== undefined) await execa("bash", [join(projectRoot, "scripts/rgw.sh"), "purge", rgwDir], { reject: false });
    if (!values.keep && values.work === undefined) await rm(work, { recursive: true, force: true });
  }
}

async function removeBucket(minio: Minio.Client, bucket: string): Promise<void> {
  const keys: string[] = [];
  for await (const item of minio.listObjectsV2(bucket, "", true) as AsyncIterable<Minio.BucketItem>) if (item.name) keys.push(item.name);
  for (let i = 0; i < keys.length; i += 1000) await minio.removeObjects(bucket, keys.slice(i, i + 1000));
  await minio.removeBucket(bucket);
}

main().catch((error: unknown) => {
  console.error(`soak: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exitCode = 2;
});
