/**
 * Restore: the backup flow reversed. Chunks are fetched concurrently, verified against
 * their ids, and written at their offsets (raw file, ploop image) or in order (stream).
 * Files are written under a temporary name and renamed into place only when complete, so
 * a failed restore never leaves a target that looks finished.
 *
 * Speed (docs/performance.md, "Restore"):
 * - Fetches run `concurrency` at a time (the command sizes it to the store: a local
 *   directory is CPU-bound, S3 latency-bound); a chunk's id check is hashed in place where
 *   the CPU has SHA-256 instructions, else on libuv's thread pool while the main thread
 *   decompresses the next chunk (ChunkCodec.decodeAsync).
 * - Holes stay holes: hole entries are never written, nor are the all-zero 4 KiB blocks
 *   inside chunks of a raw target (the file starts empty, so they read as zeros), nor
 *   chunks of zeros (a max-size chunk whose id is that of zeros is not even fetched).
 * - With a seed (src/restore/seed.ts: an older copy of the disk, or the target itself),
 *   each chunk's range is read from the seed and hashed with the repository's chunk id
 *   function; only chunks whose id differs are fetched. The new file is still written
 *   whole (temporary name, rename), so a seeded restore is bound by the target's write
 *   speed and the seed's read and hash speed (docs/performance.md); `--in-place`
 *   (src/restore/in-place.ts) rewrites an existing raw target, writing only what differs.
 *
 * Robustness (docs/fault-tolerance.md):
 * - A chunk that fails verification is fetched once more before the restore gives up
 *   (Repository.getChunk through src/uploader/verified.ts): a bad read in transit costs
 *   a request, a damaged stored object is reported naming chunk and backup.
 * - Filesystem failures at the target (full disk, read-only, permissions) become one line
 *   naming the target and the reason; the temporary files are removed.
 * - --force replaces an existing target only after the new one is complete; if the final
 *   rename fails, the old target is put back.
 * - A killed restore leaves at most a hidden ".NAME.ploopvault-partial-*" beside the
 *   target, never something at the target's name.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Writable } from "node:stream";
import { PloopvaultError } from "../errors.js";
import type { Manifest, ManifestEntry } from "../manifest/format.js";
import { parseDescriptor } from "../ploop/descriptor.js";
import { createPloopImageWriter, DESCRIPTOR_FILE_NAME, writeDescriptorFile } from "../ploop/writer.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { TaskLimiter } from "../util/limiter.js";
import { writeFully } from "../util/positional-io.js";
import { ChunkSupplier, chunkEntries, type ChunkEntry } from "./chunk-supplier.js";
import { openSeed, type Seed } from "./seed.js";
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from "../util/private-fs.js";
import { isAllZero } from "../util/zeros.js";

export type RestoreFormat = "ploop" | "raw";

export interface RestoreOptions {
  /** Chunks fetched (and seed ranges checked) at the same time. */
  concurrency: number;
  signal?: AbortSignal;
  onProgress?: (writtenBytes: number, totalBytes: number) => void;
  /** An older copy of the disk (restore --seed): chunks it holds are read from it, not fetched. */
  seed?: string;
}

export interface RestoreResult {
  logicalBytes: number;
  dataBytes: number;
  chunks: number;
  /** Chunks fetched from the repository. */
  fetchedChunks: number;
  /** Chunks taken from the seed (their bytes there hash to the chunk id). */
  seededChunks: number;
  seconds: number;
}

/** Store-sized default of RestoreOptions.concurrency (bench/run.ts measured these). */
export const RESTORE_CONCURRENCY = { local: 8, s3: 32 } as const;

/** Image file name inside a restored ploop directory (contract: PATH/root.hdd). */
export const RESTORED_IMAGE_NAME = "root.hdd";
/** The container config a ploop restore may have written before (a backup without one leaves it alone). */
const CONTAINER_CONFIG_FILE_NAME = "ve.conf";

/** Granularity of the holes a raw restore leaves inside chunks: the file system's block. */
const SPARSE_BLOCK = 4096;

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

const FS_REASONS: Record<string, string> = {
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EROFS: "read-only file system",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EIO: "input/output error",
  ENOENT: "no such file or directory",
  ENOTDIR: "a parent of it is not a directory",
  EISDIR: "it is a directory",
  EFBIG: "file too large for the file system",
  EEXIST: "it already exists",
};

export function fsReason(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  if (code !== undefined && FS_REASONS[code] !== undefined) return FS_REASONS[code];
  return error instanceof Error ? (error.message.split("\n")[0] ?? error.name) : String(error);
}

/**
 * Errors of the restore's own file work become one line naming the target; errors that
 * already say what failed (repository, integrity, PloopvaultErrors) pass through.
 */
export function targetError(error: unknown, target: string, action = "write restore target"): unknown {
  if (error instanceof PloopvaultError) return error;
  const code = (error as NodeJS.ErrnoException | null)?.code;
  if (code === undefined && !(error instanceof RangeError)) return error;
  return new PloopvaultError(`cannot ${action} ${target}: ${fsReason(error)}`, { cause: error });
}

/**
 * Refuse an existing target (unless forced) and create the target's parent directories.
 * `--force` replaces only what this restore writes: a raw restore replaces a file, never
 * a directory; a ploop restore writes into a directory only if it holds nothing but the
 * files a ploop restore writes (`ownNames`) and the disk it replaces (see checkTarget),
 * and refuses one holding anything else. Returns the old disk's images to remove once the
 * new disk is in place.
 */
async function prepareTarget(target: string, force: boolean, ownNames: ReadonlySet<string> | null = null): Promise<string[]> {
  const { replacedImages } = await checkTarget(target, force, ownNames);
  try {
    await makeDirectories(dirname(target));
  } catch (error) {
    throw new PloopvaultError(`cannot create the directory of restore target ${target}: ${fsReason(error)}`, { cause: error });
  }
  return replacedImages;
}

/** ploop's lock file beside a descriptor (OpenVZ leaves it in every private area). */
const DESCRIPTOR_LOCK_NAME = `${DESCRIPTOR_FILE_NAME}.lck`;

/**
 * The image files (plain names in the directory) that the ploop disk in `dir` consists of,
 * by its DiskDescriptor.xml: a container's private root.hdd holds root.hds and its
 * snapshot deltas, which an in-place restore replaces. None when there is no descriptor
 * or it does not parse (then they are foreign files like any other).
 */
async function imagesOfDisk(dir: string): Promise<string[]> {
  const path = join(dir, DESCRIPTOR_FILE_NAME);
  const xml = await readFile(path, "utf8").catch(() => null);
  if (xml === null) return [];
  try {
    return parseDescriptor(xml, path)
      .images.map((image) => image.file)
      .filter((file) => file !== "" && !file.includes("/") && file !== "." && file !== "..");
  } catch {
    return [];
  }
}

/**
 * prepareTarget's refusals, without creating anything (also for --dry-run). A ploop
 * directory may hold, besides `ownNames`, the disk it holds now (the images its
 * DiskDescriptor.xml names, and ploop's lock file): `--force` restores a container in
 * place, replacing that disk. Returns whether the target exists and the old images that
 * the new disk does not overwrite.
 */
async function checkTarget(target: string, force: boolean, ownNames: ReadonlySet<string> | null): Promise<{ exists: boolean; replacedImages: string[] }> {
  const existing = await stat(target).catch(() => null);
  let replacedImages: string[] = [];
  if (existing !== null) {
    if (!force) throw new PloopvaultError(`restore target ${target} already exists (use --force to replace it)`);
    if (ownNames === null && existing.isDirectory())
      throw new PloopvaultError(`restore target ${target} is a directory: a raw restore writes a file (give the file's path)`);
    if (ownNames !== null) {
      if (!existing.isDirectory())
        throw new PloopvaultError(`restore target ${target} is not a directory: a ploop restore writes ${[...ownNames].join(", ")} into a directory`);
      const oldImages = await imagesOfDisk(target);
      const allowed = new Set([...ownNames, ...oldImages, DESCRIPTOR_LOCK_NAME]);
      const foreign = (await readdir(target)).filter((name) => !allowed.has(name)).sort();
      if (foreign.length > 0) {
        throw new PloopvaultError(
          `restore target ${target} holds files a ploop restore does not write (${foreign.slice(0, 5).join(", ")}${foreign.length > 5 ? `, ... ${foreign.length} in all` : ""}): --force replaces only ${[...ownNames].join(", ")} and the images its DiskDescriptor.xml names; move the others away or restore into an empty directory`,
        );
      }
      replacedImages = oldImages.filter((name) => !ownNames.has(name));
    }
  }
  return { exists: existing !== null, replacedImages };
}

export interface RestorePlan {
  /** Paths the restore would write (replacing them if they exist). */
  files: string[];
  /** The old disk's images that --force would remove once the new disk is in place. */
  removes: string[];
  /** Whether the target exists (and --force would replace the files above in it). */
  replaces: boolean;
  logicalBytes: number;
  dataBytes: number;
  /** Distinct chunks to fetch. */
  chunks: number;
}

/** What a restore would do (`restore --dry-run`): the target checks of a real restore, nothing written. */
export async function planRestore(manifest: Manifest, target: string, format: RestoreFormat | "stdout", force: boolean): Promise<RestorePlan> {
  let files: string[] = [];
  let removes: string[] = [];
  let replaces = false;
  if (format === "raw") {
    replaces = (await checkTarget(target, force, null)).exists;
    files = [target];
  } else if (format === "ploop") {
    const names = ploopFileNames(manifest);
    const checked = await checkTarget(target, force, new Set([...names, CONTAINER_CONFIG_FILE_NAME]));
    replaces = checked.exists;
    files = names.map((name) => join(target, name));
    removes = checked.replacedImages.map((name) => join(target, name));
  }
  const ids = new Set<string>();
  let dataBytes = 0;
  for (const e of manifest.entries) {
    if (e.kind !== "chunk") continue;
    dataBytes += e.length;
    ids.add(e.id.toString("hex"));
  }
  return { files, removes, replaces, logicalBytes: manifest.metadata.disk.logicalBytes, dataBytes, chunks: ids.size };
}

/** The files a ploop restore writes into its directory (as restorePloop's `written`). */
function ploopFileNames(manifest: Manifest): string[] {
  const configName = manifest.metadata.files.config;
  return [RESTORED_IMAGE_NAME, ...(configName === null ? [] : [configName]), DESCRIPTOR_FILE_NAME];
}

/**
 * mkdir -p, one level at a time (node's recursive mkdir loops forever on some errors, e.g.
 * ENOENT below /proc/self). New directories are owner-only.
 */
async function makeDirectories(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    try {
      if (!(await stat(d)).isDirectory()) throw Object.assign(new Error(`${d} is not a directory`), { code: "ENOTDIR" });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || dirname(d) === d) throw error;
      missing.push(d);
    }
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d, PRIVATE_DIR_MODE);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
}

function partialName(target: string): string {
  return join(dirname(target), `.${basename(target)}.ploopvault-partial-${randomBytes(4).toString("hex")}`);
}

/** Open the seed of `options` (null without one). */
async function seedOf(options: RestoreOptions): Promise<Seed | null> {
  return options.seed === undefined ? null : openSeed(options.seed);
}

/** Supply every chunk concurrently and hand it to `write` (any order; null = zeros). */
async function supplyChunks(
  supplier: ChunkSupplier,
  ref: BackupRef,
  manifest: Manifest,
  options: RestoreOptions,
  write: (entry: ChunkEntry, plain: Buffer | null) => Promise<void>,
): Promise<number> {
  const limiter = new TaskLimiter(options.concurrency);
  const entries = chunkEntries(manifest);
  const total = entries.reduce((s, e) => s + e.length, 0);
  let written = 0;
  for (const entry of entries) {
    if (options.signal?.aborted) throw new PloopvaultError(`restore of ${ref.ct}/${ref.id} interrupted`);
    await limiter.submit(async () => {
      await write(entry, await supplier.get(entry));
      written += entry.length;
      options.onProgress?.(written, total);
    });
  }
  await limiter.drain();
  return total;
}

/**
 * Write `data` at `position` of a file that was created empty, leaving its all-zero
 * SPARSE_BLOCK-aligned blocks unwritten (holes that read as zeros).
 */
async function writeSparse(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  const blockEnd = (at: number): number => Math.min(data.length, (Math.floor((position + at) / SPARSE_BLOCK) + 1) * SPARSE_BLOCK - position);
  let at = 0;
  while (at < data.length) {
    while (at < data.length && isAllZero(data.subarray(at, blockEnd(at)))) at = blockEnd(at);
    let end = at;
    while (end < data.length && !isAllZero(data.subarray(end, blockEnd(end)))) end = blockEnd(end);
    if (end > at) await writeFully(fh, data.subarray(at, end), position + at);
    at = end;
  }
}

/** Sparse raw disk image at `target`. */
export async function restoreRaw(
  repo: Repository,
  ref: BackupRef,
  manifest: Manifest,
  target: string,
  force: boolean,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const started = performance.now();
  await prepareTarget(target, force);
  const seed = await seedOf(options);
  const temp = partialName(target);
  let fh: FileHandle | null = null;
  try {
    fh = await openForWrite(temp, target);
    const out = fh;
    await out.truncate(manifest.metadata.disk.logicalBytes);
    const supplier = new ChunkSupplier(repo, ref, seed);
    const dataBytes = await supplyChunks(supplier, ref, manifest, options, async (entry, plain) => {
      if (plain !== null) await writeSparse(out, plain, entry.offset);
    });
    await out.sync();
    fh = null;
    await out.close();
    await seed?.close();
    await rename(temp, target);
    await syncTargetDirectory(target);
    return {
      logicalBytes: manifest.metadata.disk.logicalBytes,
      dataBytes,
      chunks: chunkEntries(manifest).length,
      fetchedChunks: supplier.fetchedChunks,
      seededChunks: supplier.seededChunks,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (error) {
    await fh?.close().catch(() => undefined);
    await seed?.close().catch(() => undefined);
    await rm(temp, { force: true }).catch(() => undefined);
    throw targetError(error, target);
  }
}

/** The raw target is created owner-only (a disk holds everything of the container). */
async function openForWrite(path: string, target: string): Promise<FileHandle> {
  try {
    return await open(path, "wx", PRIVATE_FILE_MODE);
  } catch (error) {
    throw new PloopvaultError(`cannot write restore target ${target}: ${fsReason(error)}`, { cause: error });
  }
}

/** The raw disk, in order, to a stream (stdout). Holes are written as zeros. */
export async function restoreToStream(repo: Repository, ref: BackupRef, manifest: Manifest, out: Writable, options: RestoreOptions): Promise<RestoreResult> {
  const started = performance.now();
  const seed = await seedOf(options);
  try {
    return await streamEntries(manifest, out, options, new ChunkSupplier(repo, ref, seed), started);
  } finally {
    await seed?.close().catch(() => undefined);
  }
}

async function streamEntries(manifest: Manifest, out: Writable, options: RestoreOptions, supplier: ChunkSupplier, started: number): Promise<RestoreResult> {
  const { ref } = supplier;
  const zeros = Buffer.alloc(1 << 20);
  const window: { entry: ManifestEntry; data: Promise<Buffer | null> | null }[] = [];
  let next = 0;
  const entries = manifest.entries;
  const fill = (): void => {
    while (window.length < options.concurrency && next < entries.length) {
      const entry = entries[next++]!;
      const data = entry.kind === "chunk" ? supplier.get(entry) : null;
      data?.catch(() => undefined);
      window.push({ entry, data });
    }
  };
  const write = (buf: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      if (out.write(buf)) resolve();
      else {
        const onDrain = (): void => {
          out.off("error", onError);
          resolve();
        };
        const onError = (e: Error): void => {
          out.off("drain", onDrain);
          reject(e);
        };
        out.once("drain", onDrain);
        out.once("error", onError);
      }
    });
  let dataBytes = 0;
  let written = 0;
  fill();
  while (window.length > 0) {
    if (options.signal?.aborted) throw new PloopvaultError(`restore of ${ref.ct}/${ref.id} interrupted`);
    const { entry, data } = window.shift()!;
    fill();
    const plain = data === null ? null : await data;
    if (plain === null) {
      for (let left = entry.length; left > 0; left -= zeros.length) await write(left >= zeros.length ? zeros : zeros.subarray(0, left));
    } else {
      await write(plain);
    }
    if (entry.kind === "chunk") dataBytes += entry.length;
    written += entry.length;
    options.onProgress?.(written, manifest.metadata.disk.logicalBytes);
  }
  const { fetchedChunks, seededChunks } = supplier;
  return {
    logicalBytes: manifest.metadata.disk.logicalBytes,
    dataBytes,
    chunks: chunkEntries(manifest).length,
    fetchedChunks,
    seededChunks,
    seconds: (performance.now() - started) / 1000,
  };
}

/** PATH/root.hdd (ploop v2) + PATH/DiskDescriptor.xml (+ the saved container config). */
export async function restorePloop(
  repo: Repository,
  ref: BackupRef,
  manifest: Manifest,
  target: string,
  force: boolean,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const started = performance.now();
  const configName = manifest.metadata.files.config;
  // the descriptor last: a directory with a new descriptor always has its new image
  const written = [RESTORED_IMAGE_NAME, ...(configName === null ? [] : [configName]), DESCRIPTOR_FILE_NAME];
  const replacedImages = await prepareTarget(target, force, new Set([...written, CONTAINER_CONFIG_FILE_NAME]));
  const { logicalBytes, clusterBytes } = manifest.metadata.disk;
  const seed = await seedOf(options);
  const temp = partialName(target);
  // owner-only, like a container's private area (its root.hdd is 0600, as ploop makes it)
  await mkdir(temp, { recursive: false, mode: PRIVATE_DIR_MODE }).catch(async (error: unknown) => {
    await seed?.close().catch(() => undefined);
    throw new PloopvaultError(`cannot write restore target ${target}: ${fsReason(error)}`, { cause: error });
  });
  try {
    const clusters = new Set<number>();
    for (const e of chunkEntries(manifest)) {
      for (let c = Math.floor(e.offset / clusterBytes); c <= Math.floor((e.offset + e.length - 1) / clusterBytes); c++) clusters.add(c);
    }
    const allocated = [...clusters].sort((a, b) => a - b);
    const writer = await createPloopImageWriter(join(temp, RESTORED_IMAGE_NAME), { sizeBytes: logicalBytes, clusterBytes, allocatedClusters: allocated });
    const supplier = new ChunkSupplier(repo, ref, seed);
    let dataBytes: number;
    try {
      // A chunk of zeros is not written: finish() zero-fills what was never written.
      dataBytes = await supplyChunks(supplier, ref, manifest, options, async (entry, plain) =>
        plain === null ? undefined : writer.write(entry.offset, plain),
      );
      await writer.finish();
    } catch (error) {
      await writer.abort().catch(() => undefined);
      throw error;
    }
    await seed?.close();
    await writeDescriptorFile(temp, { imageFile: RESTORED_IMAGE_NAME, sizeBytes: logicalBytes, clusterBytes });
    if (configName !== null) {
      const body = await repo.getBackupFile(ref, configName);
      await writeFile(join(temp, configName), body, { mode: 0o600 });
    }
    await syncDir(temp);
    if (force && (await exists(target))) {
      // only our files are replaced, one atomic rename each; anything else was refused above
      for (const name of written) await rename(join(temp, name), join(target, name));
      await syncDir(target);
      // the replaced disk's images (root.hds, snapshot deltas): no descriptor names them now
      for (const name of replacedImages)
        await unlink(join(target, name)).catch((error: NodeJS.ErrnoException) => (error.code === "ENOENT" ? undefined : Promise.reject(error)));
      if (replacedImages.length > 0) await syncDir(target);
      await rm(temp, { recursive: true, force: true });
    } else {
      await rename(temp, target);
    }
    await syncTargetDirectory(target);
    return {
      logicalBytes,
      dataBytes,
      chunks: chunkEntries(manifest).length,
      fetchedChunks: supplier.fetchedChunks,
      seededChunks: supplier.seededChunks,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (error) {
    await seed?.close().catch(() => undefined);
    await rm(temp, { recursive: true, force: true }).catch(() => undefined);
    throw targetError(error, target);
  }
}

/**
 * fsync the target's directory after the rename, so the finished target survives a crash.
 * A failure is reported (the target is complete, but its name may not be durable yet).
 */
export async function syncTargetDirectory(target: string): Promise<void> {
  try {
    await syncDir(dirname(target));
  } catch (error) {
    throw new PloopvaultError(
      `restore target ${target} was written, but syncing its directory ${dirname(target)} failed: ${fsReason(error)}; it may not survive a crash`,
      { cause: error },
    );
  }
}

/** fsync a directory, so the entries written or renamed into it are durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close().catch(() => undefined);
  }
}
