/**
 * Every code block of README.md and docs/*.md, run or checked as an operator following the
 * docs word for word would (issue 17): the documented install (a symlink to the built
 * entry point, then `ploopvault` from PATH), the example config file as the config of
 * every command here, the cron lines and the systemd ExecStart as cron and systemd would
 * run them (and silent, since cron mails any output), the IAM policies, the JSON formats
 * against what `init` writes, the alert rules against a real metrics file.
 *
 * Commands run unchanged except for paths and servers: /vz/private is a copy of the test
 * corpus, /srv/..., /etc/ploopvault, /var/lib/ploopvault and /usr/local/bin live in a
 * sandbox, buckets are one test bucket on the suite's RGW (one prefix per block), the S3
 * endpoints in the docs are the RGW's. A line that cannot run here is skipped only by a
 * rule below that says why; a block no rule covers fails the test, so a new example must
 * come with a way to run it.
 */
import { execa } from "execa";
import { chmod, chown, cp, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { writeDescriptorFile, writeImageFromRaw } from "../../src/ploop/writer.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corpus } from "../helpers/corpus.js";
import { PLOOP_WRAPPER } from "../helpers/cli.js";
import { makeTestBucket, PROJECT_ROOT, testS3 } from "../helpers/s3-server.js";

interface Block {
  file: string;
  line: number;
  lang: string;
  text: string;
}

function extractBlocks(file: string, text: string): Block[] {
  const blocks: Block[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j]!)) body.push(lines[j++]!.slice(indent));
    blocks.push({ file, line: i + 1, lang: open[2]!, text: body.join("\n") });
    i = j;
  }
  return blocks;
}

/** How each block is exercised, found by file and a piece of its text (exactly one rule per block). */
type How = "run" | "config" | "cron" | "systemd" | "iam" | "iam-append-only" | "repo-config" | "synopsis" | "alerts" | "state-layout" | { skip: string };
/** `shared`: the block reads backups that exist already; its repositories are the shared one holding 101 and 102. */
const RULES: { file: string; has: string; how: How; shared?: boolean }[] = [
  { file: "README.md", has: "npm run demo", how: "run" },
  { file: "README.md", has: "ploopvault init --repo /srv/ploopvault", how: "run" },
  { file: "README.md", has: "npm run bench", how: { skip: "benchmarks (minutes, figures in docs/performance.md)" } },
  { file: "README.md", has: "ploopvault ls --repo s3://backups/node1 101:latest /var/www --long", how: "run", shared: true },
  { file: "docs/encryption.md", has: "<state dir>/repos/<repository id>/encryption.json", how: "state-layout" },
  { file: "docs/file-restore.md", has: "export PLOOPVAULT_REPO=s3://backups/node1", how: "run", shared: true },
  {
    file: "docs/file-restore.md",
    has: "is a symbolic link in the restore target",
    how: { skip: "sample error line (test/files restore-safety tests produce it)" },
  },
  { file: "docs/file-restore.md", has: "ploopvault check --fs   ", how: "run", shared: true },
  { file: "docs/file-restore.md", has: "# /etc/cron.d/ploopvault-check-fs", how: "cron", shared: true },
  { file: "docs/file-restore.md", has: "PloopvaultBackupFilesystemDamaged", how: "alerts" },
  {
    file: "docs/file-restore.md",
    has: "superblock: checksum mismatch (stored",
    how: { skip: "sample error lines (test/fs damaged-metadata tests produce them)" },
  },
  { file: "docs/file-restore.md", has: "LazyBackupDisk (src/restore/lazy-disk.ts)", how: { skip: "diagram of the reader's layers" } },
  { file: "docs/nbd.md", has: "# serving 101/", how: "run", shared: true },
  { file: "docs/nbd.md", has: "nbdinfo --map", how: "run", shared: true },
  { file: "docs/nbd.md", has: "nbd-client -u /run/pv-101.sock", how: "run", shared: true },
  { file: "docs/nbd.md", has: "nbdfuse -r", how: "run", shared: true },
  { file: "docs/nbd.md", has: "qemu-img create -f qcow2", how: "run", shared: true },
  { file: "docs/operations.md", has: "--force --seed /vz/private/101/root.hdd", how: "run" },
  { file: "docs/operations.md", has: "install -m 0644 contrib/ploopvault-backup.service", how: "run" },
  {
    file: "docs/ploop.md",
    has: "5769 7468 6f75 4672 6553 7061 6345 7874",
    how: { skip: "hex dump of a measured image (test/ploop/format.test.ts decodes these bytes)" },
  },
  {
    file: "docs/ploop.md",
    has: "<Parallels_disk_image>",
    how: { skip: "a descriptor as ploop init writes it, re-wrapped for reading (the ploop tests parse real ones)" },
  },
  { file: "docs/ploop.md", has: "ploop snapshot -u S DD", how: "run" },
  { file: "docs/skip-free.md", has: "--all --skip-free", how: "run" },
  { file: "docs/performance.md", has: "node dist/bench/stages.js", how: { skip: "benchmark of the pipeline's stages" } },
  {
    file: "docs/install.md",
    has: "npm ci && npm pack",
    how: {
      skip: "npm pack and npm install -g of the tarball: test/install/pack.test.ts packs a copy of the checkout, installs it into a temp prefix and backs up a ploop disk with it",
    },
  },
  {
    file: "docs/install.md",
    has: "npm install -g --prefix /opt/ploopvault --omit=optional ./ploopvault-0.1.0.tgz\ntar czf",
    how: { skip: "the same install into a prefix, copied to nodes as a tarball (test/install/pack.test.ts installs into a prefix)" },
  },
  {
    file: "docs/install.md",
    has: "apt-get install ploop e2fsprogs util-linux",
    how: { skip: "package installation (.ci/run installs these on the test machine)" },
  },
  {
    file: "docs/install.md",
    has: "contrib/node-glibc-bundle.sh package/bin/node",
    how: { skip: "the glibc bundle for VHS 7 nodes: test/install/node-bundle.test.ts runs the script and the bundled node" },
  },
  { file: "docs/install.md", has: "git clone <your ploopvault repository> /opt/ploopvault && cd /opt/ploopvault", how: "run" },
  { file: "docs/chunking.md", has: "chunk-params", how: { skip: "benchmark of chunker parameters" } },
  { file: "docs/encryption.md", has: "openssl rand", how: "run" },
  { file: "docs/encryption.md", has: "key-encryption key", how: { skip: "diagram of the key hierarchy" } },
  { file: "docs/encryption.md", has: "type/version", how: { skip: "object format description" } },
  {
    file: "docs/encryption.md",
    has: "$ ploopvault restore",
    how: { skip: "sample output of a tampered repository (test/crypto/encrypted-repo.test.ts produces it)" },
  },
  { file: "docs/encryption.md", has: "ploopvault key list", how: "run" },
  { file: "docs/encryption.md", has: "for mode in plain enc", how: { skip: "benchmark of encryption overhead" } },
  { file: "docs/online-backup.md", has: "recoverInterrupted()", how: { skip: "outline of the backup sequence" } },
  { file: "docs/online-backup.md", has: "70766c74", how: { skip: "format of snapshot GUIDs" } },
  { file: "docs/operations.md", has: "git clone", how: "run" },
  { file: "docs/operations.md", has: "tar czf", how: "run" },
  { file: "docs/operations.md", has: "install -d -m 0700", how: "run" },
  { file: "docs/operations.md", has: "# /etc/ploopvault/ploopvault.conf", how: "config" },
  { file: "docs/operations.md", has: "s3.env <<'EOF'", how: "run" },
  { file: "docs/operations.md", has: "# /etc/cron.d/ploopvault", how: "cron" },
  { file: "docs/operations.md", has: "ploopvault-backup.service\n", how: "systemd" },
  { file: "docs/operations.md", has: "OnCalendar", how: { skip: "systemd timer unit: schedules the service above, no command of its own" } },
  {
    file: "docs/operations.md",
    has: "systemctl daemon-reload",
    how: { skip: "systemctl: no systemd on the test machine (the unit's ExecStart is run above)" },
  },
  { file: "docs/operations.md", has: "docker compose", how: "run" },
  { file: "docs/operations.md", has: '"Version": "2012-10-17"', how: "iam" },
  { file: "docs/operations.md", has: "# pick a backup", how: "run" },
  { file: "docs/operations.md", has: "vzctl register", how: "run" },
  { file: "docs/operations.md", has: "/etc/vz/conf/201.conf", how: "run" },
  { file: "docs/operations.md", has: "losetup", how: "run" },
  { file: "docs/operations.md", has: "--tag pre-upgrade --note", how: "run" },
  { file: "docs/operations.md", has: "PloopvaultBackupTooOld", how: "alerts" },
  { file: "docs/operations.md", has: "ploopvault-hook STATUS", how: { skip: "how a hook is invoked (test/ops/monitoring.test.ts runs hooks)" } },
  {
    file: "docs/operations.md",
    has: "--hook-failure 'mail",
    how: { skip: "option fragments with mail and an external URL (hooks: test/ops/monitoring.test.ts)" },
  },
  { file: "docs/operations.md", has: "INFO  backup[81234]", how: { skip: "sample log file lines (test/ops/monitoring.test.ts checks the format)" } },
  { file: "docs/performance.md", has: "npm run bench", how: { skip: "benchmarks" } },
  { file: "docs/prune.md", has: "ploopvault prune --repo URL", how: "synopsis" },
  { file: "docs/prune.md", has: "locks/backup-", how: { skip: "lock object names" } },
  { file: "docs/repository-format.md", has: "written once by `init`", how: { skip: "object layout (test/e2e tests list the objects)" } },
  { file: "docs/repository-format.md", has: '"format": "ploopvault-repository"', how: "repo-config" },
  { file: "docs/repository-format.md", has: '"scheme": "ploopvault-aead-v1"', how: "repo-config" },
  { file: "docs/repository-format.md", has: '"format": "ploopvault-key"', how: "repo-config" },
  { file: "docs/repository-format.md", has: "AES-256-GCM ciphertext of the plaintext", how: { skip: "envelope format description" } },
  { file: "docs/repository-format.md", has: '"PVMF"', how: { skip: "manifest format description" } },
  {
    file: "docs/repository-format.md",
    has: '"objectLock": { "mode": "governance"',
    how: { skip: "needs a bucket made with object lock: test/object-lock reads back exactly these fields from what init --object-lock writes" },
  },
  { file: "docs/copy.md", has: "ploopvault copy --from URL", how: "synopsis" },
  {
    file: "README.md",
    has: "ploopvault copy --from /srv/ploopvault --to s3://offsite/node1",
    how: {
      skip: "a second S3 endpoint and a bucket made with object lock: test/copy runs copy between local and RGW, test/object-lock runs init --object-lock",
    },
  },
  { file: "docs/copy.md", has: "node dist/bench/copy.js", how: { skip: "the benchmark itself (minutes per round): bench/copy.ts, run by hand" } },
  { file: "docs/object-lock.md", has: "--object-lock DAYS [--lock-mode", how: "synopsis" },
  { file: "docs/object-lock.md", has: '"Sid": "NeverDestroy"', how: "iam-append-only" },
];

/** Lines of a "run" block that cannot run here, and why. */
const SKIP_LINES: { pattern: RegExp; why: string }[] = [
  { pattern: /^git clone /, why: "the checkout under test is the clone" },
  {
    pattern: /^npm ci && npm run build && npm prune --omit=dev$/,
    why: "the suite's set-up ran npm ci and the build; the prune ran in a copy of the checkout (see prelude)",
  },
  { pattern: /^npm ci\b/, why: "the suite's own set-up ran it" },
  { pattern: /^npm test\b/, why: "this is npm test" },
  { pattern: /^\.\.\. read the logical disk/, why: "a step in prose (the backup's read)" },
  { pattern: /^npm run test:unit\b/, why: "the unit tier's files are part of this suite; a vitest inside the running one would compete with it for the CPU" },
  { pattern: /^npm run lint\b/, why: "CI runs it before the suite (.ci/run)" },
  { pattern: /^npm run demo\b/, why: "the end-to-end demo (about 70 s, and it rebuilds dist/ under the running suite); test/e2e runs its steps" },
  { pattern: /^npm run build\b|^npm ci && npm run build/, why: "npm test built dist/ before the suite (rebuilding under running tests would race them)" },
  { pattern: /^npm prune\b/, why: "would remove the test tools from the checkout under test" },
  { pattern: /^docker compose /, why: "the suite's RGW stands in for MinIO" },
  { pattern: /^vzctl /, why: "no OpenVZ kernel here" },
  {
    pattern: /^dev=\$\(losetup|^losetup |^mount |^umount |^# \.\.\. copy|^cp -a \/mnt\//,
    why: "loop devices and mounts need a privileged host (the raw image is checked with e2fsck instead)",
  },
  {
    pattern: /^nbd-client |^qemu-nbd /,
    why: "needs the kernel's NBD driver (modprobe nbd), which test machines lack (test/nbd reads the export with nbdinfo, nbdcopy and qemu-img)",
  },
  { pattern: /^nbdfuse /, why: "a FUSE mount, for the loop device that the next lines cannot attach here" },
  { pattern: /^systemd-nspawn /, why: "boots the container's userland from the mounted overlay (no systemd here)" },
];

let sandbox: string;
let bucket: string;
/** Backup ids of 101 and 102 in the shared repository (s3://BUCKET/shared). */
const sharedIds: Record<string, string> = {};
/** SHA-256 of the logical disk of the sandbox's container 101 (the raw image it was made from). */
let disk101Sha256: string;
let env: Record<string, string>;
const s3 = (): ReturnType<typeof testS3> => testS3();

/** Paths and servers of the docs -> the sandbox's. `tag` separates blocks' repositories. */
function substitute(text: string, tag: string, block?: Block, shared = false): string {
  const endpoint = s3().endpoint;
  // absolute paths only where they start (not inside a sandbox path already substituted)
  const path =
    (from: string, to: string) =>
    (t: string): string =>
      t.replace(new RegExp(`(?<![\\w.-])${from.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`, "g"), () => to);
  const steps: ((t: string) => string)[] = [
    (t) => t.replaceAll("<your ploopvault repository>", PROJECT_ROOT),
    // the install from source runs in the checkout under test; the tarball goes to the sandbox
    path("/opt/ploopvault", block?.text.includes("git clone") ? PROJECT_ROOT : join(sandbox, "opt", "ploopvault")),
    (t) => t.replace(/(tar [cx]zf )ploopvault-/g, `$1${sandbox}/ploopvault-`),
    path("/usr/local/bin/", `${join(sandbox, "bin")}/`),
    path("/usr/local/sbin/", `${join(sandbox, "sbin")}/`),
    path("/etc/ploopvault", join(sandbox, "etc")),
    path("/etc/vz/conf", join(sandbox, "etc-vz")),
    path("/etc/systemd/system/", `${join(sandbox, "systemd")}/`),
    path("/var/lib/node_exporter/textfile", join(sandbox, "metrics")),
    path("/var/lib/node_exporter", join(sandbox, "metrics")),
    path("/run/", `${join(sandbox, "run")}/`),
    path("/srv/restore", join(sandbox, tag, "restore")),
    path("/srv/from-tar", join(sandbox, tag, "from-tar")),
    path("/tmp/101-test.qcow2", join(sandbox, tag, "tmp", "101-test.qcow2")),
    // backups named by id in the docs: the shared repository's
    (t) => t.replace(/\b101\/20261202T0200\b/g, `101/${sharedIds["101"]!.slice(0, 13)}`).replace(/\b102\/2026\.\.\./g, `102/${sharedIds["102"]!.slice(0, 13)}`),
    path("/var/lib/ploopvault", join(sandbox, "state")),
    path("/var/log/ploopvault.log", join(sandbox, "ploopvault.log")),
    path("/vz/private", join(sandbox, "vz")),
    path("/vz/root", join(sandbox, "vzroot")),
    path("/usr/sbin/ploop", PLOOP_WRAPPER),
    path("/srv/ploopvault", join(sandbox, tag, "srv-repo")),
    path("/srv/backup", join(sandbox, tag, "srv-repo")),
    path("/srv/tmp", join(sandbox, tag, "srv-tmp")),
    path("/tmp/101", join(sandbox, tag, "tmp", "101")),
    path("/root/ops2.pass", join(sandbox, "ops2.pass")),
    path("/root/", `${join(sandbox, tag, "root")}/`),
    (t) => (block?.text.includes("ploop snapshot -u S DD") === true ? t.replace(/ -u S DD\b/g, ' -u "$S" "$DD"') : t),
    (t) => t.replace(/--repo R\b/g, `--repo ${join(sandbox, tag, "key-repo")}`),
    // after `key passwd` the operator opens with the new password
    (t) => t.replace(/^(ploopvault key passwd .*)$/m, `$1\nexport PLOOPVAULT_PASSWORD="$PLOOPVAULT_NEW_PASSWORD"`),
    (t) => t.replace(/ 3fa9c2d1\b/, ` "$(ploopvault key list --repo ${join(sandbox, tag, "key-repo")} --json | jq -r '[.[] | select(.current | not)][0].id')"`),
    (t) => t.replace(/https?:\/\/(127\.0\.0\.1:9000|10\.0\.0\.5:9000|minio:9000|s3\.example\.net)/g, endpoint),
    (t) => t.replace(/s3:(https?:\/\/[^/\s]+)\/(backups|ploopvault)\b/g, (_m, ep: string) => `s3:${ep}/${bucket}/${tag}`),
    (t) => (shared ? t.replace(/s3:\/\/backups\/[\w-]+/g, `s3://${bucket}/shared`) : t),
    (t) => t.replace(/s3:\/\/(backups|ploopvault)\b/g, `s3://${bucket}/${tag}`),
    (t) => t.replaceAll("AKIA...", s3().accessKeyId),
    (t) => t.replaceAll("AWS_SECRET_ACCESS_KEY=...", `AWS_SECRET_ACCESS_KEY=${s3().secretAccessKey}`),
    (t) => t.replaceAll("AWS_ACCESS_KEY_ID=ploopvault ", `AWS_ACCESS_KEY_ID=${s3().accessKeyId} `),
    (t) => t.replaceAll("AWS_SECRET_ACCESS_KEY=ploopvault-secret", `AWS_SECRET_ACCESS_KEY=${s3().secretAccessKey}`),
    (t) => t.replaceAll("AWS_REGION=eu-central-1", `AWS_REGION=${s3().region}`),
  ];
  return steps.reduce((t, step) => step(t), text);
}

/** A "run" block as a bash script: continuation lines joined, skipped lines commented out with the reason. */
function script(block: Block, tag: string, shared = false): { text: string; skipped: string[] } {
  const joined = block.text.replace(/\\\n\s*/g, " ").split("\n");
  const skipped: string[] = [];
  const lines = joined.map((line) => {
    const rule = SKIP_LINES.find((r) => r.pattern.test(line.trim()));
    if (rule === undefined) return serveNbd(substitute(line, tag, block, shared));
    skipped.push(`${line.trim()}  (${rule.why})`);
    return `# skipped: ${rule.why}`;
  });
  return { text: `set -euo pipefail\n${WAIT_SOCKET}\n${lines.join("\n")}\n`, skipped };
}

const WAIT_SOCKET = `pv_wait_socket() { for _ in $(seq 600); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no NBD socket $1 after 60 s" >&2; return 1; }`;

/**
 * serve-nbd serves until Ctrl-C: in the foreground (as the docs show it) it becomes a
 * background job that is read with nbdinfo, then stopped with SIGINT as Ctrl-C would, and
 * must exit 0 having removed its socket; a job started with "&" is waited for until its
 * socket is up (as an operator sees the "serving" line before going on).
 */
function serveNbd(line: string): string {
  const m = /^(ploopvault serve-nbd .*--socket (\S+))\s*(&)?\s*(#.*)?$/.exec(line.trim());
  if (m === null) return line;
  const [, command, socket, background] = m;
  if (background !== undefined) return `${command} &\npv_wait_socket ${socket}`;
  return [
    `${command} & pv_nbd=$!`,
    `pv_wait_socket ${socket}`,
    `nbdinfo 'nbd+unix:///?socket=${socket}' >/dev/null`,
    `kill -INT $pv_nbd; wait $pv_nbd`,
    `[ ! -e ${socket} ] || { echo "serve-nbd left its socket ${socket}" >&2; exit 1; }`,
  ].join("\n");
}

async function bash(text: string, cwd: string, extraEnv: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await execa("bash", ["-c", text], { cwd, env: { ...env, ...extraEnv }, extendEnv: false, reject: false, timeout: 300_000 });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

const files = ["README.md", ...(await readdir(join(PROJECT_ROOT, "docs"))).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`)];
const blocks: Block[] = [];
for (const file of files) blocks.push(...extractBlocks(file, await readFile(join(PROJECT_ROOT, file), "utf8")));
const ruleOf = (b: Block): (typeof RULES)[number] => {
  const matches = RULES.filter((r) => r.file === b.file && b.text.includes(r.has));
  if (matches.length !== 1) throw new Error(`${b.file}:${b.line}: ${matches.length} rules match this block (need exactly one): ${b.text.split("\n")[0]}`);
  return matches[0]!;
};

describe("documented examples", () => {
  beforeAll(async () => {
    sandbox = await mkdtemp(join(tmpdir(), "pv-docs-"));
    bucket = await makeTestBucket("docs");
    for (const dir of ["bin", "sbin", "etc", "etc-vz", "state", "metrics", "vz", "vzroot", "home", "work", "run", "systemd"])
      await mkdir(join(sandbox, dir), { recursive: true });
    await cp(join(corpus().dir, "102"), join(sandbox, "vz", "102"), { recursive: true });
    disk101Sha256 = await buildDocsDisk(join(sandbox, "vz", "101"));
    // the alert hook of the example config: records that it ran
    await writeFile(join(sandbox, "sbin", "ploopvault-alert"), `#!/bin/sh\necho "$@" >> ${join(sandbox, "alerts")}\n`);
    await chmod(join(sandbox, "sbin", "ploopvault-alert"), 0o755);
    await writeFile(join(sandbox, "ops2.pass"), "second operator\n");
    env = {
      PATH: `${join(sandbox, "bin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
      HOME: join(sandbox, "home"),
      // what the example config file does not set: the test's ploop and no vzlist
      PLOOPVAULT_PLOOP: PLOOP_WRAPPER,
      PLOOPVAULT_CONFIG: join(sandbox, "etc", "ploopvault.conf"),
      AWS_ACCESS_KEY_ID: s3().accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3().secretAccessKey,
      AWS_REGION: s3().region,
      LANG: "C.UTF-8",
    };
    // the shared repository the file-restore and NBD examples read: 101 and 102 backed up once
    const shared = `--repo s3://${bucket}/shared --endpoint ${s3().endpoint} --state-dir ${join(sandbox, "state")} --config '' -q`;
    const made = await bash(
      `ploopvault() { node ${join(PROJECT_ROOT, "dist", "src", "cli.js")} "$@"; }\n` +
        `ploopvault init ${shared}\n` +
        `for ct in 101 102; do ploopvault backup ${shared} --disk ${join(sandbox, "vz")}/$ct/root.hdd/DiskDescriptor.xml; done\n` +
        `ploopvault snapshots ${shared} --json`,
      sandbox,
    );
    expect(made.code, made.stderr).toBe(0);
    for (const b of JSON.parse(made.stdout) as { ct: string; id: string }[]) sharedIds[b.ct] = b.id;
    expect(Object.keys(sharedIds).sort()).toEqual(["101", "102"]);
  }, 300_000);
  afterAll(async () => {
    await rm(sandbox, { recursive: true, force: true });
  });

  it("has exactly one rule for every code block, and every rule is used", () => {
    const used = new Set<(typeof RULES)[number]>();
    const problems: string[] = [];
    for (const b of blocks) {
      try {
        used.add(ruleOf(b));
      } catch (error) {
        problems.push((error as Error).message);
      }
    }
    expect(problems).toEqual([]);
    expect(RULES.filter((r) => !used.has(r)).map((r) => `${r.file}: ${r.has}`)).toEqual([]);
  });

  /** Blocks in document order; some depend on earlier ones (install first, the config file, the repositories). */
  it("runs or checks every example", { timeout: 900_000 }, async () => {
    const order = (b: Block): number => {
      const how = ruleOf(b).how;
      // the install makes `ploopvault` callable; the config file is every command's
      if (b.text.includes("git clone")) return 0;
      if (how === "config") return 1;
      if (b.text.includes("install -d -m 0700")) return 2;
      if (b.text.includes("s3.env <<'EOF'")) return 3;
      if (how === "cron") return b.file === "docs/operations.md" ? 4 : 4.5; // check --fs after the backups
      return 5;
    };
    const sorted = blocks.map((b, i) => ({ b, i })).sort((x, y) => order(x.b) - order(y.b) || x.i - y.i);
    const report: string[] = [];
    for (const [n, { b }] of sorted.entries()) {
      const blockStart = performance.now();
      const how = ruleOf(b).how;
      const where = `${b.file}:${b.line}`;
      const tag = `b${n}`;
      await rm(join(sandbox, "vz", "201"), { recursive: true, force: true });
      if (typeof how === "object") {
        report.push(`${where}: not run: ${how.skip}`);
        continue;
      }
      const shared = ruleOf(b).shared === true;
      if (how === "run") {
        const { text, skipped } = script(b, tag, shared);
        for (const dir of ["tmp", "root", "srv-tmp"]) await mkdir(join(sandbox, tag, dir), { recursive: true });
        const before = prelude(b, tag);
        // the tarball and contrib/ are named relative to the checkout (the installed package)
        const cwd = b.text.includes("tar czf") || b.text.includes("install -m 0644 contrib/") ? PROJECT_ROOT : join(sandbox, "work");
        const r = await bash(`${WAIT_SOCKET}\n${before.setup}\n${text}${before.teardown ?? ""}`, cwd, before.env);
        expect(r.code, `${where} failed:\n${text}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
        report.push(`${where}: ran${skipped.length > 0 ? `, lines not run: ${skipped.join("; ")}` : ""}`);
        await afterRun(b, tag, r.stdout);
      } else if (how === "config") {
        await checkConfig(b);
        report.push(`${where}: used as the config file of every command`);
      } else if (how === "cron") {
        await runCron(b, shared);
        report.push(`${where}: each line run as cron would, silent`);
      } else if (how === "systemd") {
        await runSystemd(b);
        report.push(`${where}: ExecStart run with its EnvironmentFile, silent`);
      } else if (how === "iam") {
        checkIam(b);
        report.push(`${where}: valid IAM policy`);
      } else if (how === "repo-config") {
        await checkRepoFormat(b);
        report.push(`${where}: matches what init writes`);
      } else if (how === "iam-append-only") {
        checkAppendOnlyIam(b);
        report.push(`${where}: valid IAM policy that lets the node destroy nothing`);
      } else if (how === "synopsis") {
        await checkSynopsis(b);
        report.push(`${where}: every flag exists`);
      } else if (how === "state-layout") {
        await checkStateLayout(b);
        report.push(`${where}: the files exist after an encrypted init`);
      } else if (how === "alerts") {
        await checkAlerts(b);
        report.push(`${where}: every metric exists in a real metrics file`);
      }
      report[report.length - 1] += ` (${((performance.now() - blockStart) / 1000).toFixed(1)} s)`;
    }
    if (process.env.PLOOPVAULT_TEST_VERBOSE) process.stderr.write(`${report.join("\n")}\n`);
  });
});

/** What a block needs that the docs give elsewhere: a password, a terminal's answers, an earlier step. */
function prelude(b: Block, tag: string): { env: Record<string, string>; setup: string; teardown?: string } {
  if (b.file === "docs/skip-free.md" && b.text.includes("--all --skip-free"))
    return { env: {}, setup: `ploopvault init --repo s3://${bucket}/${tag}/node1 -q` };
  if (b.text.includes("ploop snapshot -u S DD")) {
    // the real ploop (offline) on a copy of 101: S a snapshot GUID, DD its descriptor
    const ct = join(sandbox, tag, "ct");
    return {
      env: { S: "{70766c74-0000-4000-8000-0000000d0c5a}", DD: join(ct, "root.hdd", "DiskDescriptor.xml") },
      setup: `cp -r ${join(sandbox, "vz", "101")} ${ct}\nploop() { ${PLOOP_WRAPPER} "$@"; }`,
    };
  }
  if (b.text.includes("export PLOOPVAULT_REPO=") || /^ploopvault check --fs /m.test(b.text)) {
    // step 4 copies into the running container's root; check --fs continues the workflow's export
    return { env: { PLOOPVAULT_REPO: `s3://${bucket}/shared` }, setup: `mkdir -p ${join(sandbox, "vzroot", "101", "var", "www")}` };
  }
  if (/^nbdinfo |^nbdfuse |^qemu-img /m.test(b.text)) {
    // these read the export that the block before them started
    const socket = join(sandbox, "run", "pv-101.sock");
    return {
      env: {},
      setup: `ploopvault serve-nbd --repo s3://${bucket}/shared 101:latest --socket ${socket} -q & pv_server=$!\npv_wait_socket ${socket}`,
      teardown: `\nkill -INT $pv_server; wait $pv_server`,
    };
  }
  if (b.text.includes("tar czf") && b.text.includes("npm prune --omit=dev")) {
    // the build machine: a copy of the built checkout where the documented `npm prune
    // --omit=dev` can run (node_modules hard-linked, its lockfile copied: prune rewrites it),
    // so the tarball holds what the docs' does, and the install from it runs without dev tools
    const build = join(sandbox, "build-machine");
    return {
      env: {},
      setup: [
        `mkdir -p ${build}/scripts && cp -a package.json package-lock.json dist ${build}/ && cp -a scripts/ploop-offline ${build}/scripts/`,
        `cp -al node_modules ${build}/ 2>/dev/null || cp -a node_modules ${build}/`,
        `rm ${build}/node_modules/.package-lock.json && cp node_modules/.package-lock.json ${build}/node_modules/`,
        `cd ${build} && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error`,
      ].join("\n"),
    };
  }
  if (b.text.includes("ploopvault key list")) {
    const repo = join(sandbox, tag, "key-repo");
    return { env: { PLOOPVAULT_PASSWORD: "first operator", PLOOPVAULT_NEW_PASSWORD: "changed" }, setup: `ploopvault init --repo ${repo} --encrypt -q` };
  }
  if (b.text.includes("--force --seed /vz/private/101/root.hdd")) {
    // "when most of the disk is still there": the older copy the second line restores over
    return { env: {}, setup: `ploopvault restore 101:latest --format raw --target ${join(sandbox, tag, "srv-tmp", "101.raw")} -q` };
  }
  if (b.text.includes("vzctl") || b.text.includes("/etc/vz/conf/201.conf")) {
    // both continue the restore to a new CTID above
    return { env: {}, setup: `ploopvault restore 101:latest --target ${join(sandbox, "vz", "201", "root.hdd")} -q` };
  }
  return { env: {}, setup: "" };
}

/** What a block's commands must have done. */
async function afterRun(b: Block, tag: string, stdout: string): Promise<void> {
  if (b.text.includes("install -m 0644 contrib/")) {
    for (const unit of ["ploopvault-backup.service", "ploopvault-backup.timer"])
      expect((await stat(join(sandbox, "systemd", unit))).mode & 0o777, unit).toBe(0o644);
  }
  if (b.text.includes("git clone") || b.text.includes("tar czf")) {
    // the documented install made `ploopvault` on PATH a symlink to the built entry point
    const r = await bash("ploopvault --version", sandbox);
    expect(r.stdout).toMatch(/^ploopvault \d+\.\d+\.\d+ \(Node\.js/);
  }
  if (b.text.includes("ploopvault init --repo /srv/ploopvault")) {
    // the raw stream's hash is the raw restore's, and both are the raw disk 101 was made from
    expect(stdout).toContain(disk101Sha256);
    expect(await sha256(join(sandbox, tag, "tmp", "101.raw"))).toBe(disk101Sha256);
  }
  if (b.file === "docs/operations.md" && b.text.includes("losetup")) expect(await sha256(join(sandbox, tag, "srv-tmp", "101.raw"))).toBe(disk101Sha256);
  if (b.text.includes("ploopvault ls --repo s3://backups/node1")) {
    // dump of a file is its content; restore --include put the folder under the target
    expect(await readFile(join(sandbox, "work", "nginx.conf"), "utf8")).toBe(DOCS_TREE["etc/nginx/nginx.conf"]);
    expect(await readFile(join(sandbox, tag, "restore", "var", "www", "shop", "index.php"), "utf8")).toBe(DOCS_TREE["var/www/shop/index.php"]);
  }
  if (b.text.includes("export PLOOPVAULT_REPO=")) {
    expect(await readFile(join(sandbox, "work", "config.php"), "utf8")).toBe(DOCS_TREE["var/www/shop/config.php"]);
    expect(await readFile(join(sandbox, tag, "root", "config.php"), "utf8")).toBe(DOCS_TREE["var/www/shop/config.php"]);
    expect(await readFile(join(sandbox, tag, "from-tar", "var", "www", "shop", "index.php"), "utf8")).toBe(DOCS_TREE["var/www/shop/index.php"]);
    expect(await readFile(join(sandbox, tag, "restore", "etc", "nginx", "nginx.conf"), "utf8")).toBe(DOCS_TREE["etc/nginx/nginx.conf"]);
    // step 4: the container's root got the shop with its owner (www-data) and mode
    const index = await stat(join(sandbox, "vzroot", "101", "var", "www", "shop", "config.php"));
    expect({ uid: index.uid, gid: index.gid, mode: index.mode & 0o7777 }).toEqual({ uid: 33, gid: 33, mode: 0o640 });
  }
}

/** Files of the sandbox's container 101: what the file-restore examples name. */
const DOCS_TREE: Record<string, string> = {
  "etc/hostname": "ct101.example.test\n",
  "etc/nginx/nginx.conf": "user www-data;\nevents { worker_connections 768; }\nhttp { include /etc/nginx/sites-enabled/*; }\n",
  "var/www/shop/index.php": "<?php echo 'shop'; ?>\n",
  "var/www/shop/config.php": "<?php $db = 'shop';\n",
};

/**
 * Container 101 of the sandbox: a 64 MiB disk with a GPT and one partition holding an ext4
 * filesystem (as `ploop init` makes them) with the files the docs name, made by mkfs.ext4
 * -d and wrapped into a ploop v2 image (clusters shuffled). Returns the raw disk's SHA-256:
 * what every restore of it must produce.
 */
async function buildDocsDisk(ctDir: string): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), "pv-docs-disk-"));
  try {
    const tree = join(work, "tree");
    for (const [path, content] of Object.entries(DOCS_TREE)) {
      await mkdir(dirname(join(tree, path)), { recursive: true });
      await writeFile(join(tree, path), content, { mode: 0o644 });
    }
    await chmod(join(tree, "var/www/shop/config.php"), 0o640);
    for (const path of ["var/www/shop", "var/www/shop/index.php", "var/www/shop/config.php"]) await chown(join(tree, path), 33, 33);
    await symlink("shop", join(tree, "var/www/current"));
    const raw = join(work, "101.raw");
    const sh = async (cmd: string): Promise<string> => {
      const r = await execa("bash", ["-c", cmd], { reject: false });
      if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr}`);
      return String(r.stdout);
    };
    await sh(`truncate -s 64M ${raw} && sgdisk -n 1:2048:0 -t 1:8300 ${raw} >/dev/null`);
    const lastSector = Number(/Last sector: (\d+)/.exec(await sh(`sgdisk -i 1 ${raw}`))![1]);
    await sh(`mkfs.ext4 -q -F -b 4096 -E offset=${2048 * 512} -d ${tree} ${raw} ${Math.floor(((lastSector - 2047) * 512) / 4096)}`);
    const sha = (await sh(`sha256sum ${raw}`)).split(" ")[0]!;
    await mkdir(join(ctDir, "root.hdd"), { recursive: true });
    const image = await writeImageFromRaw(raw, join(ctDir, "root.hdd", "root.hds"), {
      version: 2,
      clusterBytes: 1 << 20,
      shuffle: true,
      seed: 101,
      skipZeroClusters: true,
    });
    await writeDescriptorFile(join(ctDir, "root.hdd"), { imageFile: "root.hds", sizeBytes: image.sizeBytes, clusterBytes: 1 << 20 });
    await cp(join(corpus().dir, "101", "ve.conf"), join(ctDir, "ve.conf"));
    return sha;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The state files encryption.md shows exist after an encrypted init, where it says. */
async function checkStateLayout(b: Block): Promise<void> {
  const state = join(sandbox, "layout-state");
  const repo = join(sandbox, "layout-repo");
  const r = await bash(`ploopvault init --repo ${repo} --encrypt -q --config '' --state-dir ${state}`, sandbox, { PLOOPVAULT_PASSWORD: "layout" });
  expect(r.code, r.stderr).toBe(0);
  const id = (JSON.parse(await readFile(join(repo, "config"), "utf8")) as { id: string }).id;
  const shownPaths = (b.text.match(/^<state dir>\/.*$/gm) ?? []).map((line) => line.split(/\s{2,}/)[0]!);
  expect(shownPaths.length).toBeGreaterThan(0);
  for (const shown of shownPaths) {
    const dir = join(state, dirname(shown.replace("<state dir>/", "")).replace("<repository id>", id));
    const name = shown.split("/").pop()!;
    const found = await readdir(dir);
    if (name.startsWith("<"))
      expect(
        found.some((f) => f.endsWith(".json")),
        `${shown} in ${dir}`,
      ).toBe(true);
    else expect(found, shown).toContain(name);
  }
}

async function sha256(path: string): Promise<string> {
  return (await bash(`sha256sum ${path}`, sandbox)).stdout.split(" ")[0]!;
}

/** The example config file, substituted, becomes the sandbox's config; a -v run shows each key applied. */
async function checkConfig(b: Block): Promise<void> {
  const text = substitute(b.text, "conf");
  await writeFile(join(sandbox, "etc", "ploopvault.conf"), text);
  const r = await bash("ploopvault init -q && ploopvault snapshots -v", sandbox);
  expect(r.code, r.stderr).toBe(0);
  for (const key of ["repo", "endpoint", "state-dir", "limit-upload", "limit-download", "log-file"])
    expect(r.stderr).toMatch(new RegExp(`ploopvault\\.conf:\\d+: ${key}\\b`));
}

async function runCron(b: Block, shared: boolean): Promise<void> {
  for (const line of b.text.split("\n")) {
    const m = /^(\S+\s+){5}root\s+(.*)$/.exec(line.trim());
    if (line.trim().startsWith("#") || m === null) continue;
    const command = substitute(m[2]!, "conf", b, shared);
    const r = await execa("/bin/sh", ["-c", command], { cwd: sandbox, env: { ...env }, extendEnv: false, reject: false, timeout: 300_000 });
    // cron mails whatever a job prints: a successful run must print nothing
    expect({ command, code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) }).toEqual({ command, code: 0, stdout: "", stderr: "" });
  }
}

async function runSystemd(b: Block): Promise<void> {
  const exec = /^ExecStart=(.*)$/m.exec(b.text)?.[1];
  const envFile = /^EnvironmentFile=(.*)$/m.exec(b.text)?.[1];
  expect(exec).toBeDefined();
  // "EnvironmentFile=-FILE": systemd reads FILE if it exists
  const optional = envFile?.startsWith("-") === true;
  const file = optional ? envFile!.slice(1) : envFile;
  const command = substitute(`set -a; ${optional ? `[ ! -e ${file} ] || ` : ""}. ${file}; set +a; ${exec}`, "conf");
  const r = await execa("/bin/sh", ["-c", command], { cwd: sandbox, env: { ...env }, extendEnv: false, reject: false, timeout: 300_000 });
  expect({ code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) }).toEqual({ code: 0, stdout: "", stderr: "" });
}

function checkIam(b: Block): void {
  const policy = JSON.parse(b.text) as { Version: string; Statement: { Effect: string; Action: string | string[]; Resource: string | string[] }[] };
  expect(policy.Version).toBe("2012-10-17");
  for (const s of policy.Statement) {
    expect(s.Effect).toBe("Allow");
    for (const a of [s.Action].flat()) expect(a).toMatch(/^s3:(ListBucket|GetObject|PutObject|DeleteObject|CreateBucket)$/);
    for (const r of [s.Resource].flat()) expect(r).toMatch(/^arn:aws:s3:::BUCKET(\/node1\/.*)?$/);
  }
}

/** A JSON format example: every field the docs show is in what init writes, with the same literal values. */
async function checkRepoFormat(b: Block): Promise<void> {
  const dir = join(sandbox, "format-repo");
  await rm(dir, { recursive: true, force: true });
  const r = await bash(`ploopvault init --repo ${dir} --encrypt -q --config ''`, sandbox, { PLOOPVAULT_PASSWORD: "format" });
  expect(r.code, r.stderr).toBe(0);
  const config = JSON.parse(await readFile(join(dir, "config"), "utf8")) as Record<string, unknown>;
  const keyFile = (await readdir(join(dir, "keys")))[0]!;
  const key = JSON.parse(await readFile(join(dir, "keys", keyFile), "utf8")) as Record<string, unknown>;
  const doc = JSON.parse(b.text.trim().startsWith("{") ? b.text : `{${b.text}}`) as Record<string, unknown>;
  const real = doc.format === "ploopvault-key" ? key : config;
  const compare = (shown: unknown, actual: unknown, path: string): void => {
    if (typeof shown === "string" && /^<.*>$/.test(shown)) {
      expect(typeof actual, path).toBe("string"); // a placeholder
    } else if (shown !== null && typeof shown === "object") {
      for (const [k, v] of Object.entries(shown)) compare(v, (actual as Record<string, unknown>)[k], `${path}.${k}`);
    } else if (path === ".encryption" || (doc.format === "ploopvault-key" && ["host", "user"].includes(path.slice(1)))) {
      // the unencrypted example's null; a key's host and user are the machine's
    } else if (path === ".kdf.N") {
      expect(actual, path).toBeTypeOf("number");
    } else {
      expect(actual, path).toEqual(shown);
    }
  };
  compare(doc, real, "");
}

/** `ploopvault COMMAND --help` as installed, run once per command for the whole file. */
const helpTexts = new Map<string, Promise<string>>();
function commandHelp(command: string): Promise<string> {
  let help = helpTexts.get(command);
  if (help === undefined) {
    help = bash(`ploopvault ${command} --help`, sandbox).then((r) => {
      expect(r.code, `ploopvault ${command} --help: ${r.stderr}`).toBe(0);
      return r.stdout;
    });
    helpTexts.set(command, help);
  }
  return help;
}

/** A synopsis: every flag after `ploopvault COMMAND` (continuation lines included) is in that command's --help. */
async function checkSynopsis(b: Block): Promise<void> {
  let command: string | null = null;
  for (const line of b.text.split("\n")) {
    const named = /^ploopvault ([a-z-]+)/.exec(line);
    if (named) command = named[1]!;
    if (command === null) continue;
    const help = await commandHelp(command);
    for (const flag of line.match(/--[a-z-]+/g) ?? []) expect(help, `${command} ${flag}`).toContain(flag);
  }
  expect(command, "a synopsis names a command").not.toBeNull();
}

/**
 * The append-only policy of docs/object-lock.md: valid IAM JSON, and nothing in it lets the
 * node destroy a backup: no Allow of a delete, retention bypass or bucket configuration
 * change on the repository bucket, and an explicit Deny of them.
 */
function checkAppendOnlyIam(b: Block): void {
  type Statement = { Effect: string; Action: string | string[]; Resource: string | string[] };
  const policy = JSON.parse(b.text) as { Version: string; Statement: Statement[] };
  expect(policy.Version).toBe("2012-10-17");
  const destroy = /^s3:(Delete|BypassGovernance|PutBucket|PutLifecycle)/;
  const onRepository = (r: string): boolean => /^arn:aws:s3:::BUCKET(\/.*)?$/.test(r);
  for (const st of policy.Statement) {
    expect(["Allow", "Deny"]).toContain(st.Effect);
    if (st.Effect !== "Allow") continue;
    const destructive = [st.Action].flat().filter((a) => destroy.test(a));
    if ([st.Resource].flat().some(onRepository)) expect(destructive, JSON.stringify(st)).toEqual([]);
  }
  const denied = policy.Statement.filter((st) => st.Effect === "Deny" && [st.Resource].flat().some((r) => r === "arn:aws:s3:::BUCKET/*")).flatMap((st) =>
    [st.Action].flat(),
  );
  for (const action of ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"]) expect(denied).toContain(action);
}

/** Every metric an example alert uses is in a metrics file that the example cron lines made (backup, check --fs). */
async function checkAlerts(b: Block): Promise<void> {
  const dir = join(sandbox, "metrics");
  const proms = (await readdir(dir)).filter((f) => f.endsWith(".prom"));
  const metrics = (await Promise.all(proms.map((f) => readFile(join(dir, f), "utf8")))).join("\n");
  for (const name of b.text.match(/ploopvault_[a-z_]+/g) ?? []) expect(metrics, name).toMatch(new RegExp(`^${name}\\{`, "m"));
}
