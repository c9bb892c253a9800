/**
 * `npm run demo`: the whole job end to end on an embedded default, in a temporary
 * directory: a generated sample host (4 containers, real ext4 filesystems in ploop images),
 * a local directory repository, backups (the second one of an unchanged disk stores
 * nothing), the list of backups, restores as raw and as ploop, verified bit-identical
 * against the disks' known content, and a full repository check.
 *   node dist/scripts/demo.js [WORKDIR]     (keeps WORKDIR if given, else cleans up)
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { openLogicalDisk } from "../src/ploop/disk.js";
import { buildCorpus } from "./corpus.js";

const CLI = resolve(fileURLToPath(import.meta.url), "..", "..", "src", "cli.js");

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const part of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(part as Buffer);
  return h.digest("hex");
}

async function sha256Disk(descriptor: string): Promise<string> {
  const disk = await openLogicalDisk(descriptor);
  const h = createHash("sha256");
  const buf = Buffer.alloc(8 << 20);
  try {
    for (let at = 0; at < disk.sizeBytes; at += buf.length) {
      const view = buf.subarray(0, Math.min(buf.length, disk.sizeBytes - at));
      await disk.read(at, view);
      h.update(view);
    }
  } finally {
    await disk.close();
  }
  return h.digest("hex");
}

async function step(title: string, args: string[]): Promise<string> {
  process.stdout.write(`\n$ ploopvault ${args.join(" ")}\n`);
  const r = await execa(process.execPath, [CLI, ...args], { reject: false, stdout: "pipe", stderr: "inherit" });
  if (r.stdout) process.stdout.write(`${r.stdout}\n`);
  if (r.exitCode !== 0) throw new Error(`${title} failed (exit ${r.exitCode})`);
  return r.stdout;
}

async function main(): Promise<void> {
  const keep = process.argv[2];
  const work = keep ? resolve(keep) : await mkdtemp(join(tmpdir(), "ploopvault-demo-"));
  const privateRoot = join(work, "vz", "private");
  const repo = join(work, "repo");
  const state = join(work, "state");
  const common = ["--repo", repo, "--state-dir", state];
  try {
    process.stdout.write(`ploopvault demo in ${work}\n\n1. a sample host: 4 containers with real ext4 filesystems in ploop images\n`);
    const containers = await buildCorpus(privateRoot, { scale: "small", log: (line) => process.stdout.write(`   ${line}\n`) });

    process.stdout.write("\n2. a local directory repository and a backup of every container\n");
    await step("init", ["init", ...common]);
    for (const ct of containers) await step(`backup ${ct.ctid}`, ["backup", ...common, "--disk", ct.descriptorPath]);

    process.stdout.write("\n3. a second backup of an unchanged container stores nothing new\n");
    await step("backup again", ["backup", ...common, "--disk", containers[0]!.descriptorPath]);
    await step("snapshots", ["snapshots", ...common]);

    process.stdout.write("\n4. restore and verify against the original disks\n");
    for (const ct of containers) {
      const raw = join(work, `restored-${ct.ctid}.raw`);
      await step(`restore ${ct.ctid}`, ["restore", ...common, `${ct.ctid}:latest`, "--format", "raw", "--target", raw, "-q"]);
      const got = await sha256File(raw);
      if (got !== ct.sha256) throw new Error(`restored disk of ${ct.ctid} differs from the original (${got} != ${ct.sha256})`);
      process.stdout.write(`   ${ct.ctid}: raw restore is bit-identical to the original disk (sha256 ${got.slice(0, 16)}...)\n`);
      await rm(raw);
    }
    const ploopTarget = join(work, "vz", "private", "201", "root.hdd");
    await step("restore as ploop", ["restore", ...common, "104:latest", "--target", ploopTarget]);
    const ploopSha = await sha256Disk(join(ploopTarget, "DiskDescriptor.xml"));
    const expected = containers.find((c) => c.ctid === "104")!.sha256;
    if (ploopSha !== expected) throw new Error("ploop restore of 104 differs from the original disk");
    process.stdout.write(`   104 restored as container 201 (ploop image + DiskDescriptor.xml + ve.conf): bit-identical\n`);

    process.stdout.write("\n5. verify the repository, reading every chunk\n");
    await step("check", ["check", ...common, "--read-data"]);
    process.stdout.write("\ndemo finished: every restore verified.\n");
  } finally {
    if (!keep) await rm(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
