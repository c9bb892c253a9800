/**
 * The backup data flow for one logical disk:
 *   allocated runs of the disk -> large reads (a few blocks ahead) -> content-defined
 *   chunks and their SHA-256 ids, cut by worker threads block by block and stitched into
 *   the sequential cut points (src/chunker/stitch.ts) -> (new chunks only) zstd in the
 *   workers -> bounded concurrent uploads -> side files (descriptor, container config)
 *   -> manifest, last. With --threads 0 everything runs on the main thread.
 * Holes are never read: they go into the manifest as hole entries. Nothing is staged on
 * local disk; memory is bounded by the read buffers plus the upload window.
 */
import { CutStitcher } from "../chunker/stitch.js";
import { errorLine, PloopvaultError } from "../errors.js";
import { LeaseLapsedError, type PublishGuard } from "../prune/registration.js";
import type { BackupAnnotations, BackupStats, Manifest, ManifestEntry } from "../manifest/format.js";
import type { LogicalDisk } from "../ploop/disk.js";
import { chunkKey, DESCRIPTOR_NAME, newBackupId, validateName } from "../repository/layout.js";
import type { ManifestCache } from "../repository/known-chunks.js";
import { ChunkRetentionKeeper } from "../repository/object-lock.js";
import type { Repository } from "../repository/repository.js";
import { BufferRelease } from "../util/early-free.js";
import { TaskLimiter } from "../util/limiter.js";
import { planBackup, readBlocksOf, withUnknownChunksRewritten, type PreviousBackup } from "./plan.js";
import { TOOL_NAME, TOOL_VERSION } from "../version.js";
import { InlineChunkProcessor, scannedObject, type ChunkProcessor, type ScannedBlock } from "./chunk-processor.js";
import { type ChunkWorkerPool, WorkerChunkProcessor } from "./worker-processor.js";
import { skippedBytes, withoutFreeClusters, type FreeClusters } from "./free-space.js";

export interface BackupSource {
  disk: LogicalDisk;
  /** Incremental: the previous backup and what was written since its snapshot; null = full read. */
  previous?: (PreviousBackup & { backupId: string; snapshotGuid: string }) | null;
  ct: string;
  /** DiskDescriptor.xml as read at backup time (stored beside the manifest). */
  descriptorXml: Buffer;
  /** The container config (ve.conf), stored beside the manifest when present. */
  containerConfig: { name: string; body: Buffer } | null;
  snapshotGuid: string | null;
  sourceFormatVersion: number;
  /** --skip-free: clusters entirely in free filesystem blocks, stored as holes (free-space.ts). */
  free?: FreeClusters | null;
}

export interface BackupProgress {
  readBytes: number;
  totalBytes: number;
  newBytesStored: number;
}

export interface BackupOptions {
  host: string;
  time: Date;
  /** Worker threads for hashing/compression; 0 = do it on the main thread. */
  workerThreads: number;
  uploadConcurrency: number;
  readBlockBytes?: number;
  signal?: AbortSignal;
  onProgress?: (progress: BackupProgress) => void;
  /** Awaited before each image read with its size (--limit-read; src/uploader/rate-limit.ts). */
  readThrottle?: (bytes: number) => Promise<void>;
  /**
   * Called after every chunk and side file is stored, right before the manifest is
   * written; throwing here aborts the backup without a manifest (the frozen images
   * must not have changed while they were read).
   */
  beforeManifest?: () => Promise<void>;
  /**
   * The prune protocol (docs/prune.md): the manifest PUT runs inside the backup
   * registration's guard, which refuses, cancels or disowns it when the registration
   * lapsed. A disowned manifest is withdrawn and never trusted here again.
   */
  publish?: PublishGuard;
  /** Chunk ids stored in this run (by any of its containers) and their uploads: not uploaded again. */
  storedThisRun?: Map<string, Promise<void>>;
  /** Tags and note recorded in the manifest (`backup --tag/--note`). */
  annotations?: BackupAnnotations;
  /** The run's chunk workers (same repository, workerThreads each), kept from disk to disk. */
  chunkWorkers?: ChunkWorkerPool;
}

export interface BackupResult {
  manifest: Manifest;
  stats: BackupStats;
}

const DEFAULT_READ_BLOCK = 8 << 20;

/**
 * Read blocks not in use, by size, for every backup of the process (the disks of a run,
 * and backups running side by side, take from and return to the same list).
 *
 * Shared memory, not transferred: a transferred 8 MiB block is new external memory to each
 * thread on every trip, which V8 answered with a full mark-compact every ~80 ms on the main
 * thread (22 of them, 0.2 s, for a 325 MB disk; 12 with shared blocks). Shared memory is
 * not counted per thread either way, so blocks left to the GC after each disk lingered
 * (peak RSS +20-50 MiB over 4 disks, 2026-12-04): kept here, they are allocated once.
 */
const idleBlocksBySize = new Map<number, SharedArrayBuffer[]>();

function idleReadBlocks(size: number): SharedArrayBuffer[] {
  let idle = idleBlocksBySize.get(size);
  if (idle === undefined) {
    idle = [];
    idleBlocksBySize.set(size, idle);
  }
  return idle;
}
const NO_ID = Buffer.alloc(0);

export class BackupAborted extends PloopvaultError {}

export async function backupDisk(repo: Repository, cache: ManifestCache, source: BackupSource, options: BackupOptions): Promise<BackupResult> {
  const started = performance.now();
  const { disk } = source;
  const ct = validateName("container id", source.ct);
  const id = newBackupId(options.time);
  const params = repo.config.chunker;
  const { known, lockTimes } = await cache.knownChunksWithLockTimes();
  // object lock: chunks this backup reuses must be retained as long as its own (docs/object-lock.md)
  const keeper = repo.objectLock === null ? null : new ChunkRetentionKeeper(repo.objectLock, lockTimes);
  // Shared by the containers of one run, so parallel backups do not upload the same new chunk twice.
  const storedThisRun = options.storedThisRun ?? new Map<string, Promise<void>>();
  const uploadsWaitedFor: Promise<void>[] = [];
  const uploads = new TaskLimiter(options.uploadConcurrency);
  const entries: ManifestEntry[] = [];
  const stats: BackupStats = { readBytes: 0, dataBytes: 0, holeBytes: 0, chunks: 0, newChunks: 0, newBytesStored: 0, seconds: 0 };
  const allocated = disk.allocatedRuns();
  // Free clusters become holes here, so the plan never reads them; an incremental plan
  // then reuses an old chunk only if it lies entirely in clusters still in use.
  const runs = source.free ? withoutFreeClusters(allocated, source.free.map, source.free.clusterBytes) : allocated;
  const freeSkippedBytes = source.free ? skippedBytes(allocated, runs) : 0;
  const block = alignedBlockSize(options.readBlockBytes ?? DEFAULT_READ_BLOCK, disk.clusterBytes);
  const checkAbort = (): void => {
    if (options.signal?.aborted) throw new BackupAborted(`backup of ${ct} interrupted`);
  };

  const processor: ChunkProcessor =
    options.workerThreads <= 0
      ? new InlineChunkProcessor(known, repo.chunkCodec)
      : (options.chunkWorkers?.acquire(known) ?? new WorkerChunkProcessor(known, repo.chunkCodec, options.workerThreads));
  // Enough chunks in flight to keep every worker busy while uploads wait for the network.
  const processing = new TaskLimiter(Math.max(8, options.workerThreads * 8));
  const upload = async (idHex: string, object: Buffer): Promise<void> => {
    try {
      // A chunk's name needs to be durable only before the manifest: flushChunks() below.
      await repo.putChunkObject(idHex, object, { deferNameSync: true });
    } catch (error) {
      throw new PloopvaultError(`upload of ${chunkKey(idHex)} to ${repo.location} failed: ${errorLine(error)}`, { cause: error });
    }
  };

  /**
   * A new chunk's object: uploaded once per run (storedThisRun). Resolves once its upload
   * has a slot (backpressure), not when it is done. `release`: the buffer `object` lies
   * in, held here until the upload succeeded (then freed at once if nobody else holds it).
   */
  const store = async (id: Buffer, object: Buffer, release?: BufferRelease): Promise<void> => {
    const idHex = id.toString("hex");
    const earlier = storedThisRun.get(idHex);
    if (earlier !== undefined) {
      // Stored (or being stored) by this or another container of the run: this backup
      // may reference it only once that upload has succeeded.
      uploadsWaitedFor.push(earlier);
      return;
    }
    let settle!: { resolve: () => void; reject: (error: unknown) => void };
    const stored = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    stored.catch(() => undefined);
    storedThisRun.set(idHex, stored);
    stats.newChunks++;
    stats.newBytesStored += object.length;
    release?.retain();
    let started = false;
    try {
      await uploads.submit(async () => {
        started = true;
        try {
          await upload(idHex, object);
          settle.resolve();
          release?.release();
        } catch (error) {
          // a failed upload's request may still be reading the body: leave it to the GC
          release?.abandon();
          settle.reject(error);
          throw error;
        }
      });
    } catch (error) {
      // refused (an earlier upload failed): never sent, so nothing reads it
      if (!started) release?.release();
      throw error;
    }
  };

  /**
   * One chunk, in disk order. `plain` may be a view into a buffer the caller reuses once
   * this resolves (the processor copies it if it needs it later). `scannedId`: the id a
   * worker computed while scanning the block; `encoded`: the object it encoded with the
   * scan because its own view of the known set did not hold the chunk. What is known is
   * decided here, with this backup's set, never by a worker's answer.
   */
  const handleChunk = async (offset: number, plain: Buffer, scannedId?: Buffer, encoded?: Buffer, encodedRelease?: BufferRelease): Promise<void> => {
    // The entry's slot is taken now so entries stay in disk order; its id may arrive later.
    const entry: Extract<ManifestEntry, { kind: "chunk" }> = { kind: "chunk", offset, length: plain.length, id: NO_ID };
    entries.push(entry);
    stats.chunks++;
    stats.dataBytes += plain.length;
    if (scannedId === undefined) {
      await processing.submit(async () => {
        const { id, object } = await processor.process(plain);
        entry.id = id;
        if (object === null) await keeper?.reference(id);
        else await storeOwned(id, object);
      });
      return;
    }
    entry.id = scannedId;
    if (known.has(scannedId)) {
      await keeper?.reference(scannedId);
      return;
    }
    if (encoded !== undefined) return store(scannedId, encoded, encodedRelease);
    // A repeat of a chunk this run already stores needs no encoding.
    const earlier = storedThisRun.get(scannedId.toString("hex"));
    if (earlier !== undefined) {
      uploadsWaitedFor.push(earlier);
      return;
    }
    await processing.submit(async () => storeOwned(scannedId, await processor.encode(plain, scannedId)));
  };
  /** store() of an object the processor encoded alone, in a buffer of its own if it says so. */
  const storeOwned = async (id: Buffer, object: Buffer): Promise<void> => {
    if (!processor.encodedBuffersOwned) return store(id, object);
    const release = new BufferRelease(object.buffer as ArrayBuffer);
    try {
      await store(id, object, release);
    } finally {
      release.release();
    }
  };

  const previous = source.previous ? withUnknownChunksRewritten(source.previous, (id) => known.has(id)) : null;
  const plan = planBackup(runs, disk.sizeBytes, previous, params.minSize);
  const toRead = plan.reduce((sum, seg) => sum + (seg.kind === "read" ? seg.length : 0), 0);
  let readSoFar = 0;

  /**
   * The read segments (each starts at a possible cut point) are chunked block by block,
   * each from a fresh state (by the workers, or inline), and stitched here into exactly the
   * sequential cut points (src/chunker/stitch.ts): the main thread only reads,
   * re-synchronizes near block starts and orders the results. One read-ahead of a few
   * blocks runs across segments, in plan order: an incremental plan is dozens of ~1 MiB
   * segments, and reading each only once the previous one was stitched kept the workers
   * waiting (~8 ms a segment). The blocks' buffers are reused.
   */
  const blocks = readBlocksOf(plan, block);
  const spareBlocks = idleReadBlocks(block);
  // Once the pipeline has stopped (done, failed or aborted), a read-ahead whose throttle
  // resolves late must neither touch the disk (its caller closes it) nor start the chunk
  // workers again (they would keep the process alive); reads already running are awaited.
  let stopped = false;
  const readsRunning = new Set<Promise<void>>();
  const readBlock = async (at: number, target: Uint8Array): Promise<void> => {
    if (stopped) throw new BackupAborted(`backup of ${ct} stopped`);
    const read = disk.read(at, target);
    readsRunning.add(read);
    try {
      await read;
    } finally {
      readsRunning.delete(read);
    }
  };
  const ahead: Promise<ScannedBlock>[] = [];
  let nextBlock = 0;
  const depth = processor.parallelism + 1;
  const readAhead = (): void => {
    while (nextBlock < blocks.length && ahead.length < depth) {
      const { at, size, encodeFrom } = blocks[nextBlock++]!;
      const buffer = spareBlocks.pop() ?? new SharedArrayBuffer(block);
      const p = (options.readThrottle ? options.readThrottle(size) : Promise.resolve())
        .then(() => readBlock(at, new Uint8Array(buffer, 0, size)))
        .then(() => {
          if (stopped) throw new BackupAborted(`backup of ${ct} stopped`);
          return processor.scan(buffer, size, params, encodeFrom);
        });
      p.catch(() => undefined); // awaited in order below; must not become unhandled meanwhile
      ahead.push(p);
    }
  };
  const chunkSegment = async (offset: number, length: number): Promise<void> => {
    const end = offset + length;
    const stitcher = new CutStitcher(params, offset);
    for (let at = offset; at < end; ) {
      checkAbort();
      readAhead();
      const scanned = await ahead.shift()!;
      readAhead();
      at += scanned.block.length;
      // the block's new objects, freed once the last of them is stored
      const objectsRelease =
        processor.encodedBuffersOwned && scanned.objects !== undefined ? new BufferRelease(scanned.objects.data.buffer as ArrayBuffer) : undefined;
      try {
        for (const c of stitcher.push(scanned.block, scanned.cuts)) {
          if (c.kind === "sequential") await handleChunk(c.offset, c.bytes);
          else {
            const from = c.index === 0 ? 0 : scanned.cuts[c.index - 1]!; // the candidate chunk's start in the block
            const id = scanned.ids.subarray(c.index * 32, c.index * 32 + 32);
            await handleChunk(c.offset, scanned.block.subarray(from, from + c.length), id, scannedObject(scanned, c.index), objectsRelease);
          }
        }
      } finally {
        objectsRelease?.release();
      }
      spareBlocks.push(scanned.block.buffer as SharedArrayBuffer);
      readSoFar += scanned.block.length;
      options.onProgress?.({ readBytes: readSoFar, totalBytes: toRead, newBytesStored: stats.newBytesStored });
    }
    const last = stitcher.finish();
    if (last) await handleChunk(last.offset, last.bytes);
  };

  try {
    for (const segment of plan) {
      if (segment.kind === "hole") {
        entries.push({ ...segment });
        stats.holeBytes += segment.length;
        continue;
      }
      if (segment.kind === "reuse") {
        entries.push({ ...segment.entry });
        await keeper?.reference(segment.entry.id);
        stats.chunks++;
        stats.reusedChunks = (stats.reusedChunks ?? 0) + 1;
        stats.dataBytes += segment.entry.length;
        continue;
      }
      await chunkSegment(segment.offset, segment.length);
    }
    await processing.drain();
    await uploads.drain();
    await Promise.all(uploadsWaitedFor);
    await keeper?.drain();
  } finally {
    stopped = true;
    await Promise.allSettled([...readsRunning]);
    await processor.close();
  }
  checkAbort();

  stats.readBytes = disk.bytesRead;
  // Chunks stored by this run's other containers that this backup references were awaited
  // above (uploadsWaitedFor): their names are flushed here too (the store is shared).
  await repo.flushChunks();
  const ref = { ct, id };
  await repo.putBackupFile(ref, DESCRIPTOR_NAME, source.descriptorXml);
  if (source.containerConfig) await repo.putBackupFile(ref, source.containerConfig.name, source.containerConfig.body);
  stats.seconds = (performance.now() - started) / 1000;
  const manifest: Manifest = {
    metadata: {
      formatVersion: 1,
      id,
      ct,
      host: options.host,
      time: options.time.toISOString(),
      tool: { name: TOOL_NAME, version: TOOL_VERSION },
      disk: { logicalBytes: disk.sizeBytes, clusterBytes: disk.clusterBytes, sourceFormatVersion: source.sourceFormatVersion },
      chunker: params,
      source: {
        descriptorPath: disk.descriptorPath,
        topGuid: disk.topGuid,
        snapshotGuid: source.snapshotGuid,
        imageFiles: [...disk.imagePaths],
      },
      files: { descriptor: DESCRIPTOR_NAME, config: source.containerConfig?.name ?? null },
      incremental: source.previous ? { baseBackup: source.previous.backupId, baseSnapshotGuid: source.previous.snapshotGuid } : null,
      ...(source.free ? { freeSpace: { skippedBytes: freeSkippedBytes, clusterBytes: source.free.clusterBytes, filesystems: source.free.filesystems } } : {}),
      stats,
      entryCount: entries.length,
      ...(options.annotations?.tags !== undefined && options.annotations.tags.length > 0 ? { tags: [...options.annotations.tags] } : {}),
      ...(options.annotations?.note !== undefined && options.annotations.note !== "" ? { note: options.annotations.note } : {}),
    },
    entries,
  };
  checkAbort();
  await options.beforeManifest?.();
  const object = await publishManifest(repo, cache, manifest, options.publish);
  await cache.remember(
    ref,
    object,
    entries.flatMap((e) => (e.kind === "chunk" ? [e.id] : [])),
  );
  return { manifest, stats };
}

/**
 * The manifest PUT, last. Under a publish guard, a PUT that the guard cancels or that may
 * have landed after the registration lapsed does not count: the manifest is withdrawn
 * (and, if that fails too, distrusted on this host) and the backup fails.
 */
export async function publishManifest(repo: Repository, cache: ManifestCache, manifest: Manifest, publish: PublishGuard | undefined): Promise<Buffer> {
  if (publish === undefined) return repo.putManifest(manifest);
  const ref = { ct: manifest.metadata.ct, id: manifest.metadata.id };
  try {
    return await publish.guard(`publish the manifest of backup ${ref.ct}/${ref.id}`, (signal) => repo.putManifest(manifest, { signal }));
  } catch (error) {
    if (!(error instanceof LeaseLapsedError)) throw error;
    await cache.distrust(ref).catch(() => undefined);
    try {
      await repo.withdrawManifest(ref);
    } catch (withdrawError) {
      throw new LeaseLapsedError(`${error.message}; its manifest could not be withdrawn (${errorLine(withdrawError)}): run "ploopvault check"`, {
        cause: error,
      });
    }
    throw error;
  }
}

function alignedBlockSize(requested: number, clusterBytes: number): number {
  return Math.max(clusterBytes, Math.floor(requested / clusterBytes) * clusterBytes);
}
