/**
 * The file-restore disks (scripts/fs-corpus.ts: 201 GPT ext4, 202 MBR ext3, 203 whole-disk
 * ext4 with inline data) and the real ploop's flattening of each, built once per machine
 * and shared by the test files that need them (they run in separate processes): the first
 * one builds under a lock, the others wait. The cache lives in the system temp directory,
 * named after a hash of the builder and the e2fsprogs version, so a changed builder builds
 * afresh and removes older copies. Tests must not modify these files: copy first.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm, stat, writeFile, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { buildFsCorpus, type FsCorpusDisk } from "../../scripts/fs-corpus.js";
import { isProcessAlive } from "../../src/util/process-alive.js";
import { ploopFlatten, REPO_ROOT } from "./ploop-tool.js";

export interface FsCorpus {
  dir: string;
  disks: FsCorpusDisk[];
  /** ploop's flattening of each disk, sparse: ct -> raw file. */
  flat: Record<string, string>;
}

export type { FsCorpusDisk };

const PREFIX = "ploopvault-fs-corpus-";

async function cacheKey(): Promise<string> {
  const h = createHash("sha256");
  for (const f of ["dist/scripts/fs-corpus.js", "dist/scripts/corpus.js", "dist/src/ploop/writer.js"]) h.update(await readFile(join(REPO_ROOT, f)));
  h.update((await execa("mke2fs", ["-V"], { reject: false, all: true })).all ?? "");
  return h.digest("hex").slice(0, 16);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function build(dir: string): Promise<void> {
  const work = `${dir}.building`;
  await rm(work, { recursive: true, force: true });
  await mkdir(join(work, "flat"), { recursive: true });
  const disks = await buildFsCorpus(join(work, "private"));
  const flat: Record<string, string> = {};
  for (const d of disks) {
    const dense = join(work, "flat", `${d.ctid}.dense`);
    await ploopFlatten(d.descriptorPath, dense);
    flat[d.ctid] = join(dir, "flat", `${d.ctid}.raw`);
    await execa("cp", ["--sparse=always", dense, join(work, "flat", `${d.ctid}.raw`)]);
    await rm(dense);
  }
  const manifest = { disks: disks.map((d) => ({ ...d, descriptorPath: d.descriptorPath.replace(work, dir) })), flat };
  await writeFile(join(work, "corpus.json"), JSON.stringify(manifest));
  await rename(work, dir);
}

/** The corpus, building it if this machine has no current copy. */
export async function fsCorpus(): Promise<FsCorpus> {
  const key = await cacheKey();
  const dir = join(tmpdir(), `${PREFIX}${key}`);
  const lock = `${dir}.lock`;
  for (let waited = 0; ; waited++) {
    if (await exists(join(dir, "corpus.json"))) {
      const m = JSON.parse(await readFile(join(dir, "corpus.json"), "utf8")) as { disks: FsCorpusDisk[]; flat: Record<string, string> };
      return { dir, disks: m.disks, flat: m.flat };
    }
    try {
      await mkdir(lock);
    } catch {
      const holder = Number(await readFile(join(lock, "pid"), "utf8").catch(() => "0"));
      if (holder > 0 && !isProcessAlive(holder)) await rm(lock, { recursive: true, force: true });
      if (waited > 600) throw new Error(`fs corpus: still locked by ${holder} after 10 minutes: ${lock}`);
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    try {
      await writeFile(join(lock, "pid"), String(process.pid));
      if (!(await exists(join(dir, "corpus.json")))) {
        for (const old of await readdir(tmpdir())) {
          if (old.startsWith(PREFIX) && !old.startsWith(`${PREFIX}${key}`) && !old.endsWith(".lock"))
            await rm(join(tmpdir(), old), { recursive: true, force: true });
        }
        await build(dir);
      }
    } finally {
      await rm(lock, { recursive: true, force: true });
    }
  }
}

export function diskOf(corpus: FsCorpus, ct: string): FsCorpusDisk {
  const d = corpus.disks.find((x) => x.ctid === ct);
  if (d === undefined) throw new Error(`fs corpus has no disk ${ct}`);
  return d;
}
