/**
 * `ploopvault copy` against a plain upload of the same bytes (docs/copy.md): the bench
 * corpus' four container disks are backed up into a local repository, which is then
 *   plain upload   every object of the local repository PUT as it is into a fresh bucket
 *                  (S3Store, 8 at a time: the floor any copy pays; no reading of
 *                  manifests, no verification)
 *   copy           ploopvault copy --from LOCAL --to s3://fresh (verifies every chunk)
 *   copy again     the same copy once more (nothing new: listing only)
 *   copy re-keyed  from an encrypted local repository to an encrypted bucket under
 *                  another password (decrypt, verify, re-id, seal again)
 * each in its own process under GNU time (wall, CPU, peak RSS), interleaved when
 * repeated; the S3 server is a throwaway Ceph RGW (or the one named by
 * PLOOPVAULT_TEST_S3_ENDPOINT & co.). Prints a Markdown table.
 *
 *   node dist/bench/copy.js [--corpus DIR | --scale small|bench] [--repeat N] [--work DIR] [--keep]
 */
import { readdir, readFile, rm, mkdir } from "node:fs/promises";
import { cpus } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { execa } from "execa";
import { buildCorpus, type CorpusScale } from "../scripts/corpus.js";
import { S3Store } from "../src/uploader/s3.js";
import { TaskLimiter } from "../src/util/limiter.js";
import { loadAverage, runMeasured, type Measured } from "./lib/measure.js";
import { rgwUnavailable, startRgw, type RgwServer } from "./lib/s3.js";

const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = join(PROJECT_ROOT, "dist", "src", "cli.js");
const SELF = fileURLToPath(import.meta.url);
const CONCURRENCY = 8;

interface Options {
  corpus?: string;
  scale: CorpusScale;
  repeat: number;
  work: string;
  keep: boolean;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { scale: "bench", repeat: 1, work: join(PROJECT_ROOT, ".tmp/bench-copy"), keep: false };
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
    } else if (a === "--repeat") o.repeat = Number(value());
    else if (a === "--work") o.work = resolve(value());
    else if (a === "--keep") o.keep = true;
    else throw new Error(`unknown option ${a}`);
  }
  if (!Number.isInteger(o.repeat) || o.repeat < 1) throw new Error("--repeat must be a positive integer");
  return o;
}

/** The plain upload (run in a child process under GNU time): every file of DIR into s3://BUCKET/PREFIX. */
async function plainUpload(dir: string, bucket: string, prefix: string): Promise<void> {
  const store = new S3Store({
    bucket,
    prefix,
    endpoint: process.env.AWS_ENDPOINT_URL!,
    region: process.env.AWS_REGION ?? "us-east-1",
    credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID!, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY! },
  });
  const limiter = new TaskLimiter(CONCURRENCY);
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const path = join(d, e.name);
      if (e.isDirectory()) await walk(path);
      else if (!e.name.startsWith(".")) await limiter.submit(async () => store.put(relative(dir, path), await readFile(path)));
    }
  };
  try {
    await walk(dir);
    await limiter.drain();
  } finally {
    await store.close();
  }
}

interface Row {
  step: string;
  runs: Measured[];
  bytes: number;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function repoBytes(dir: string): Promise<{ bytes: number; objects: number }> {
  let bytes = 0;
  let objects = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const path = join(d, e.name);
      if (e.isDirectory()) await walk(path);
      else if (!e.name.startsWith(".")) {
        bytes += (await readFile(path)).length;
        objects++;
      }
    }
  };
  await walk(dir);
  return { bytes, objects };
}

/** Remove the bench's buckets (and their objects): the S3 server may be a shared one. */
async function removeBuckets(
  s3: { endpoint: string; accessKeyId: string; secretAccessKey: string; region: string },
  buckets: readonly string[],
): Promise<void> {
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  try {
    for (const bucket of buckets) {
      try {
        for (;;) {
          const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000 }));
          const keys = (listed.Contents ?? []).map((o) => ({ Key: o.Key! }));
          if (keys.length === 0) break;
          await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
        }
        await client.send(new DeleteBucketCommand({ Bucket: bucket }));
      } catch (error) {
        process.stderr.write(`bench/copy: could not remove bucket ${bucket}: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    }
  } finally {
    client.destroy();
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === "--plain-upload") {
    await plainUpload(process.argv[3]!, process.argv[4]!, process.argv[5]!);
    return;
  }
  const o = parseOptions(process.argv.slice(2));
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  await mkdir(o.work, { recursive: true });
  const corpusDir = o.corpus ?? join(o.work, `corpus-${o.scale}`);
  if (o.corpus === undefined) {
    const have = await readdir(corpusDir).catch(() => [] as string[]);
    if (!have.includes("SHA256SUMS")) {
      log(`building the ${o.scale} corpus in ${corpusDir}`);
      await buildCorpus(corpusDir, { scale: o.scale, log });
    }
  }
  const cts = (await readdir(corpusDir)).filter((n) => /^\d+$/.test(n)).sort();

  // the S3 server: the one the test suite is pointed at, else a throwaway RGW
  let rgw: RgwServer | null = null;
  let s3: { endpoint: string; accessKeyId: string; secretAccessKey: string; region: string; pids: () => number[] };
  if (process.env.PLOOPVAULT_TEST_S3_ENDPOINT) {
    s3 = {
      endpoint: process.env.PLOOPVAULT_TEST_S3_ENDPOINT,
      accessKeyId: process.env.PLOOPVAULT_TEST_S3_ACCESS_KEY!,
      secretAccessKey: process.env.PLOOPVAULT_TEST_S3_SECRET_KEY!,
      region: "us-east-1",
      pids: () => [],
    };
  } else {
    const why = await rgwUnavailable();
    if (why !== null) throw new Error(`no S3 server: ${why} (or set PLOOPVAULT_TEST_S3_ENDPOINT)`);
    rgw = await startRgw(join(PROJECT_ROOT, "scripts/rgw.sh"), join(o.work, `rgw-${process.pid}`), log);
    s3 = rgw;
  }
  const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint };
  const tag = Date.now().toString(36);
  const local = join(o.work, `local-${tag}`);
  const encrypted = join(o.work, `local-enc-${tag}`);
  const buckets: string[] = [];
  const cli = async (args: string[], extra: Record<string, string> = {}): Promise<void> => {
    const r = await execa(process.execPath, [CLI, ...args], { reject: false, env: { ...env, ...extra } });
    if (r.exitCode !== 0) throw new Error(`ploopvault ${args.join(" ")}: ${String(r.stderr).trim().split("\n").slice(-3).join(" | ")}`);
  };
  try {
    log(`backing up ${cts.length} disks into ${local}`);
    const initState = join(o.work, `st-init-${tag}`);
    await cli(["init", "--repo", local, "--state-dir", initState, "-q"]);
    for (const ct of cts)
      await cli([
        "backup",
        "--repo",
        local,
        "--state-dir",
        join(o.work, `st-${tag}`),
        "--disk",
        join(corpusDir, ct, "root.hdd", "DiskDescriptor.xml"),
        "--name",
        ct,
        "-q",
      ]);
    await cli(["init", "--repo", encrypted, "--state-dir", initState, "--encrypt", "-q"], { PLOOPVAULT_PASSWORD: "bench-a" });
    await cli(["copy", "--from", local, "--to", encrypted, "--state-dir", join(o.work, `st-enc-${tag}`), "-q"], { PLOOPVAULT_PASSWORD: "bench-a" });
    const size = await repoBytes(local);
    const chunkBytes = size.bytes;
    log(`local repository: ${size.objects} objects, ${(size.bytes / 2 ** 20).toFixed(1)} MiB`);

    const rows: Row[] = [
      { step: "plain upload of the repository's objects", runs: [], bytes: chunkBytes },
      { step: "copy local -> RGW", runs: [], bytes: chunkBytes },
      { step: "copy again (nothing new)", runs: [], bytes: 0 },
      { step: "copy encrypted -> encrypted (re-keyed)", runs: [], bytes: chunkBytes },
    ];
    const measure = (args: string[], extra: Record<string, string> = {}): Promise<Measured> =>
      runMeasured(process.execPath, args, o.work, {
        env: { ...env, ...extra, PATH: process.env.PATH ?? "" },
        ownPids: s3.pids,
        label: args.slice(0, 3).join(" "),
      });
    for (let round = 0; round < o.repeat; round++) {
      const suffix = `${tag}-${round}`;
      log(`round ${round + 1}/${o.repeat}`);
      const plainBucket = `bench-plain-${suffix}`;
      const copyBucket = `bench-copy-${suffix}`;
      const encBucket = `bench-enc-${suffix}`;
      buckets.push(plainBucket, copyBucket, encBucket);
      await cli(["init", "--repo", `s3://${copyBucket}/r`, "--state-dir", initState, "-q"]);
      await cli(["init", "--repo", `s3://${encBucket}/r`, "--state-dir", initState, "--encrypt", "-q"], { PLOOPVAULT_PASSWORD: "bench-b" });
      await cli(["init", "--repo", `s3://${plainBucket}/x`, "--state-dir", initState, "-q"]); // creates the bucket
      rows[0]!.runs.push(await measure([SELF, "--plain-upload", local, plainBucket, "r"]));
      const state = join(o.work, `st-copy-${suffix}`);
      rows[1]!.runs.push(await measure([CLI, "copy", "--from", local, "--to", `s3://${copyBucket}/r`, "--state-dir", state, "-q"]));
      rows[2]!.runs.push(await measure([CLI, "copy", "--from", local, "--to", `s3://${copyBucket}/r`, "--state-dir", state, "-q"]));
      rows[3]!.runs.push(
        await measure([CLI, "copy", "--from", encrypted, "--to", `s3://${encBucket}/r`, "--state-dir", join(o.work, `st-enc-copy-${suffix}`), "-q"], {
          PLOOPVAULT_FROM_PASSWORD: "bench-a",
          PLOOPVAULT_PASSWORD: "bench-b",
        }),
      );
    }
    const plain = median(rows[0]!.runs.map((r) => r.seconds));
    const load = await loadAverage();
    const mib = (n: number): string => (n / 2 ** 20).toFixed(1);
    const lines = [
      `Repository: ${cts.length} backups (${o.corpus ?? `${o.scale} corpus`}), ${size.objects} objects, ${mib(size.bytes)} MiB; ${cpus().length} cores, load average ${load.toFixed(1)}; medians of ${o.repeat} run(s)`,
      "",
      "| step | seconds | MiB/s | vs plain upload | CPU s (user+sys) | peak RSS MiB | other CPU s |",
      "|---|---|---|---|---|---|---|",
    ];
    for (const row of rows) {
      const seconds = median(row.runs.map((r) => r.seconds));
      const cpu = median(row.runs.map((r) => r.userSeconds + r.sysSeconds));
      const rss = Math.max(...row.runs.map((r) => r.peakRssMiB));
      const other = median(row.runs.map((r) => r.otherCpuSeconds));
      const range =
        row.runs.length > 1 ? ` (${Math.min(...row.runs.map((r) => r.seconds)).toFixed(1)}-${Math.max(...row.runs.map((r) => r.seconds)).toFixed(1)})` : "";
      lines.push(
        `| ${row.step} | ${seconds.toFixed(1)}${range} | ${row.bytes > 0 ? mib(row.bytes / seconds) : "-"} | ${(seconds / plain).toFixed(2)} | ${cpu.toFixed(1)} | ${rss.toFixed(0)} | ${other.toFixed(1)} |`,
      );
    }
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    if (!o.keep) {
      await rm(local, { recursive: true, force: true });
      await rm(encrypted, { recursive: true, force: true });
      for (const name of await readdir(o.work))
        if (name.startsWith("st-") && name.includes(tag)) await rm(join(o.work, name), { recursive: true, force: true });
      await removeBuckets(s3, buckets);
    }
    await rgw?.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench/copy: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
