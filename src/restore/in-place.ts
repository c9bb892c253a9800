/**
 * restore --in-place: a raw restore over an existing file (yesterday's restore of the same
 * disk) that writes only what differs. Each chunk entry's range of the file is read and
 * hashed with the repository's chunk id; equal ranges are left alone, others are fetched
 * (verified) and only their differing 4 KiB blocks written. Hole entries (and chunks of
 * zeros) are made zeros where they are not: a hole is punched with util-linux
 * `fallocate --punch-hole` (Node has no fallocate), and the range is read back; where it
 * still is not zeros (no `fallocate`, a file system without hole punching) zeros are
 * written.
 *
 * Safety: nothing at the target's name is ever half rewritten. Before the first byte
 * changes, FILE is renamed to FILE.ploopvault-partial (IN_PLACE_SUFFIX) beside it and the
 * directory synced; the work happens there; at the end the file is cut to the disk's
 * logical size, synced, and renamed back. A crash or a failure leaves only
 * FILE.ploopvault-partial, a mix of old and new bytes under a name nothing takes for a
 * disk; the same command run again finds it (and no FILE) and resumes: the same per-chunk
 * check makes every range right whatever state it was left in.
 */
import { execFile } from "node:child_process";
import { lstat, open, rename, type FileHandle } from "node:fs/promises";
import { readFully, writeFully } from "../util/positional-io.js";
import type { Stats } from "node:fs";
import { dirname } from "node:path";
import { errorLine, PloopvaultError } from "../errors.js";
import type { Manifest, ManifestEntry } from "../manifest/format.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { forEachConcurrent } from "../util/limiter.js";
import { PRIVATE_FILE_MODE } from "../util/private-fs.js";
import { ChunkSupplier, chunkEntries } from "./chunk-supplier.js";
import { fsReason, syncDir, syncTargetDirectory, targetError, type RestoreOptions, type RestoreResult } from "./restore.js";
import { isAllZero } from "../util/zeros.js";

/** The name an in-place restore works under (beside the target): FILE + this suffix. */
export const IN_PLACE_SUFFIX = ".ploopvault-partial";

export function inPlaceMarker(target: string): string {
  return `${target}${IN_PLACE_SUFFIX}`;
}

export interface InPlaceResult extends RestoreResult {
  /** Continued from a marker left by an interrupted run. */
  resumed: boolean;
  /** Chunk entries whose range already held the right bytes (seededChunks counts them too). */
  unchangedChunks: number;
  /** Data bytes written (only the differing 4 KiB blocks of the fetched chunks). */
  writtenBytes: number;
  /** Bytes made zeros (holes punched or zeros written) where the disk has holes. */
  zeroedBytes: number;
  /** Bytes of the file read to compare (its holes are not read when filefrag lists them). */
  readBytes: number;
}

/** What lstat says of a path, as far as the start decision needs it (null: absent). */
export interface PathState {
  kind: "file" | "directory" | "other";
  links: number;
}

export function pathState(st: Stats | null): PathState | null {
  if (st === null) return null;
  return { kind: st.isFile() ? "file" : st.isDirectory() ? "directory" : "other", links: st.nlink };
}

/** How to resume, for every message that leaves the marker behind. */
export function resumeHint(target: string): string {
  return `${target} is now ${inPlaceMarker(target)}, partly rewritten: run the same restore --in-place again to resume from it`;
}

/**
 * Start a new in-place restore or resume one, from the states of the target and of its
 * marker; the refusals are one line each. Pure: the caller lstat()s both paths.
 */
export function decideInPlaceStart(target: string, targetState: PathState | null, markerState: PathState | null, force: boolean): "start" | "resume" {
  const marker = inPlaceMarker(target);
  const notFile = (path: string, state: PathState): string =>
    `restore target ${path} is ${state.kind === "directory" ? "a directory" : "not a regular file (a symlink, device or socket)"}: --in-place rewrites a regular file`;
  const sharedFile = (path: string, state: PathState): string =>
    `restore target ${path} has ${state.links} hard links: rewriting it in place would change the other names too (copy it first, or restore without --in-place)`;
  if (markerState !== null) {
    if (targetState !== null)
      throw new PloopvaultError(
        `${marker} exists beside restore target ${target}: --in-place resumes from it only when ${target} is absent (remove the one you do not want)`,
      );
    if (markerState.kind !== "file") throw new PloopvaultError(notFile(marker, markerState));
    if (markerState.links > 1) throw new PloopvaultError(sharedFile(marker, markerState));
    if (!force) throw new PloopvaultError(`${marker} is left from an interrupted restore --in-place of ${target} (add --force to resume it)`);
    return "resume";
  }
  if (targetState === null)
    throw new PloopvaultError(`restore target ${target} does not exist: --in-place rewrites an existing file (leave out --in-place to create one)`);
  if (targetState.kind !== "file") throw new PloopvaultError(notFile(target, targetState));
  if (targetState.links > 1) throw new PloopvaultError(sharedFile(target, targetState));
  if (!force) throw new PloopvaultError(`restore target ${target} already exists (use --force to replace it)`);
  return "start";
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new PloopvaultError(`cannot examine restore target ${path}: ${fsReason(error)}`, { cause: error });
  }
}

/** The checks of a real in-place restore, nothing changed (also for --dry-run). */
export async function checkInPlace(target: string, force: boolean): Promise<"start" | "resume"> {
  const marker = inPlaceMarker(target);
  return decideInPlaceStart(target, pathState(await lstatOrNull(target)), pathState(await lstatOrNull(marker)), force);
}

/** Block size of the comparison: only 4 KiB blocks whose bytes differ are written. */
const BLOCK = 4096;

/**
 * The [start, end) ranges (relative to both buffers, equal lengths) where `now` differs from
 * `want`, in whole BLOCK-aligned blocks of the file at `position`, adjacent ones merged.
 */
export function differingRanges(now: Buffer, want: Buffer, position: number): [number, number][] {
  const ranges: [number, number][] = [];
  let at = 0;
  while (at < want.length) {
    const end = Math.min(want.length, (Math.floor((position + at) / BLOCK) + 1) * BLOCK - position);
    if (now.compare(want, at, end, at, end) !== 0) {
      const last = ranges[ranges.length - 1];
      if (last !== undefined && last[1] === at) last[1] = end;
      else ranges.push([at, end]);
    }
    at = end;
  }
  return ranges;
}

/** The file's bytes at `position`, zeros past its end (only a racing truncation gets there: the file was cut to the disk's size). */
async function readOrZeros(fh: FileHandle, position: number, target: Buffer): Promise<void> {
  target.fill(0, await readFully(fh, position, target));
}

/** Hole ranges are checked and zeroed in pieces of this size (bounded memory). */
const ZERO_PIECE = 4 * 1024 * 1024;

function punchHole(path: string, offset: number, length: number): Promise<boolean> {
  return new Promise((resolve) => {
    execFile("fallocate", ["--punch-hole", "--offset", String(offset), "--length", String(length), path], (error) => resolve(error === null));
  });
}

/**
 * The allocated [start, end) byte ranges of `path`, sorted, from e2fsprogs' `filefrag -e -s`
 * (FIEMAP, after a sync so delayed allocations show): the rest of the file is holes, which
 * read as zeros and need no reading. Null when that is unknown (no filefrag, a file system
 * without FIEMAP, output not understood): then every range is read.
 */
export async function allocatedExtents(path: string, statBlocks: number): Promise<[number, number][] | null> {
  const stdout = await new Promise<string | null>((resolve) => {
    execFile("filefrag", ["-e", "-s", path], { maxBuffer: 256 * 1024 * 1024 }, (error, out) => resolve(error === null ? out : null));
  });
  if (stdout === null) return null;
  const extents = parseFilefrag(stdout);
  // a file with blocks but no extents listed: the listing is not to be trusted
  return extents === null || (extents.length === 0 && statBlocks > 0) ? null : extents;
}

/** `filefrag -e` output as sorted, merged byte ranges; null if it does not parse. */
export function parseFilefrag(stdout: string): [number, number][] | null {
  const block = /blocks of (\d+) bytes/.exec(stdout);
  const found = /: (\d+) extents? found/.exec(stdout);
  if (block === null || found === null) return null;
  const size = Number(block[1]);
  const extents: [number, number][] = [];
  let lastFlags = "";
  for (const m of stdout.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):(.*)$/gm)) {
    extents.push([Number(m[1]) * size, (Number(m[2]) + 1) * size]);
    lastFlags = m[3]!;
  }
  // filefrag's count merges extents that continue each other on disk across a hole (a file
  // written sequentially with holes: one "extent found", several listed), so it is at most
  // the lines listed; the listing is complete when its final line carries the kernel's
  // FIEMAP_EXTENT_LAST ("last")
  const complete = extents.length === 0 ? Number(found[1]) === 0 : extents.length >= Number(found[1]) && /\blast\b/.test(lastFlags);
  if (!complete) return null;
  extents.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [a, b] of extents) {
    const last = merged[merged.length - 1];
    if (last !== undefined && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  return merged;
}

/** The parts of [offset, offset + length) inside `extents` (all of it when they are unknown). */
export function allocatedParts(extents: readonly [number, number][] | null, offset: number, length: number): [number, number][] {
  const end = offset + length;
  if (extents === null) return [[offset, end]];
  let lo = 0;
  let hi = extents.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (extents[mid]![1] <= offset) lo = mid + 1;
    else hi = mid;
  }
  const parts: [number, number][] = [];
  for (let i = lo; i < extents.length && extents[i]![0] < end; i++) parts.push([Math.max(offset, extents[i]![0]), Math.min(end, extents[i]![1])]);
  return parts;
}

/** Make [offset, offset + length) of the file zeros where it is not; returns the bytes changed and read. */
async function zeroRange(fh: FileHandle, path: string, offset: number, length: number): Promise<{ zeroed: number; read: number }> {
  const piece = Buffer.allocUnsafe(Math.min(ZERO_PIECE, length));
  let zeroed = 0;
  let read = 0;
  for (let at = offset; at < offset + length; at += piece.length) {
    const n = Math.min(piece.length, offset + length - at);
    const view = piece.subarray(0, n);
    read += n;
    await readOrZeros(fh, at, view);
    if (isAllZero(view)) continue;
    zeroed += n;
    if (await punchHole(path, at, n)) {
      read += n;
      await readOrZeros(fh, at, view);
      if (isAllZero(view)) continue;
    }
    await writeFully(fh, view.fill(0), at);
  }
  return { zeroed, read };
}

/**
 * Restore a raw disk over `target` in place (see the file's comment). `target` must exist
 * (or its marker, to resume) and --force be given, as for any restore over a file.
 */
export async function restoreRawInPlace(
  repo: Repository,
  ref: BackupRef,
  manifest: Manifest,
  target: string,
  force: boolean,
  options: RestoreOptions,
): Promise<InPlaceResult> {
  const started = performance.now();
  const marker = inPlaceMarker(target);
  const how = await checkInPlace(target, force);
  if (how === "start") {
    try {
      await rename(target, marker);
      await syncDir(dirname(target));
    } catch (error) {
      throw new PloopvaultError(`cannot rename restore target ${target} to ${marker}: ${fsReason(error)}`, { cause: error });
    }
  }
  let fh: FileHandle | null = null;
  try {
    fh = await open(marker, "r+");
    const file = fh;
    await file.chmod(PRIVATE_FILE_MODE); // a restored disk is owner-only, as a new one would be
    const { logicalBytes } = manifest.metadata.disk;
    // cut or extended to the disk's size first: every range read below lies inside the file
    await file.truncate(logicalBytes);
    const extents = await allocatedExtents(marker, (await file.stat()).blocks);
    const supplier = new ChunkSupplier(repo, ref, null);
    const chunks = chunkEntries(manifest);
    const total = chunks.reduce((s, e) => s + e.length, 0);
    let done = 0;
    let unchanged = 0;
    let writtenBytes = 0;
    let zeroedBytes = 0;
    let readBytes = 0;
    const buffers: Buffer[] = [];
    await forEachConcurrent(manifest.entries, options.concurrency, async (entry: ManifestEntry) => {
      if (options.signal?.aborted) throw new PloopvaultError(`restore of ${ref.ct}/${ref.id} interrupted`);
      if (entry.kind === "hole" || supplier.isZeroChunk(entry)) {
        let zeroed = 0;
        for (const [a, b] of allocatedParts(extents, entry.offset, entry.length)) {
          const done = await zeroRange(file, marker, a, b - a);
          zeroed += done.zeroed;
          readBytes += done.read;
        }
        zeroedBytes += zeroed;
        if (entry.kind === "chunk" && zeroed === 0) unchanged++;
      } else {
        // reused read buffers: memory stays at concurrency x the chunker's maximum
        const buffer = buffers.pop() ?? Buffer.allocUnsafe(repo.config.chunker.maxSize);
        try {
          const now = buffer.subarray(0, entry.length);
          // counted before the await: `x += await` would add to a stale x (entries run concurrently)
          readBytes += now.length;
          await readOrZeros(file, entry.offset, now);
          if (await supplier.holds(entry, now)) unchanged++;
          else {
            const want = await supplier.fetch(entry);
            for (const [a, b] of differingRanges(now, want, entry.offset)) {
              await writeFully(file, want.subarray(a, b), entry.offset + a);
              writtenBytes += b - a;
            }
          }
        } finally {
          buffers.push(buffer);
        }
      }
      if (entry.kind === "chunk") {
        done += entry.length;
        options.onProgress?.(done, total);
      }
    });
    await file.sync();
    fh = null;
    await file.close();
    try {
      await rename(marker, target);
    } catch (error) {
      throw new PloopvaultError(`cannot rename ${marker} back to ${target}: ${fsReason(error)}`, { cause: error });
    }
    await syncTargetDirectory(target);
    return {
      logicalBytes,
      dataBytes: total,
      chunks: chunks.length,
      fetchedChunks: supplier.fetchedChunks,
      seededChunks: unchanged,
      seconds: (performance.now() - started) / 1000,
      resumed: how === "resume",
      unchangedChunks: unchanged,
      writtenBytes,
      zeroedBytes,
      readBytes,
    };
  } catch (error) {
    await fh?.close().catch(() => undefined);
    const wrapped = targetError(error, marker);
    const exitCode = wrapped instanceof PloopvaultError ? wrapped.exitCode : undefined;
    // the marker stays (it is the user's file, partly rewritten): say so, and how to finish
    throw new PloopvaultError(`${errorLine(wrapped)}; ${resumeHint(target)}`, { cause: error, ...(exitCode === undefined ? {} : { exitCode }) });
  }
}
