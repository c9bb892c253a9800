/**
 * The real ploop (Debian 1.15) as the test oracle, run through the project's own
 * scripts/ploop-offline wrapper (no kernel module needed; see that script).
 * Set PLOOP_BIN to use another ploop binary.
 */
import { copyFile, cp, mkdtemp, readFile, readdir, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const PLOOP_OFFLINE = join(REPO_ROOT, "scripts", "ploop-offline");

export interface PloopResult {
  exitCode: number;
  /** stdout and stderr interleaved. */
  output: string;
}

/** Run `ploop ARGS...` (never throws on a non-zero exit; check exitCode). */
export async function runPloop(args: readonly string[], options: { cwd?: string } = {}): Promise<PloopResult> {
  const r = await execa(PLOOP_OFFLINE, args, { reject: false, all: true, ...(options.cwd === undefined ? {} : { cwd: options.cwd }) });
  return { exitCode: r.exitCode ?? -1, output: r.all ?? "" };
}

/** Like runPloop, but a non-zero exit is an error carrying ploop's output. */
export async function ploopOk(args: readonly string[], options: { cwd?: string } = {}): Promise<string> {
  const r = await runPloop(args, options);
  if (r.exitCode !== 0) throw new Error(`ploop ${args.join(" ")} exited ${r.exitCode}:\n${r.output}`);
  return r.output;
}

/** Full read-only consistency check of one image file (exit 0 = clean). */
export function ploopCheck(imagePath: string): Promise<PloopResult> {
  return runPloop(["check", "-f", "-c", "-r", imagePath]);
}

export interface PloopInitOptions {
  /** Size as ploop takes it: "100M", "10G", or sectors. */
  size: string | number;
  version?: 1 | 2;
  /** Cluster size in sectors (ploop -b). */
  clusterSectors?: number;
}

/** `ploop init -t none`: empty image + DiskDescriptor.xml next to it. */
export async function ploopInit(imagePath: string, options: PloopInitOptions): Promise<string> {
  const args = ["init", "-s", String(options.size), "-t", "none", "-v", String(options.version ?? 2)];
  if (options.clusterSectors !== undefined) args.push("-b", String(options.clusterSectors));
  await ploopOk([...args, imagePath]);
  return join(dirname(imagePath), "DiskDescriptor.xml");
}

/** Offline `ploop snapshot -u GUID DD`: the current top is frozen under GUID, a new empty top is created. */
export async function ploopSnapshot(descriptorPath: string, guid: string): Promise<void> {
  await ploopOk(["snapshot", "-u", guid, descriptorPath]);
}

/** `ploop snapshot-merge` (default: the top's parent into the top), `-u GUID`, or `-A` (all). */
export async function ploopSnapshotMerge(descriptorPath: string, options: { guid?: string; all?: boolean } = {}): Promise<void> {
  const args = ["snapshot-merge"];
  if (options.all) args.push("-A");
  if (options.guid !== undefined) args.push("-u", options.guid);
  await ploopOk([...args, descriptorPath]);
}

export interface SnapshotListEntry {
  guid: string;
  parentGuid: string;
  /** Absolute path as ploop prints it. */
  file: string;
}

/** `ploop snapshot-list -H -o uuid,parent_uuid,fname [-u GUID]`: the chain, top first. */
export async function ploopSnapshotList(descriptorPath: string, guid?: string): Promise<SnapshotListEntry[]> {
  const args = ["snapshot-list", "-H", "-o", "uuid,parent_uuid,fname"];
  if (guid !== undefined) args.push("-u", guid);
  const out = await ploopOk([...args, descriptorPath]);
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      const [g, p, ...rest] = l.split(/\s+/);
      return { guid: g!.toLowerCase(), parentGuid: p!.toLowerCase(), file: rest.join(" ") };
    });
}

const TOP_GUID = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";

/**
 * The disk's logical content as a raw file at `outRaw`, produced by the real ploop only.
 * Works on a scratch copy of the descriptor's directory:
 *  1. with `topGuid` (the disk as of snapshot S): `snapshot-switch -u S` puts a new empty
 *     top on S (and removes the old top);
 *  2. images not on the top's path (branches) are deleted leaf by leaf with
 *     `snapshot-delete` (a leaf has no child, so nothing is merged);
 *  3. `snapshot-merge -A` when more than one image is left (1.15 refuses -A on a single
 *     image, exit 38, and on a tree, "it has 2 children");
 *  4. `convert -f raw` (skipped when the disk is already in raw mode): replaces the single
 *     image file in place with a full, non-sparse raw file of the disk size under the
 *     same name and marks it Plain. On a chain it would convert only the base (giving a
 *     raw-mode chain with ploop1 deltas), hence the merge first.
 */
export async function ploopFlatten(descriptorPath: string, outRaw: string, options: { topGuid?: string } = {}): Promise<void> {
  const srcDir = dirname(resolve(descriptorPath));
  const scratch = await mkdtemp(join(tmpdir(), "ploopvault-flatten-"));
  try {
    const work = join(scratch, "disk");
    // Descriptor-relative File paths make the copy self-contained; skip ploop's lock file.
    await cp(srcDir, work, { recursive: true, filter: (src) => !src.endsWith(".lck") });
    const dd = join(work, basename(descriptorPath));
    const all = await ploopSnapshotList(dd);
    // An absolute File path would make ploop merge into the originals: refuse.
    const outside = all.find((c) => !c.file.startsWith(`${work}/`));
    if (outside !== undefined) throw new Error(`ploopFlatten: ${outside.file} is outside the copied directory`);
    const wanted = options.topGuid?.toLowerCase();
    if (wanted !== undefined && wanted !== TOP_GUID) await ploopOk(["snapshot-switch", "-u", wanted, dd]);
    for (;;) {
      const images = await ploopSnapshotList(dd);
      const path = new Set((await ploopSnapshotList(dd, TOP_GUID)).map((e) => e.guid));
      const leaf = images.find((e) => !path.has(e.guid) && !images.some((o) => o.parentGuid === e.guid));
      if (leaf === undefined) break;
      await ploopOk(["snapshot-delete", "-u", leaf.guid, dd]);
    }
    if ((await ploopSnapshotList(dd)).length > 1) await ploopSnapshotMerge(dd, { all: true });
    // A raw-mode disk is already raw after the merge (1.15: "Converting raw image is not supported").
    if (!/<Type>\s*Plain\s*<\/Type>/.test(await readFile(dd, "utf8"))) await ploopOk(["convert", "-f", "raw", dd]);
    const after = await ploopSnapshotList(dd);
    if (after.length !== 1) throw new Error(`ploopFlatten: ${after.length} images left after merge+convert`);
    const rawFile = after[0]!.file;
    try {
      await rename(rawFile, outRaw);
    } catch {
      await copyFile(rawFile, outRaw); // other filesystem
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Files in a directory, for "did ploop leave something behind" assertions. */
export async function listDir(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}
