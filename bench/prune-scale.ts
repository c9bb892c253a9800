/**
 * prune and check at scale, on a synthetic local repository:
 *
 *   node dist/bench/prune-scale.js [--chunks 1000000] [--backups 1000] [--dir DIR] [--keep]
 *
 * Builds a repository with --chunks chunk objects (tiny but real: a zstd frame of an
 * 8-byte counter, named by its id, so check --read-data can verify them) and --backups
 * manifests with realistic overlap: 20 containers on 5 hosts, each backed up
 * backups/20 times; every disk shares 20 % of its chunks with a common template, and each
 * backup changes 5 % of its container's chunks. About 1 % of the chunks are garbage (no
 * manifest references them, as after crashed backups). Then, each in its own process so
 * that peak RSS is the phase's own: prune --keep-last (half the backups of every group)
 * --grace 0, check, check --read-data. Prints one table row per phase: seconds, store
 * requests (S3-equivalent: LIST pages of 1000 keys, DELETE batches of 1000 keys), peak RSS
 * and RSS per chunk. Memory must grow with the number of chunk ids, not with the data nor
 * with the number of references (manifests x chunks per manifest).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { checkRepository } from "../src/check/check.js";
import { chunkerParamsForAverage } from "../src/chunker/params.js";
import { encodeManifest, type Manifest, type ManifestEntry } from "../src/manifest/format.js";
import { lockTiming } from "../src/prune/locks.js";
import { runPrune } from "../src/prune/prune.js";
import { newRepositoryConfig } from "../src/repository/config.js";
import { chunkKey, manifestKey, newBackupId } from "../src/repository/layout.js";
import { Repository } from "../src/repository/repository.js";
import { LocalDirectoryStore } from "../src/uploader/local.js";
import type { ObjectInfo, ObjectStore, PutOptions } from "../src/uploader/store.js";
import { TaskLimiter } from "../src/util/limiter.js";

interface Args {
  chunks: number;
  backups: number;
  dir: string | null;
  keep: boolean;
  phase: string | null;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { chunks: 1_000_000, backups: 1000, dir: null, keep: false, phase: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--chunks") args.chunks = Number(value());
    else if (a === "--backups") args.backups = Number(value());
    else if (a === "--dir") args.dir = value();
    else if (a === "--keep") args.keep = true;
    else if (a === "--phase") args.phase = value();
    else throw new Error(`unknown argument ${a} (use --chunks N --backups N [--dir DIR] [--keep])`);
  }
  return args;
}

/** Counts what a phase asks of the store. */
class CountingStore implements ObjectStore {
  counts = { put: 0, get: 0, stat: 0, listCalls: 0, listed: 0, deleteCalls: 0, deleted: 0 };
  constructor(private readonly inner: ObjectStore) {}
  get location(): string {
    return this.inner.location;
  }
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    this.counts.put++;
    return this.inner.put(key, body, options);
  }
  get(key: string): Promise<Buffer> {
    this.counts.get++;
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    this.counts.get++;
    return this.inner.getRange(key, offset, length);
  }
  stat(key: string): Promise<ObjectInfo | null> {
    this.counts.stat++;
    return this.inner.stat(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.counts.listCalls++;
    for await (const info of this.inner.list(prefix)) {
      this.counts.listed++;
      yield info;
    }
  }
  delete(keys: readonly string[]): Promise<void> {
    this.counts.deleteCalls++;
    this.counts.deleted += keys.length;
    return this.inner.delete(keys);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Chunk k's plain content: its number (8 bytes). */
function plainOf(k: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(k);
  return b;
}

const CONTAINERS = 20;
const HOSTS = 5;
const SHARED = 0.2;
const CHANGE = 0.05;

async function build(dir: string, chunks: number, backups: number): Promise<Record<string, number>> {
  const started = performance.now();
  const store = new LocalDirectoryStore(dir);
  await store.ensureContainer();
  const params = chunkerParamsForAverage(256 << 10);
  const repo = await Repository.init(store, newRepositoryConfig(params, 3, new Date("2026-01-01T00:00:00Z")));
  // slots per disk from: unique = K*SHARED + C*K*(1-SHARED) + C*(B-1)*K*CHANGE = 99 % of chunks
  const perContainer = Math.max(1, Math.round(backups / CONTAINERS));
  const factor = SHARED + CONTAINERS * (1 - SHARED) + CONTAINERS * (perContainer - 1) * CHANGE;
  const slots = Math.max(1, Math.floor((chunks * 0.99) / factor));
  let next = 0;
  const template = Array.from({ length: Math.round(slots * SHARED) }, () => next++);
  const ids: Buffer[] = []; // chunk number -> id, filled lazily (ids are needed for manifests)
  const idOf = (k: number): Buffer => (ids[k] ??= repo.chunkId(plainOf(k)));
  let references = 0;
  let made = 0;
  for (let c = 0; c < CONTAINERS && made < backups; c++) {
    const disk = [...template, ...Array.from({ length: slots - template.length }, () => next++)];
    for (let b = 0; b < perContainer && made < backups; b++, made++) {
      if (b > 0) for (let i = 0; i < Math.round(slots * CHANGE); i++) disk[Math.floor(Math.random() * slots)] = next++;
      const entries: ManifestEntry[] = disk.map((k, i) => ({ kind: "chunk", offset: i * 4096, length: 4096, id: idOf(k) }));
      references += entries.length;
      const time = new Date(Date.UTC(2026, 0, 1 + b, 2, c));
      const ct = String(101 + c);
      const manifest: Manifest = {
        metadata: {
          formatVersion: 1,
          id: newBackupId(time),
          ct,
          host: `node${c % HOSTS}`,
          time: time.toISOString(),
          tool: { name: "prune-scale", version: "1" },
          disk: { logicalBytes: slots * 4096, clusterBytes: 4096, sourceFormatVersion: 2 },
          chunker: params,
          source: { descriptorPath: "/synthetic", topGuid: "{0}", snapshotGuid: null, imageFiles: [] },
          files: { descriptor: "DiskDescriptor.xml", config: null },
          stats: { readBytes: 0, dataBytes: slots * 4096, holeBytes: 0, chunks: slots, newChunks: 0, newBytesStored: 0, seconds: 0 },
          entryCount: entries.length,
        },
        entries,
      };
      const ref = { ct, id: manifest.metadata.id };
      await repo.putBackupFile(ref, "DiskDescriptor.xml", Buffer.from("<Parallels_disk_image/>\n"));
      await store.put(manifestKey(ct, ref.id), encodeManifest(manifest), { ifAbsent: true });
    }
  }
  const used = next;
  const total = Math.max(chunks, used);
  // chunk objects, written straight into the layout (no fsync: a benchmark fixture)
  const dirs = new Set<string>();
  const limiter = new TaskLimiter(64);
  for (let k = 0; k < total; k++) {
    const idHex = idOf(k).toString("hex");
    ids[k] = undefined as unknown as Buffer; // keep memory flat
    const key = chunkKey(idHex);
    const sub = join(dir, key.slice(0, key.lastIndexOf("/")));
    if (!dirs.has(sub)) {
      await mkdir(sub, { recursive: true });
      dirs.add(sub);
    }
    const body = repo.encodeChunk(plainOf(k));
    await limiter.submit(() => writeFile(join(dir, key), body));
  }
  await limiter.drain();
  return {
    seconds: (performance.now() - started) / 1000,
    chunks: total,
    referencedChunks: used,
    garbageChunks: total - used,
    backups: made,
    slotsPerDisk: slots,
    references,
  };
}

async function phase(name: string, dir: string, chunks: number, backups: number): Promise<Record<string, unknown>> {
  if (name === "build") return { ...(await build(dir, chunks, backups)), maxRssKiB: process.resourceUsage().maxRSS };
  const store = new CountingStore(new LocalDirectoryStore(dir));
  const repo = await Repository.open(store);
  const started = performance.now();
  let result: Record<string, unknown>;
  if (name === "prune") {
    const perContainer = Math.max(1, Math.round(backups / CONTAINERS));
    const r = await runPrune(repo, {
      policy: { last: Math.max(1, Math.floor(perContainer / 2)) },
      graceMs: 0,
      waitMs: 0,
      host: "bench",
      timing: lockTiming(),
      log: () => undefined,
      warn: (line) => process.stderr.write(`warning: ${line}\n`),
    });
    result = { forgotten: r.forgotten, kept: r.kept, chunksStored: r.chunksStored, chunksDeleted: r.chunksDeleted, sweep: r.sweep };
  } else {
    const r = await checkRepository(repo, { readData: name === "check-read-data", concurrency: 16 });
    result = { backups: r.backups, chunksStored: r.chunksStored, chunksReferenced: r.chunksReferenced, chunksRead: r.chunksRead, damaged: r.damaged.length };
  }
  return { ...result, seconds: (performance.now() - started) / 1000, requests: store.counts, maxRssKiB: process.resourceUsage().maxRSS };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.phase !== null) {
    process.stdout.write(`${JSON.stringify(await phase(args.phase, args.dir!, args.chunks, args.backups))}\n`);
    return;
  }
  const base = args.dir ?? (await mkdtemp(join(tmpdir(), "pv-prune-scale-")));
  const dir = join(base, "repo");
  const self = fileURLToPath(import.meta.url);
  const rows: [string, Record<string, unknown>][] = [];
  try {
    for (const name of ["build", "prune", "check", "check-read-data"]) {
      process.stderr.write(`${name}...\n`);
      const r = await execa(process.execPath, [self, "--phase", name, "--dir", dir, "--chunks", String(args.chunks), "--backups", String(args.backups)], {
        stderr: "inherit",
      });
      const out = JSON.parse(r.stdout) as Record<string, unknown>;
      rows.push([name, out]);
      process.stderr.write(`${name}: ${JSON.stringify(out)}\n`);
    }
  } finally {
    if (!args.keep) await rm(base, { recursive: true, force: true });
  }
  const build = rows[0]![1];
  const chunks = Number(build.chunks);
  const head = ["phase", "seconds", "GET", "PUT", "HEAD", "LIST pages", "DELETE reqs (keys)", "peak RSS", "RSS/chunk", "result"];
  const table = [head];
  for (const [name, r] of rows) {
    const q = r.requests as CountingStore["counts"] | undefined;
    const rss = Number(r.maxRssKiB) * 1024;
    const result =
      name === "build"
        ? `${chunks} chunks (${build.garbageChunks} garbage), ${build.backups} manifests x ${build.slotsPerDisk} chunks = ${build.references} references`
        : name === "prune"
          ? `forgot ${r.forgotten}, kept ${r.kept}, deleted ${r.chunksDeleted} of ${r.chunksStored} chunks`
          : `${r.backups} backups, ${r.chunksReferenced} referenced, ${r.chunksRead} read, ${r.damaged} damaged`;
    table.push([
      name,
      Number(r.seconds).toFixed(1),
      q ? String(q.get) : "-",
      q ? String(q.put) : "-",
      q ? String(q.stat) : "-",
      q ? String(Math.ceil(q.listed / 1000) + q.listCalls) : "-",
      q ? `${Math.ceil(q.deleted / 1000)} (${q.deleted})` : "-",
      `${(rss / 2 ** 20).toFixed(0)} MiB`,
      `${Math.round(rss / (name === "build" ? chunks : Number(r.chunksStored)))} B`,
      result,
    ]);
  }
  const widths = head.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table)
    process.stdout.write(
      `${row
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd()}\n`,
    );
}

main().catch((error: unknown) => {
  process.stderr.write(`prune-scale: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
