/**
 * Chooses the chunk size: for several average chunk sizes, chunk every disk of a corpus
 * and report objects stored vs. deduplication (and the cross-disk effects that matter:
 * the same files on a differently sized disk, a "next day" copy).
 *   node dist/bench/chunk-params.js CORPUS_DIR [AVG_KIB,...]
 * CORPUS_DIR holds <ct>/root.hdd/DiskDescriptor.xml (scripts/corpus.ts builds one).
 */
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { StreamChunker, chunkerParamsForAverage } from "../src/chunker/index.js";
import { openLogicalDisk } from "../src/ploop/disk.js";
import { zstdCompress } from "../src/util/zstd.js";

interface DiskChunks {
  ct: string;
  ids: Map<string, number>; // id -> compressed size
  dataBytes: number;
}

async function chunkDisk(descriptor: string, ct: string, avg: number): Promise<DiskChunks> {
  const disk = await openLogicalDisk(descriptor);
  const params = chunkerParamsForAverage(avg);
  const ids = new Map<string, number>();
  let dataBytes = 0;
  const buf = Buffer.allocUnsafe(8 << 20);
  try {
    for (const run of disk.allocatedRuns()) {
      const chunker = new StreamChunker(params);
      const take = (c: Buffer): void => {
        const id = createHash("sha256").update(c).digest("hex");
        if (!ids.has(id)) ids.set(id, zstdCompress(c, 3).length);
        dataBytes += c.length;
      };
      for (let at = run.offset; at < run.offset + run.length; at += buf.length) {
        const view = buf.subarray(0, Math.min(buf.length, run.offset + run.length - at));
        await disk.read(at, view);
        for (const c of chunker.push(view)) take(c);
      }
      const last = chunker.finish();
      if (last) take(last);
    }
  } finally {
    await disk.close();
  }
  return { ct, ids, dataBytes };
}

function newBytes(of: DiskChunks, given: DiskChunks[]): number {
  let n = 0;
  for (const [id, size] of of.ids) if (!given.some((g) => g.ids.has(id))) n += size;
  return n;
}

async function main(): Promise<void> {
  const corpus = process.argv[2];
  if (!corpus) throw new Error("usage: chunk-params CORPUS_DIR [AVG_KIB,...]");
  const avgs = (process.argv[3] ?? "64,128,256,512,1024,2048").split(",").map((k) => Number(k) * 1024);
  const cts = (await readdir(corpus, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  const MB = 1e6;
  console.log("| avg chunk | objects | unique MB (zstd) | data MB | dedup ratio | new MB 102 after 101 | new MB 104 after 101 | chunk+hash+zstd MB/s |");
  console.log("|---|---|---|---|---|---|---|---|");
  for (const avg of avgs) {
    const started = performance.now();
    const disks: DiskChunks[] = [];
    for (const ct of cts) disks.push(await chunkDisk(join(corpus, ct, "root.hdd", "DiskDescriptor.xml"), ct, avg));
    const seconds = (performance.now() - started) / 1000;
    const all = new Map<string, number>();
    for (const d of disks) for (const [id, size] of d.ids) all.set(id, size);
    const unique = [...all.values()].reduce((a, b) => a + b, 0);
    const data = disks.reduce((a, d) => a + d.dataBytes, 0);
    const byCt = (ct: string): DiskChunks | undefined => disks.find((d) => d.ct === ct);
    const d101 = byCt("101");
    const d102 = byCt("102");
    const d104 = byCt("104");
    const n102 = d101 && d102 ? (newBytes(d102, [d101]) / MB).toFixed(1) : "-";
    const n104 = d101 && d104 ? (newBytes(d104, [d101]) / MB).toFixed(1) : "-";
    console.log(
      `| ${avg / 1024} KiB | ${all.size} | ${(unique / MB).toFixed(1)} | ${(data / MB).toFixed(1)} | ${(data / unique).toFixed(2)} | ${n102} | ${n104} | ${(data / MB / seconds).toFixed(0)} |`,
    );
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
