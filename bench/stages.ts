/**
 * Where a backup's time goes: each CPU stage of ploopvault's backup pipeline measured
 * alone, on one thread, over one disk (default: disk 101 of a corpus), so a missed
 * target in bench/run.ts can be pinned on a stage.
 *
 *   node dist/bench/stages.js DISK_DESCRIPTOR [--avg KIB] [--level N] [--repeat N]
 *
 * Stages: read (logical disk, 8 MiB blocks, page cache warm after the first pass),
 * chunk (read + FastCDC cut points), sha256 (chunk ids), zstd (every chunk, level 3)
 * and zstd of the distinct chunks only (what a first backup compresses).
 * Reported as MB/s of the disk's data bytes (holes excluded), best of --repeat runs.
 */
import { createHash } from "node:crypto";
import { StreamChunker, chunkerParamsForAverage } from "../src/chunker/index.js";
import { openLogicalDisk, type LogicalDisk } from "../src/ploop/disk.js";
import { zstdCompress } from "../src/util/zstd.js";

const BLOCK = 8 << 20;

async function forEachBlock(disk: LogicalDisk, fn: (block: Buffer) => void): Promise<number> {
  const buf = Buffer.allocUnsafe(BLOCK);
  let bytes = 0;
  for (const run of disk.allocatedRuns()) {
    for (let at = run.offset; at < run.offset + run.length; at += BLOCK) {
      const view = buf.subarray(0, Math.min(BLOCK, run.offset + run.length - at));
      await disk.read(at, view);
      fn(view);
      bytes += view.length;
    }
  }
  return bytes;
}

async function main(argv: string[]): Promise<void> {
  const descriptor = argv.find((a) => !a.startsWith("--"));
  if (descriptor === undefined) throw new Error("usage: node dist/bench/stages.js DISK_DESCRIPTOR [--avg KIB] [--level N] [--repeat N]");
  const opt = (name: string, dflt: number): number => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  const params = chunkerParamsForAverage(opt("--avg", 256) * 1024);
  const level = opt("--level", 3);
  const repeat = opt("--repeat", 3);
  const disk = await openLogicalDisk(descriptor);
  const results = new Map<string, number>();
  const best = (name: string, seconds: number): void => {
    results.set(name, Math.min(results.get(name) ?? Infinity, seconds));
  };
  let dataBytes = 0;
  let chunks: Buffer[] = [];
  try {
    for (let r = 0; r < repeat; r++) {
      let t = performance.now();
      dataBytes = await forEachBlock(disk, () => undefined);
      best("read", (performance.now() - t) / 1000);

      chunks = [];
      t = performance.now();
      // Chunk per allocated run as the pipeline does; keep copies of the chunks for the next stages.
      for (const run of disk.allocatedRuns()) {
        const chunker = new StreamChunker(params);
        const buf = Buffer.allocUnsafe(BLOCK);
        for (let at = run.offset; at < run.offset + run.length; at += BLOCK) {
          const view = buf.subarray(0, Math.min(BLOCK, run.offset + run.length - at));
          await disk.read(at, view);
          for (const c of chunker.push(view)) chunks.push(Buffer.from(c));
        }
        const last = chunker.finish();
        if (last) chunks.push(Buffer.from(last));
      }
      best("read + chunk (incl. copying chunks out)", (performance.now() - t) / 1000);

      t = performance.now();
      const ids = chunks.map((c) => createHash("sha256").update(c).digest("hex"));
      best("sha256", (performance.now() - t) / 1000);

      const distinct = new Map<string, Buffer>();
      chunks.forEach((c, i) => distinct.set(ids[i]!, c));
      t = performance.now();
      let compressed = 0;
      for (const c of distinct.values()) compressed += zstdCompress(c, level).length;
      best(`zstd -${level}, distinct chunks`, (performance.now() - t) / 1000);
      results.set("_distinctBytes", [...distinct.values()].reduce((s, c) => s + c.length, 0));
      results.set("_compressed", compressed);
    }
  } finally {
    await disk.close();
  }
  const MB = 1e6;
  console.log(`disk ${descriptor}: ${(dataBytes / MB).toFixed(0)} MB of data, ${chunks.length} chunks (avg ${(dataBytes / chunks.length / 1024).toFixed(0)} KiB)`);
  console.log("| stage (one thread) | seconds | MB/s of input |");
  console.log("|---|---:|---:|");
  for (const [name, seconds] of results) {
    if (name.startsWith("_")) continue;
    const input = name.startsWith("zstd") ? results.get("_distinctBytes")! : dataBytes;
    console.log(`| ${name} | ${seconds.toFixed(2)} | ${(input / MB / seconds).toFixed(0)} |`);
  }
  const distinctBytes = results.get("_distinctBytes")!;
  console.log(`distinct chunks: ${(distinctBytes / MB).toFixed(0)} MB -> ${(results.get("_compressed")! / MB).toFixed(0)} MB with zstd -${level}`);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
