/**
 * Raw input for generic tools: each corpus disk flattened ONCE by the real ploop
 * (scripts/ploop-offline: Debian's ploop without the kernel module), the way an admin
 * would hand a raw disk file to restic or borg. Not timed. The result is checked against
 * the corpus' SHA256SUMS and made sparse (`fallocate --dig-holes`), as a raw disk file
 * normally is; results are cached next to their hash so a second bench run reuses them.
 */
import { copyFile, cp, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { execa } from "execa";
import { sha256File } from "./files.js";

export interface CorpusDisk {
  ct: string;
  descriptorPath: string;
  imagePath: string;
  /** SHA-256 of the logical disk, from the corpus' SHA256SUMS. */
  sha256: string;
}

async function ploop(ploopOffline: string, args: string[]): Promise<string> {
  const r = await execa(ploopOffline, args, { reject: false, all: true });
  if (r.exitCode !== 0)
    throw new Error(
      `ploop ${args.join(" ")} exited ${r.exitCode}: ${String(r.all ?? "")
        .trim()
        .split("\n")
        .slice(-3)
        .join(" / ")}`,
    );
  return String(r.all ?? "");
}

/** `OUT/<ct>.raw`, the logical disk as the real ploop converts it; returns its path. */
export async function flattenDisk(disk: CorpusDisk, outDir: string, ploopOffline: string, log: (line: string) => void): Promise<string> {
  await mkdir(outDir, { recursive: true });
  const out = join(outDir, `${disk.ct}.raw`);
  const stamp = `${out}.sha256`;
  try {
    if ((await readFile(stamp, "utf8")).trim() === disk.sha256 && (await stat(out)).isFile()) return out;
  } catch {
    // not flattened yet
  }
  await rm(stamp, { force: true });
  const started = performance.now();
  const scratch = await mkdtemp(join(outDir, `.flatten-${disk.ct}-`));
  try {
    const work = join(scratch, "disk");
    await cp(dirname(disk.descriptorPath), work, { recursive: true, filter: (src) => !src.endsWith(".lck") });
    const dd = join(work, basename(disk.descriptorPath));
    const images = (await ploop(ploopOffline, ["snapshot-list", "-H", "-o", "fname", dd])).split("\n").filter((l) => l.trim().startsWith("/"));
    if (images.length > 1) await ploop(ploopOffline, ["snapshot-merge", "-A", dd]);
    await ploop(ploopOffline, ["convert", "-f", "raw", dd]);
    const rawFile = (await ploop(ploopOffline, ["snapshot-list", "-H", "-o", "fname", dd]))
      .split("\n")
      .map((l) => l.trim())
      .find((l) => l.startsWith("/"));
    if (rawFile === undefined) throw new Error(`ploop snapshot-list of ${dd} shows no image after convert`);
    try {
      await rename(rawFile, out);
    } catch {
      await copyFile(rawFile, out);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const r = await execa("fallocate", ["--dig-holes", out], { reject: false });
  if (r.exitCode !== 0) log(`fallocate --dig-holes ${out} failed (${String(r.stderr).trim()}): raw file stays non-sparse`);
  const sha = await sha256File(out);
  if (sha !== disk.sha256) throw new Error(`${out}: ploop's flattening has SHA-256 ${sha}, the corpus says ${disk.sha256}`);
  await writeFile(stamp, `${sha}\n`);
  log(`flattened ${disk.ct} with ploop convert -f raw in ${((performance.now() - started) / 1000).toFixed(1)} s (not timed)`);
  return out;
}
