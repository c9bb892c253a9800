/**
 * Getting one file back without restoring the disk (issue 14): how long `dump` and
 * `restore --include` of a 10 MiB file take, and how much they fetch, out of a backup of a
 * disk holding 1 GiB of data, against a full `restore --format raw` of the same backup in
 * the same run (the peer a user would otherwise use: restore, loop-mount, copy).
 *
 *   npm run build && node dist/bench/file-restore.js [--data-mib 1024] [--file-mib 10]
 *        [--repeat 3] [--work DIR] [--keep] [--local-only]
 *
 * The disk is scripts/fs-corpus.ts buildDataDisk: GPT, ext4 at 1 MiB, --data-mib of
 * incompressible files plus the file to restore. It is backed up to a local directory and
 * to S3 (the server named by PLOOPVAULT_TEST_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY, else a
 * throwaway Ceph RGW from scripts/rgw.sh). Each operation is the CLI, timed with GNU time
 * (start-up included); "fetched" is what the command reports with --json. Prints a table.
 */
import { mkdir, rm } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildDataDisk } from "../scripts/fs-corpus.js";
import { runMeasured } from "./lib/measure.js";
import { rgwUnavailable, startRgw, type RgwServer } from "./lib/s3.js";

const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = join(PROJECT_ROOT, "dist/src/cli.js");
const MIB = 1 << 20;

interface Args {
  dataMiB: number;
  fileMiB: number;
  repeat: number;
  work: string;
  keep: boolean;
  localOnly: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { dataMiB: 1024, fileMiB: 10, repeat: 3, work: join(PROJECT_ROOT, ".tmp/bench-file-restore"), keep: false, localOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === "--data-mib") args.dataMiB = num();
    else if (a === "--file-mib") args.fileMiB = num();
    else if (a === "--repeat") args.repeat = Math.round(num());
    else if (a === "--work") args.work = resolve(argv[++i] ?? "");
    else if (a === "--keep") args.keep = true;
    else if (a === "--local-only") args.localOnly = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return args;
}

interface Row {
  store: string;
  operation: string;
  seconds: number[];
  fetchedMiB: number | null;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = (line: string): void => void process.stderr.write(`file-restore bench: ${line}\n`);
  await rm(args.work, { recursive: true, force: true });
  await mkdir(args.work, { recursive: true });
  let rgw: RgwServer | null = null;
  try {
    log(`building the disk: ${args.dataMiB} MiB of data + a ${args.fileMiB} MiB file`);
    const disk = await buildDataDisk(join(args.work, "private"), "301", { dataMiB: args.dataMiB, fileMiB: args.fileMiB });
    const stores: { name: string; repoArgs: string[]; env: Record<string, string> }[] = [
      { name: "local", repoArgs: ["--repo", join(args.work, "repo")], env: {} },
    ];
    if (!args.localOnly) {
      let s3: { endpoint: string; accessKeyId: string; secretAccessKey: string; region: string } | null = null;
      if (process.env.PLOOPVAULT_TEST_S3_ENDPOINT) {
        s3 = {
          endpoint: process.env.PLOOPVAULT_TEST_S3_ENDPOINT,
          accessKeyId: process.env.PLOOPVAULT_TEST_S3_ACCESS_KEY ?? "",
          secretAccessKey: process.env.PLOOPVAULT_TEST_S3_SECRET_KEY ?? "",
          region: process.env.PLOOPVAULT_TEST_S3_REGION ?? "us-east-1",
        };
      } else {
        const why = await rgwUnavailable();
        if (why === null) rgw = await startRgw(join(PROJECT_ROOT, "scripts/rgw.sh"), join(args.work, "rgw"), log);
        else log(`no S3 server: ${why}; local directory only`);
        s3 = rgw;
      }
      if (s3 !== null) {
        const bucket = `pv-bench-files-${Date.now().toString(36)}`;
        stores.push({
          name: "s3 (RGW)",
          repoArgs: ["--repo", `s3://${bucket}/repo`],
          env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint },
        });
      }
    }
    const rows: Row[] = [];
    for (const store of stores) {
      const base = [...store.repoArgs, "--state-dir", join(args.work, `state-${store.name.split(" ")[0]}`)];
      const run = (cliArgs: string[], label: string): ReturnType<typeof runMeasured> =>
        runMeasured(process.execPath, [CLI, ...cliArgs], args.work, { env: { ...process.env, ...store.env } as Record<string, string>, label });
      await run(["init", ...base, "-q"], "init");
      const backup = await run(["backup", ...base, "--disk", disk.descriptorPath, "-q"], "backup");
      log(`${store.name}: backup of ${(disk.sizeBytes / MIB).toFixed(0)} MiB disk in ${backup.seconds.toFixed(1)} s`);
      const ops: { operation: string; args: (i: number) => string[]; fetched: (stdout: string) => number | null }[] = [
        {
          operation: `dump ${args.fileMiB} MiB file`,
          args: (i) => ["dump", ...base, "301", disk.file, "--target", join(args.work, `dump-${i}`), "--json"],
          fetched: (o) => JSON.parse(o).bytesFetched,
        },
        {
          operation: `restore --include ${args.fileMiB} MiB file`,
          args: (i) => ["restore", ...base, "301", "--include", disk.file, "--target", join(args.work, `inc-${i}`), "--json"],
          fetched: (o) => JSON.parse(o).bytesFetched,
        },
        {
          operation: "ls --recursive /",
          args: () => ["ls", ...base, "301", "/", "--recursive", "--json"],
          fetched: (o) => JSON.parse(o.trim().split("\n").pop()!).bytesFetched,
        },
        { operation: "check --fs", args: () => ["check", ...base, "--fs", "301", "--json"], fetched: (o) => JSON.parse(o).filesystems[0].bytesFetched },
        {
          operation: "restore --format raw (whole disk)",
          args: (i) => ["restore", ...base, "301", "--format", "raw", "--target", join(args.work, `raw-${i}`), "--json"],
          fetched: (o) => JSON.parse(o).dataBytes,
        },
      ];
      for (const op of ops) {
        const row: Row = { store: store.name, operation: op.operation, seconds: [], fetchedMiB: null };
        for (let i = 0; i < args.repeat; i++) {
          const m = await run(op.args(i), op.operation);
          row.seconds.push(m.seconds);
          const fetched = op.fetched(m.stdout);
          row.fetchedMiB = fetched === null ? null : fetched / MIB;
          await rm(join(args.work, `raw-${i}`), { force: true });
          await rm(join(args.work, `dump-${i}`), { force: true });
          await rm(join(args.work, `inc-${i}`), { recursive: true, force: true });
        }
        log(`${store.name}: ${op.operation}: ${row.seconds.map((s) => s.toFixed(2)).join(", ")} s`);
        rows.push(row);
      }
    }
    const lines = [
      `Single-file restore vs full raw restore: ${args.fileMiB} MiB file, disk ${(disk.sizeBytes / MIB).toFixed(0)} MiB with ${args.dataMiB} MiB of data; median of ${args.repeat}; load ${loadavg()[0]!.toFixed(2)}`,
      "",
      "| store | operation | seconds (median) | fetched MiB | time vs full raw restore |",
      "|---|---|---|---|---|",
    ];
    for (const store of stores) {
      const full = rows.find((r) => r.store === store.name && r.operation.startsWith("restore --format raw"))!;
      for (const r of rows.filter((x) => x.store === store.name)) {
        const ratio = median(r.seconds) / median(full.seconds);
        lines.push(
          `| ${r.store} | ${r.operation} | ${median(r.seconds).toFixed(2)} | ${r.fetchedMiB === null ? "-" : r.fetchedMiB.toFixed(1)} | ${ratio.toFixed(3)}x |`,
        );
      }
    }
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    await rgw?.stop();
    if (!args.keep) await rm(args.work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`file-restore bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
