/**
 * `ploopvault copy` (docs/copy.md): backups and the chunks they need, from one repository
 * to another (any two stores, encrypted or not on either side).
 *
 *   destination registration (like a backup: docs/prune.md) -> list what the destination
 *   has (backups, chunk objects) -> per backup to copy, oldest first: its chunks in
 *   manifest order, `concurrency` at a time -> side files -> manifest, last
 *
 * Per chunk: known to the destination (same id, or mapped from an earlier copy of the
 * container: plan.ts) -> nothing to transfer; else download, verify against the source
 * id (authenticate, decompress, re-hash), compute the destination id where the id spaces
 * differ, and store the zstd frame as it is (sealed under the destination's key when it
 * is encrypted): no chunk is compressed twice, and the boundaries stay the source's.
 *
 * A damaged source backup (a chunk missing or not matching its id) fails on its own and
 * is not published; the others go on. A killed copy leaves at most chunks without a
 * manifest: the next run finds them in the destination's listing and copies only the
 * rest. Memory: the destination's chunk ids (~45 bytes each), one source manifest, the id
 * map where the id spaces differ (~80 bytes per chunk copied or paired) and `concurrency`
 * chunks in flight.
 */
import { withBackupRegistration } from "../host/run.js";
import { publishManifest } from "../backup/pipeline.js";
import { errorLine, PloopvaultError, UsageError } from "../errors.js";
import type { Manifest, ManifestEntry } from "../manifest/format.js";
import { ChunkIdHashSet } from "../repository/chunk-id-set.js";
import { ManifestCache, type ChunkLockTimes } from "../repository/known-chunks.js";
import { backupPrefix, chunkKey, CHUNKS_PREFIX, DESCRIPTOR_NAME } from "../repository/layout.js";
import { loadMissingChunks } from "../repository/missing-chunks.js";
import { ChunkRetentionKeeper } from "../repository/object-lock.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { TaskLimiter } from "../util/limiter.js";
import { ChunkIdMap, pairIdMap, sameIdSpace, selectBackups } from "./plan.js";

export interface CopyProgress {
  /** Logical bytes of the backup's chunks done (copied or found present). */
  doneBytes: number;
  totalBytes: number;
  uploadedBytes: number;
}

export interface CopyOptions {
  source: Repository;
  destination: Repository;
  /** The destination's local state (its manifest cache). */
  stateDir: string;
  /** Host name in the destination registration. */
  host: string;
  cts?: string[];
  /** Only backups made on this host (their manifests' metadata, through the source's manifest cache). */
  onlyHost?: string;
  /** Only the N newest backups of each container. */
  last?: number;
  /** Chunks transferred at once. */
  concurrency: number;
  signal: AbortSignal;
  log: (line: string) => void;
  warn: (line: string) => void;
  onProgress?: (ref: BackupRef, progress: CopyProgress) => void;
  onResult?: (result: CopiedBackup) => void;
}

export interface CopiedBackup {
  ct: string;
  backup: string;
  host?: string;
  time?: string;
  status: "ok" | "error";
  logicalBytes?: number;
  chunks: number;
  /** Chunk objects stored in the destination by this copy. */
  chunksUploaded: number;
  /** Chunk references the destination already had. */
  chunksPresent: number;
  chunksDownloaded: number;
  bytesDownloaded: number;
  bytesUploaded: number;
  /** Object lock: reused chunks whose retention was extended. */
  retentionsExtended: number;
  seconds: number;
  error?: string;
}

export interface CopyReport {
  source: string;
  destination: string;
  /** Backups selected (after --ct / --last). */
  selected: number;
  /** Of those, already in the destination. */
  present: number;
  copied: number;
  failed: number;
  backups: CopiedBackup[];
  chunksUploaded: number;
  bytesUploaded: number;
  bytesDownloaded: number;
  seconds: number;
}

/** The destination's chunk objects (from its listing), minus those recorded missing or damaged. */
class DestinationChunks {
  private readonly ids = new ChunkIdHashSet(1 << 16);
  constructor(private readonly missing: ReadonlySet<string>) {}

  static async list(repo: Repository): Promise<DestinationChunks> {
    const { ids: missing } = await loadMissingChunks(repo.store);
    const out = new DestinationChunks(missing);
    const scratch = Buffer.alloc(32);
    for await (const info of repo.store.list(CHUNKS_PREFIX)) {
      const name = info.key.slice(info.key.lastIndexOf("/") + 1);
      if (!/^[0-9a-f]{64}$/.test(name) || info.key !== chunkKey(name)) continue;
      scratch.write(name, "hex");
      out.ids.add(scratch);
    }
    return out;
  }

  has(id: Uint8Array): boolean {
    return this.ids.has(id) && (this.missing.size === 0 || !this.missing.has(Buffer.from(id).toString("hex")));
  }

  add(id: Uint8Array): void {
    this.ids.add(id);
  }
}

type ChunkEntry = Extract<ManifestEntry, { kind: "chunk" }>;

export async function runCopy(options: CopyOptions): Promise<CopyReport> {
  const started = performance.now();
  const { source, destination } = options;
  if (source.config.id === destination.config.id) {
    throw new UsageError(`source and destination are the same repository (${source.location}, id ${source.config.id})`);
  }
  if (source.config.chunker.maxSize > destination.config.chunker.maxSize) {
    throw new PloopvaultError(
      `cannot copy from ${source.location} to ${destination.location}: the source's chunks may be up to ${source.config.chunker.maxSize} bytes, the destination's only ${destination.config.chunker.maxSize} (initialize the destination with the source's --chunk-avg)`,
    );
  }
  const report: CopyReport = {
    source: source.location,
    destination: destination.location,
    selected: 0,
    present: 0,
    copied: 0,
    failed: 0,
    backups: [],
    chunksUploaded: 0,
    bytesUploaded: 0,
    bytesDownloaded: 0,
    seconds: 0,
  };
  const sourceRefs = await sourceBackups(options);
  await withBackupRegistration(
    destination,
    { host: options.host, signal: options.signal, log: options.log, warn: options.warn },
    async (registration, signal) => {
      // registered: only now read what the destination holds
      const destinationRefs = await destination.listBackups();
      const selection = selectBackups(sourceRefs, new Set(destinationRefs.map((r) => `${r.ct}/${r.id}`)), {
        ...(options.cts === undefined ? {} : { cts: options.cts }),
        ...(options.last === undefined ? {} : { last: options.last }),
      });
      report.selected = selection.toCopy.length + selection.present.length;
      report.present = selection.present.length;
      if (selection.toCopy.length === 0) return;
      options.log(
        `copying ${selection.toCopy.length} backup${selection.toCopy.length === 1 ? "" : "s"} from ${source.location} to ${destination.location}${report.present > 0 ? ` (${report.present} already there)` : ""}`,
      );
      const cache = ManifestCache.forRepository(destination, options.stateDir);
      const lockTimes = destination.objectLock === null ? null : (await cache.knownChunksWithLockTimes()).lockTimes;
      const run: RunState = {
        stored: await DestinationChunks.list(destination),
        uploaded: new ChunkIdHashSet(),
        same: sameIdSpace(source.chunkCodec, destination.chunkCodec),
        map: new ChunkIdMap(),
        paired: new Set(),
        lockTimes,
        sourceRefs,
        destinationRefs,
      };
      for (const ref of selection.toCopy) {
        let result: CopiedBackup;
        if (signal.aborted) {
          result = { ...emptyResult(ref), status: "error", error: `not started: ${errorLine(signal.reason ?? "copy interrupted")}` };
        } else {
          options.log(`copying backup ${ref.ct}/${ref.id}`);
          result = await copyBackup(ref, options, run, cache, registration, signal);
        }
        report.backups.push(result);
        if (result.status === "ok") report.copied++;
        else report.failed++;
        report.chunksUploaded += result.chunksUploaded;
        report.bytesUploaded += result.bytesUploaded;
        report.bytesDownloaded += result.bytesDownloaded;
        options.onResult?.(result);
      }
    },
  );
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

/** The source's backups of the selected containers (made on `onlyHost`, when given). */
async function sourceBackups(options: CopyOptions): Promise<BackupRef[]> {
  const cts = options.cts === undefined ? null : new Set(options.cts);
  const refs = (await options.source.listBackups()).filter((r) => cts === null || cts.has(r.ct));
  if (options.onlyHost === undefined) return refs;
  const cache = ManifestCache.forRepository(options.source, options.stateDir);
  const out: BackupRef[] = [];
  for (const ref of refs) {
    let host: string;
    try {
      host = (await cache.metadata(ref)).host;
    } catch (error) {
      // unreadable: it could not be copied anyway; the other backups go on
      options.warn(`skipping backup ${ref.ct}/${ref.id} of ${options.source.location}: cannot tell which host made it (${errorLine(error)})`);
      continue;
    }
    if (host === options.onlyHost) out.push(ref);
  }
  return out;
}

interface RunState {
  stored: DestinationChunks;
  /** Chunks this run stored (retained by their upload, no extension needed). */
  uploaded: ChunkIdHashSet;
  same: boolean;
  /** Source -> destination ids of the chunks copied by this run, or paired from backups both repositories have. */
  map: ChunkIdMap;
  /** Containers whose newest backup in both repositories was paired into the map. */
  paired: Set<string>;
  lockTimes: ChunkLockTimes | null;
  sourceRefs: readonly BackupRef[];
  destinationRefs: readonly BackupRef[];
}

function emptyResult(ref: BackupRef): CopiedBackup {
  return {
    ct: ref.ct,
    backup: ref.id,
    status: "ok",
    chunks: 0,
    chunksUploaded: 0,
    chunksPresent: 0,
    chunksDownloaded: 0,
    bytesDownloaded: 0,
    bytesUploaded: 0,
    retentionsExtended: 0,
    seconds: 0,
  };
}

/**
 * The run's id map when the id spaces differ, with the chunks of the newest backup of
 * this container that both repositories have (zipped manifests) added the first time the
 * container comes up; every chunk copied is added too.
 */
async function idMapFor(ct: string, options: CopyOptions, run: RunState): Promise<ChunkIdMap> {
  if (run.paired.has(ct)) return run.map;
  run.paired.add(ct);
  const inSource = new Set(run.sourceRefs.filter((r) => r.ct === ct).map((r) => r.id));
  const both = run.destinationRefs.filter((r) => r.ct === ct && inSource.has(r.id)).sort((a, b) => (a.id < b.id ? -1 : 1));
  const newest = both[both.length - 1];
  if (newest !== undefined) {
    try {
      pairIdMap(await options.source.loadManifest(newest), await options.destination.loadManifest(newest), run.map);
    } catch (error) {
      options.warn(
        `cannot pair backup ${ct}/${newest.id} of both repositories (${errorLine(error)}): chunks of ${ct} not copied in this run are downloaded to learn their destination ids`,
      );
    }
  }
  return run.map;
}

async function copyBackup(
  ref: BackupRef,
  options: CopyOptions,
  run: RunState,
  cache: ManifestCache,
  registration: Parameters<typeof publishManifest>[3],
  signal: AbortSignal,
): Promise<CopiedBackup> {
  const started = performance.now();
  const { source, destination } = options;
  const result = emptyResult(ref);
  const limiter = new TaskLimiter(options.concurrency);
  try {
    const manifest = await source.loadManifest(ref);
    const { metadata } = manifest;
    result.host = metadata.host;
    result.time = metadata.time;
    result.logicalBytes = metadata.disk.logicalBytes;
    const map = run.same ? null : await idMapFor(ref.ct, options, run);
    const keeper = destination.objectLock === null ? null : new ChunkRetentionKeeper(destination.objectLock, run.lockTimes);
    const inFlight = new Map<string, Promise<Buffer>>();
    const total = metadata.stats.dataBytes;
    let done = 0;

    /** The destination id of a source chunk, stored in the destination when it is not there yet. */
    const transfer = async (sourceId: Buffer): Promise<Buffer> => {
      const mapped = run.same ? sourceId : map!.get(sourceId);
      if (mapped !== undefined && run.stored.has(mapped)) {
        if (!run.uploaded.has(mapped)) await keeper?.reference(mapped);
        result.chunksPresent++;
        return Buffer.from(mapped);
      }
      const sourceHex = sourceId.toString("hex");
      const pending = inFlight.get(sourceHex);
      if (pending !== undefined) return pending;
      const work = (async (): Promise<Buffer> => {
        // verified against the source id (authenticated, decompressed, hashed)
        const { plain, inner, storedBytes } = await source.readChunk(sourceHex, ref);
        result.chunksDownloaded++;
        result.bytesDownloaded += storedBytes;
        const id = run.same ? sourceId : destination.chunkId(plain);
        map?.set(sourceId, id);
        if (run.stored.has(id)) {
          if (!run.uploaded.has(id)) await keeper?.reference(id);
          result.chunksPresent++;
          return id;
        }
        const object = destination.chunkCodec.encodeFromInner(inner, id);
        try {
          await destination.putChunkObject(id.toString("hex"), object);
        } catch (error) {
          throw new PloopvaultError(`upload of ${chunkKey(id.toString("hex"))} to ${destination.location} failed: ${errorLine(error)}`, { cause: error });
        }
        run.stored.add(id);
        run.uploaded.add(id);
        result.chunksUploaded++;
        result.bytesUploaded += object.length;
        return id;
      })();
      inFlight.set(sourceHex, work);
      work.then(
        () => inFlight.delete(sourceHex),
        () => inFlight.delete(sourceHex),
      );
      return work;
    };

    const entries: ManifestEntry[] = manifest.entries.map((e) => ({ ...e }));
    for (const entry of entries) {
      if (entry.kind !== "chunk") continue;
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new PloopvaultError("copy interrupted");
      result.chunks++;
      const chunk: ChunkEntry = entry;
      await limiter.submit(async () => {
        chunk.id = await transfer(chunk.id);
        done += chunk.length;
        options.onProgress?.(ref, { doneBytes: done, totalBytes: total, uploadedBytes: result.bytesUploaded });
      });
    }
    await limiter.drain();
    await keeper?.drain();
    result.retentionsExtended = keeper?.extended ?? 0;
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new PloopvaultError("copy interrupted");

    // side files, then the manifest: the backup appears in the destination only now
    for (const name of [metadata.files.descriptor ?? DESCRIPTOR_NAME, ...(metadata.files.config ? [metadata.files.config] : [])]) {
      // object lock: a file a killed run stored is there for good; another version would look like an overwrite
      if (destination.objectLock !== null && (await destination.store.stat(`${backupPrefix(ref.ct, ref.id)}${name}`)) !== null) continue;
      await destination.putBackupFile(ref, name, await source.getBackupFile(ref, name));
    }
    const copy: Manifest = { metadata, entries };
    const object = await publishManifest(destination, cache, copy, registration);
    await cache.remember(ref, object);
  } catch (error) {
    result.status = "error";
    result.error = errorLine(error);
    // transfers still running must not overlap the next backup's
    await limiter.drain().catch(() => undefined);
  }
  result.seconds = (performance.now() - started) / 1000;
  return result;
}
