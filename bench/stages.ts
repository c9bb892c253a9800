/**
 * Where a backup's CPU goes: each stage of ploopvault's backup pipeline measured alone,
 * in every variant worth comparing, on the data of one corpus disk, so a missed target in
 * bench/run.ts can be pinned on a stage and a variant chosen by measurement.
 *
 *   node dist/bench/stages.js [DISK_DESCRIPTOR] [--corpus DIR] [--avg KIB] [--levels 1,2,3] [--repeat N]
 *
 * Default disk: 101 of the bench corpus in .tmp/bench/corpus (built there first if
 * missing, ~1 min; scripts/corpus.ts). Stages:
 *   read     the logical disk in 8 MiB blocks (page cache warm after the first round)
 *   gear     candidate cuts of every 8 MiB block from a fresh state (what the chunk
 *            workers do): findCut in JavaScript (before) vs the WebAssembly scan (now)
 *   sha256   the id of every chunk: node:crypto, WebCrypto on libuv's thread pool, and
 *            hash-wasm if it is installed (npm install --no-save hash-wasm); HMAC-SHA256
 *            (the ids of an encrypted repository) for reference
 *   zstd     the distinct chunks (what a first backup compresses) at each level, through
 *            zstd-napi and node:zlib, one-shot on the calling thread (what the workers
 *            do), and node:zlib's asynchronous call (thread pool, 2 in flight); then
 *            decompression of the level-3 frames (what a restore does)
 * and the repository-size effect of the level over all four corpus disks (their
 * distinct chunks, as a repository holding a first backup of each would store them).
 *
 * Rounds are interleaved (every variant once per round) and the median is reported; MB/s
 * are of input bytes per CPU second of the process (all its threads, so a thread-pool
 * variant pays for its pool) and per wall second. Only ratios within one run compare:
 * this machine is shared and its speed drifts (docs/performance.md).
 */
import { createHash, createHmac, webcrypto } from "node:crypto";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import * as zlib from "node:zlib";
import { buildCorpus } from "../scripts/corpus.js";
import { chunkerParamsForAverage, StreamChunker, type ChunkerParams } from "../src/chunker/index.js";
import { cutMasks, newScanState } from "../src/chunker/fastcdc.js";
import { wasmGearAvailable } from "../src/chunker/gear-wasm.js";
import { findCuts, findCutsJs } from "../src/chunker/scan.js";
import { openLogicalDisk } from "../src/ploop/disk.js";
import { activeZstdBinding, ZSTD_BINDING_NAMES, zstdBinding, type ZstdBinding } from "../src/util/zstd.js";

const BLOCK = 8 << 20;
const MB = 1e6;
const CORPUS_CTS = ["101", "102", "103", "104"];

interface Options {
  descriptor: string | undefined;
  corpus: string;
  avgKiB: number;
  levels: number[];
  repeat: number;
}

const USAGE = "usage: node dist/bench/stages.js [DISK_DESCRIPTOR] [--corpus DIR] [--avg KIB] [--levels 1,2,3] [--repeat N]";

function parseOptions(argv: string[]): Options {
  const options: Options = { descriptor: undefined, corpus: ".tmp/bench/corpus", avgKiB: 256, levels: [1, 2, 3], repeat: 5 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      return v;
    };
    if (arg === "--corpus") options.corpus = value();
    else if (arg === "--avg") options.avgKiB = Number(value());
    else if (arg === "--levels") options.levels = value().split(",").map(Number);
    else if (arg === "--repeat") options.repeat = Number(value());
    else if (arg === "--help" || arg === "-h") throw new Error(USAGE);
    else if (!arg.startsWith("--") && options.descriptor === undefined) options.descriptor = arg;
    else throw new Error(`unknown argument ${arg}\n${USAGE}`);
  }
  if (!Number.isInteger(options.repeat) || options.repeat < 1) throw new Error(`--repeat must be a positive integer\n${USAGE}`);
  if (options.levels.some((l) => !Number.isInteger(l))) throw new Error(`--levels takes integers, e.g. 1,2,3\n${USAGE}`);
  return options;
}

/** The data of a disk's allocated runs, in blocks of at most 8 MiB (each run starts a block). */
async function readDisk(descriptor: string): Promise<{ runs: Buffer[][]; seconds: number }> {
  const disk = await openLogicalDisk(descriptor);
  try {
    const started = performance.now();
    const runs: Buffer[][] = [];
    for (const run of disk.allocatedRuns()) {
      const blocks: Buffer[] = [];
      for (let at = run.offset; at < run.offset + run.length; at += BLOCK) {
        const block = Buffer.allocUnsafe(Math.min(BLOCK, run.offset + run.length - at));
        await disk.read(at, block);
        blocks.push(block);
      }
      runs.push(blocks);
    }
    return { runs, seconds: (performance.now() - started) / 1000 };
  } finally {
    await disk.close();
  }
}

/** The chunks of every run, copied out (sequential cut points, as a backup stores them). */
function chunksOf(runs: Buffer[][], params: ChunkerParams): Buffer[] {
  const chunks: Buffer[] = [];
  for (const blocks of runs) {
    const chunker = new StreamChunker(params);
    for (const block of blocks) for (const c of chunker.push(block)) chunks.push(Buffer.from(c));
    const last = chunker.finish();
    if (last) chunks.push(Buffer.from(last));
  }
  return chunks;
}

function distinctChunks(chunks: Buffer[], into = new Map<string, Buffer>()): Map<string, Buffer> {
  for (const c of chunks) into.set(createHash("sha256").update(c).digest("hex"), c);
  return into;
}

interface Variant {
  stage: string;
  name: string;
  /** Bytes of input per run (the MB/s numerator). */
  bytes: number;
  run(): void | Promise<void>;
  /** The variant the stage's ratios are against (what ploopvault did before these measurements). */
  baseline?: boolean;
}

interface Sample {
  cpu: number;
  wall: number;
}

async function measure(fn: () => void | Promise<void>): Promise<Sample> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { cpu: (cpu.user + cpu.system) / 1e6, wall };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** At most `inFlight` of `items` through `fn` at a time. */
async function pool<T>(items: readonly T[], inFlight: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

interface HashWasm {
  createSHA256(): Promise<{ init(): unknown; update(data: Uint8Array): unknown; digest(format: "binary"): Uint8Array }>;
}

async function loadHashWasm(): Promise<HashWasm | null> {
  const name = "hash-wasm"; // not a dependency: measured only where someone installed it
  try {
    return (await import(name)) as HashWasm;
  } catch {
    return null;
  }
}

async function main(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  const corpusDir = resolve(options.corpus);
  if (options.descriptor === undefined && !existsSync(join(corpusDir, "SHA256SUMS"))) {
    console.error(`building the bench corpus in ${corpusDir} (scripts/corpus.ts, once)`);
    await buildCorpus(corpusDir, { scale: "bench", log: (line) => console.error(`  ${line}`) });
  }
  const descriptor = options.descriptor ?? join(corpusDir, "101", "root.hdd", "DiskDescriptor.xml");
  const params = chunkerParamsForAverage(options.avgKiB * 1024);
  const masks = cutMasks(params);

  const { runs } = await readDisk(descriptor);
  const blocks = runs.flat();
  const dataBytes = blocks.reduce((s, b) => s + b.length, 0);
  const chunks = chunksOf(runs, params);
  const distinct = [...distinctChunks(chunks).values()];
  const distinctBytes = distinct.reduce((s, c) => s + c.length, 0);
  const bindings = ZSTD_BINDING_NAMES.map((n) => zstdBinding(n)).filter((b): b is ZstdBinding => b !== null);
  const hashWasm = await loadHashWasm();
  const hmacKey = createHash("sha256").update("bench hmac key").digest();
  const sink = { n: 0 }; // results are consumed, so no variant's work can be optimized away

  const variants: Variant[] = [
    {
      stage: "read",
      name: "logical disk, 8 MiB blocks (page cache)",
      bytes: dataBytes,
      baseline: true,
      run: async () => {
        sink.n += (await readDisk(descriptor)).runs.length;
      },
    },
    {
      stage: "gear/FastCDC",
      name: "findCut, JavaScript (before)",
      bytes: dataBytes,
      baseline: true,
      run: () => {
        for (const b of blocks) sink.n += findCutsJs(b, 0, b.length, params, masks, newScanState()).length;
      },
    },
  ];
  if (wasmGearAvailable()) {
    variants.push({
      stage: "gear/FastCDC",
      name: "WebAssembly scan (now)",
      bytes: dataBytes,
      run: () => {
        for (const b of blocks) sink.n += findCuts(b, 0, b.length, params, masks, newScanState()).length;
      },
    });
  }
  variants.push(
    {
      stage: "SHA-256",
      name: "node:crypto createHash, calling thread (now)",
      bytes: dataBytes,
      baseline: true,
      run: () => {
        for (const c of chunks) sink.n += createHash("sha256").update(c).digest()[0]!;
      },
    },
    {
      stage: "SHA-256",
      name: "WebCrypto digest, thread pool, 4 in flight",
      bytes: dataBytes,
      run: () => pool(chunks, 4, async (c) => (sink.n += new Uint8Array(await webcrypto.subtle.digest("SHA-256", c))[0]!)),
    },
  );
  if (hashWasm !== null) {
    const hasher = await hashWasm.createSHA256();
    variants.push({
      stage: "SHA-256",
      name: "hash-wasm, calling thread",
      bytes: dataBytes,
      run: () => {
        for (const c of chunks) {
          hasher.init();
          hasher.update(c);
          sink.n += hasher.digest("binary")[0]!;
        }
      },
    });
  }
  variants.push({
    stage: "SHA-256",
    name: "HMAC-SHA256, node:crypto (encrypted repositories)",
    bytes: dataBytes,
    run: () => {
      for (const c of chunks) sink.n += createHmac("sha256", hmacKey).update(c).digest()[0]!;
    },
  });
  const zstdCompressAsync = typeof zlib.zstdCompress === "function" ? promisify(zlib.zstdCompress) : null;
  for (const level of options.levels) {
    for (const binding of bindings) {
      variants.push({
        stage: "zstd compress",
        name: `level ${level}, ${binding.name}, one-shot on the calling thread`,
        bytes: distinctBytes,
        baseline: level === (options.levels.includes(3) ? 3 : options.levels[0]) && binding === bindings[0],
        run: () => {
          for (const c of distinct) sink.n += binding.compress(c, level, false).length;
        },
      });
    }
    if (zstdCompressAsync !== null) {
      const opts = { params: { [zlib.constants.ZSTD_c_compressionLevel]: level } };
      variants.push({
        stage: "zstd compress",
        name: `level ${level}, zlib, asynchronous (thread pool, 2 in flight)`,
        bytes: distinctBytes,
        run: () => pool(distinct, 2, async (c) => (sink.n += (await zstdCompressAsync(c, opts)).length)),
      });
    }
  }
  const frames = distinct.map((c) => activeZstdBinding().compress(c, 3, false));
  for (const binding of bindings) {
    variants.push({
      stage: "zstd decompress",
      name: `level-3 frames, ${binding.name}`,
      bytes: distinctBytes,
      baseline: binding === bindings[0],
      run: () => {
        for (let i = 0; i < frames.length; i++) sink.n += binding.decompress(frames[i]!, distinct[i]!.length).length;
      },
    });
  }

  const samples = new Map<Variant, Sample[]>(variants.map((v) => [v, []]));
  for (let round = 0; round < options.repeat; round++) {
    for (const v of variants) samples.get(v)!.push(await measure(v.run));
    console.error(`round ${round + 1}/${options.repeat} done`);
  }

  console.log(`Command: node dist/bench/stages.js ${argv.join(" ")}`.trimEnd());
  console.log(
    `Node ${process.version}, zstd ${process.versions.zstd ?? "(not in node:zlib)"}; bindings: ${bindings.map((b) => b.name).join(", ") || "none"}; ` +
      `disk ${descriptor}: ${(dataBytes / MB).toFixed(0)} MB of data, ${chunks.length} chunks (avg ${(dataBytes / chunks.length / 1024).toFixed(0)} KiB), ` +
      `${distinct.length} distinct (${(distinctBytes / MB).toFixed(0)} MB); median of ${options.repeat} interleaved rounds`,
  );
  console.log("");
  console.log("| stage | variant | MB/s per CPU second | MB/s wall | CPU seconds vs the stage's baseline (*) |");
  console.log("|---|---|---:|---:|---:|");
  const cpuOf = (v: Variant): number => median(samples.get(v)!.map((x) => x.cpu));
  const baselineCpu = new Map(variants.filter((v) => v.baseline).map((v) => [v.stage, cpuOf(v)]));
  for (const v of variants) {
    const cpu = cpuOf(v);
    const wall = median(samples.get(v)!.map((x) => x.wall));
    const ratio = `${(cpu / baselineCpu.get(v.stage)!).toFixed(2)}x${v.baseline ? " (*)" : ""}`;
    console.log(`| ${v.stage} | ${v.name} | ${(v.bytes / MB / cpu).toFixed(0)} | ${(v.bytes / MB / wall).toFixed(0)} | ${ratio} |`);
  }
  if (hashWasm === null) console.log("\n(hash-wasm not installed: `npm install --no-save hash-wasm` to add it to the SHA-256 rows)");

  // Repository size by level: the distinct chunks of all four corpus disks, compressed once each.
  const corpusDescriptors = CORPUS_CTS.map((ct) => join(corpusDir, ct, "root.hdd", "DiskDescriptor.xml")).filter((d) => existsSync(d));
  if (corpusDescriptors.length > 0 && bindings.length > 0) {
    const all = new Map<string, Buffer>();
    let corpusData = 0;
    for (const d of corpusDescriptors) {
      const { runs: r } = await readDisk(d);
      corpusData += r.flat().reduce((s, b) => s + b.length, 0);
      distinctChunks(chunksOf(r, params), all);
    }
    const allChunks = [...all.values()];
    const plain = allChunks.reduce((s, c) => s + c.length, 0);
    console.log("");
    console.log(
      `Repository size by level: the ${all.size} distinct chunks (${(plain / MB).toFixed(0)} MB) of ${corpusDescriptors.length} corpus disks (${(corpusData / MB).toFixed(0)} MB of data), one object each (1 format byte + the zstd frame)`,
    );
    console.log("");
    console.log(`| level | ${bindings.map((b) => `${b.name} MB`).join(" | ")} | vs level ${options.levels.includes(3) ? 3 : options.levels[0]} |`);
    console.log(`|---:|${bindings.map(() => "---:|").join("")}---:|`);
    const sizes = new Map<number, number[]>();
    for (const level of options.levels)
      sizes.set(
        level,
        bindings.map((b) => allChunks.reduce((s, c) => s + 1 + b.compress(c, level, false).length, 0)),
      );
    const reference = sizes.get(options.levels.includes(3) ? 3 : options.levels[0]!)![0]!;
    for (const [level, bytes] of sizes)
      console.log(`| ${level} | ${bytes.map((b) => (b / MB).toFixed(1)).join(" | ")} | ${(bytes[0]! / reference).toFixed(3)} |`);
  }
  if (sink.n === -1) console.log(""); // keeps `sink` observable
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
