/**
 * Build a corpus of container disks laid out like an OpenVZ host's private area:
 *
 *   OUT/<CTID>/root.hdd/{root.hds,DiskDescriptor.xml}   ploop v2, 1 MiB clusters, shuffled
 *   OUT/<CTID>/ve.conf
 *   OUT/SHA256SUMS                                       "<ctid> <sha256 of the logical disk>"
 *
 * Each disk is a real ext4 filesystem (mkfs.ext4 -d, no mounting needed) wrapped into a
 * ploop image by writeImageFromRaw:
 *   101  template tree on a 256M disk (bench: 1900M)
 *   102  the same tree on a smaller disk, 192M (bench: 1500M): same files, other offsets
 *   103  template + extra files (8 MiB random + ~20 MB of /usr/share/doc)
 *   104  101 after a "day" of changes made in place with `debugfs -w`, the way a running
 *        container changes its disk: three 2 MiB log files written, one binary replaced
 * Everything random is seeded, UUIDs/hash seeds and mtimes are fixed, and the physical
 * cluster order is seeded by the CTID, so on a given machine (the template comes from its
 * /usr) two builds differ only in inode ctime/atime bytes (measured: ~4 KB of inode
 * tables per disk), which mkfs copies from the host files and no option can fix.
 *
 * CLI: node dist/scripts/corpus.js OUT [--scale small|bench] [--template DIR]
 */
import { createCipheriv, createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, cp, lstat, mkdir, mkdtemp, open, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { execa } from "execa";
import { writeDescriptorFile, writeImageFromRaw } from "../src/ploop/writer.js";

export type CorpusScale = "small" | "bench";

export interface CorpusOptions {
  scale?: CorpusScale;
  /** Use this directory tree as the template instead of picking files from /usr. */
  templateDir?: string;
  /** Progress lines (default: silent). */
  log?: (line: string) => void;
}

export interface CorpusContainer {
  ctid: string;
  /** OUT/<ctid>/root.hdd/DiskDescriptor.xml */
  descriptorPath: string;
  imagePath: string;
  /** Virtual disk size. */
  sizeBytes: number;
  /** Clusters holding data (the rest are holes). */
  allocatedClusters: number;
  /** SHA-256 of the logical disk (the raw filesystem image). */
  sha256: string;
}

const CLUSTER_BYTES = 1 << 20;
const MIB = 1 << 20;
/** Fixed timestamp (2023-11-14) for files and for e2fsprogs (E2FSPROGS_FAKE_TIME). */
const FIXED_TIME = 1_700_000_000;

interface ScaleParams {
  sources: string[];
  maxFileBytes: number;
  templateBytes: number;
  diskMiB: number;
  smallDiskMiB: number;
  docBytes: number;
}

const SCALES: Record<CorpusScale, ScaleParams> = {
  small: { sources: ["/usr/bin"], maxFileBytes: 2 * MIB, templateBytes: 60 * MIB, diskMiB: 256, smallDiskMiB: 192, docBytes: 20 * MIB },
  bench: {
    sources: ["/usr/bin", "/usr/sbin", "/usr/lib", "/usr/share"],
    maxFileBytes: 32 * MIB,
    templateBytes: 300 * MIB,
    diskMiB: 1900,
    smallDiskMiB: 1500,
    docBytes: 20 * MIB,
  },
};

/** Regular files under `root` in sorted order (symlinks and unreadable dirs skipped). */
async function* walkFiles(root: string): AsyncGenerator<{ path: string; size: number }> {
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch {
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const path = join(root, e.name);
    if (e.isDirectory()) yield* walkFiles(path);
    else if (e.isFile()) yield { path, size: (await lstat(path)).size };
  }
}

/** Copy files from `sources` (sorted walk) into `dest` until `limitBytes`; returns bytes copied. */
async function copySubset(sources: string[], dest: string, maxFileBytes: number, limitBytes: number): Promise<number> {
  let total = 0;
  for (const source of sources) {
    const prefix = source.split("/").filter(Boolean).pop() ?? "files";
    for await (const f of walkFiles(source)) {
      if (f.size === 0 || f.size > maxFileBytes) continue;
      if (total + f.size > limitBytes) return total;
      const target = join(dest, prefix, relative(source, f.path));
      await mkdir(resolve(target, ".."), { recursive: true });
      try {
        await copyFile(f.path, target);
      } catch {
        continue; // unreadable (permissions, vanished): just skip it
      }
      await utimes(target, FIXED_TIME, FIXED_TIME);
      total += f.size;
    }
  }
  return total;
}

/** Fixed times on every directory too (mkfs -d copies them): reproducible filesystems. */
async function fixDirTimes(root: string): Promise<void> {
  for (const e of await readdir(root, { withFileTypes: true })) if (e.isDirectory()) await fixDirTimes(join(root, e.name));
  await utimes(root, FIXED_TIME, FIXED_TIME);
}

/** Deterministic pseudo-random bytes (AES-256-CTR keystream of a seed): incompressible, reproducible. */
export function seededBytes(seed: string, length: number): Buffer {
  const key = createHash("sha256").update(`ploopvault corpus ${seed}`).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

/** A fixed UUID per container so mkfs output is reproducible. */
export function uuidFor(tag: string): string {
  const h = createHash("sha256").update(`ploopvault corpus uuid ${tag}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const e2env = { E2FSPROGS_FAKE_TIME: String(FIXED_TIME) };

async function run(cmd: string, args: string[], input?: string): Promise<void> {
  try {
    await execa(cmd, args, { env: e2env, ...(input === undefined ? {} : { input }) });
  } catch (error) {
    const e = error as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === "ENOENT") throw new Error(`corpus: ${cmd} not found (apt-get install e2fsprogs)`);
    throw new Error(`corpus: ${cmd} ${args.join(" ")} failed: ${(e.stderr ?? e.shortMessage ?? String(error)).trim().split("\n")[0]}`);
  }
}

async function mkfs(tree: string, raw: string, sizeMiB: number, tag: string): Promise<void> {
  const uuid = uuidFor(tag);
  await run("mkfs.ext4", ["-q", "-F", "-U", uuid, "-E", `lazy_itable_init=0,hash_seed=${uuid}`, "-d", tree, raw, `${sizeMiB}M`]);
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MIB })) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** The first file of the tree between 256 KiB and 2 MiB: the "binary" replaced on day two. */
async function pickVictim(tree: string): Promise<string | null> {
  for await (const f of walkFiles(tree)) {
    const rel = relative(tree, f.path);
    // debugfs command files split on blanks: keep to plain names.
    if (f.size >= 256 << 10 && f.size <= 2 * MIB && /^[A-Za-z0-9._/+-]+$/.test(rel)) return rel;
  }
  return null;
}

/** 104: a day of changes applied to the filesystem image in place (no mount). */
async function dayOfChanges(raw: string, tree: string, work: string): Promise<void> {
  const commands = ["mkdir log"];
  for (let i = 1; i <= 3; i++) {
    const log = join(work, `day-${i}.log`);
    await writeFile(log, seededBytes(`104 log ${i}`, 2 * MIB));
    commands.push(`write ${log} log/day-${i}.log`);
  }
  const victim = await pickVictim(tree);
  if (victim !== null) {
    // A new version of the binary: mostly the old bytes, a patched region, a bit longer.
    const fh = await open(join(tree, victim), "r");
    const old = await fh.readFile();
    await fh.close();
    const patched = Buffer.concat([old, seededBytes("104 victim tail", 4096)]);
    seededBytes("104 victim patch", 64 << 10).copy(patched, Math.floor(old.length / 2) - (32 << 10));
    const updated = join(work, "victim.new");
    await writeFile(updated, patched);
    commands.push(`rm ${victim}`, `write ${updated} ${victim}`);
  }
  await run("debugfs", ["-w", "-f", "-", raw], `${commands.join("\n")}\n`);
}

function veConf(ctid: string): string {
  return [
    `# ploopvault test corpus container ${ctid}`,
    `VE_ROOT="/vz/root/${ctid}"`,
    `VE_PRIVATE="/vz/private/${ctid}"`,
    `OSTEMPLATE="corpus"`,
    `HOSTNAME="ct${ctid}.corpus.test"`,
    "",
  ].join("\n");
}

/** Wrap a raw filesystem image as OUT/<ctid>/root.hdd and write ve.conf. */
async function container(outDir: string, ctid: string, raw: string): Promise<CorpusContainer> {
  const dir = join(outDir, ctid, "root.hdd");
  await rm(join(outDir, ctid), { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const imagePath = join(dir, "root.hds");
  const [result, sha256] = await Promise.all([
    writeImageFromRaw(raw, imagePath, { version: 2, clusterBytes: CLUSTER_BYTES, shuffle: true, seed: Number(ctid), skipZeroClusters: true }),
    sha256File(raw),
  ]);
  const descriptorPath = await writeDescriptorFile(dir, { imageFile: "root.hds", sizeBytes: result.sizeBytes, clusterBytes: CLUSTER_BYTES });
  await writeFile(join(outDir, ctid, "ve.conf"), veConf(ctid));
  return { ctid, descriptorPath, imagePath, sizeBytes: result.sizeBytes, allocatedClusters: result.allocated.length, sha256 };
}

export async function buildCorpus(outDir: string, options: CorpusOptions = {}): Promise<CorpusContainer[]> {
  const scale = options.scale ?? "small";
  const p = SCALES[scale];
  const log = options.log ?? ((): void => {});
  const out = resolve(outDir);
  await mkdir(out, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), "ploopvault-corpus-"));
  try {
    let template = options.templateDir === undefined ? undefined : resolve(options.templateDir);
    if (template === undefined) {
      template = join(work, "template");
      await mkdir(template);
      const bytes = await copySubset(p.sources, template, p.maxFileBytes, p.templateBytes);
      log(`template: ${(bytes / MIB).toFixed(0)} MiB from ${p.sources.join(", ")}`);
    }
    const tree3 = join(work, "tree103");
    await cp(template, tree3, { recursive: true, preserveTimestamps: true });
    await mkdir(join(tree3, "extra"));
    await writeFile(join(tree3, "extra", "random.bin"), seededBytes("103 extra", 8 * MIB));
    const docBytes = await copySubset(["/usr/share/doc"], tree3, 4 * MIB, p.docBytes);
    log(`103 extras: 8 MiB random + ${(docBytes / MIB).toFixed(0)} MiB of /usr/share/doc`);

    if (options.templateDir === undefined) await fixDirTimes(template);
    await fixDirTimes(tree3);
    const raw = (ct: string): string => join(work, `${ct}.raw`);
    await Promise.all([mkfs(template, raw("101"), p.diskMiB, "101"), mkfs(template, raw("102"), p.smallDiskMiB, "102")]);
    await mkfs(tree3, raw("103"), p.diskMiB, "103");
    await run("cp", ["--sparse=always", raw("101"), raw("104")]);
    await dayOfChanges(raw("104"), template, work);
    log("filesystems built");

    const result: CorpusContainer[] = [];
    for (const pair of [
      ["101", "102"],
      ["103", "104"],
    ] as const) {
      const done = await Promise.all(pair.map((ct) => container(out, ct, raw(ct))));
      for (const c of done) {
        result.push(c);
        await rm(raw(c.ctid));
        log(`${c.ctid}: ${(c.sizeBytes / MIB).toFixed(0)} MiB disk, ${c.allocatedClusters} MiB allocated`);
      }
    }
    await writeFile(join(out, "SHA256SUMS"), result.map((c) => `${c.ctid} ${c.sha256}\n`).join(""));
    return result;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<number> {
  const usage = "usage: node dist/scripts/corpus.js OUT [--scale small|bench] [--template DIR]";
  let outDir: string | undefined;
  const options: CorpusOptions = { log: (line) => process.stderr.write(`corpus: ${line}\n`) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--scale") {
      const v = argv[++i];
      if (v !== "small" && v !== "bench") {
        process.stderr.write(`${usage}\n`);
        return 2;
      }
      options.scale = v;
    } else if (a === "--template") {
      const v = argv[++i];
      if (v === undefined) {
        process.stderr.write(`${usage}\n`);
        return 2;
      }
      options.templateDir = v;
    } else if (a === "-h" || a === "--help") {
      process.stdout.write(`${usage}\n`);
      return 0;
    } else if (outDir === undefined && !a.startsWith("-")) {
      outDir = a;
    } else {
      process.stderr.write(`corpus: unexpected argument ${a}\n${usage}\n`);
      return 2;
    }
  }
  if (outDir === undefined) {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  const started = Date.now();
  const cts = await buildCorpus(outDir, options);
  for (const c of cts) process.stdout.write(`${c.ctid} ${c.descriptorPath} ${c.sha256}\n`);
  process.stderr.write(`corpus: done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`corpus: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
