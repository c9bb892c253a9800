/**
 * Where the CPU time of a ploopvault run went, by pipeline stage, from the .cpuprofile
 * files `node --cpu-prof --cpu-prof-dir=DIR dist/src/cli.js ...` writes (one per thread:
 * the main thread and every chunk worker).
 *
 *   node dist/bench/profile-summary.js DIR [--top N]
 *
 * Each sample's self time goes to the first stage whose pattern matches its function or
 * script; "(idle)" is time the thread waited (for I/O, for workers, for the main thread).
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const STAGES: [string, RegExp][] = [
  ["idle (waiting)", /^\(idle\)/],
  ["garbage collection", /^\(garbage collector\)/],
  ["chunking (FastCDC)", /^(findCut|push|finish) .*chunker\//],
  ["SHA-256 / HMAC (chunk ids)", /^(update|digest|Hash|Hmac) .*crypto\/hash/],
  ["zstd compress", /^(compress|compress2) /],
  ["zstd decompress", /^(decompress|decompressBound|getFrameContentSize|findFrameCompressedSize) /],
  ["encryption (AES-GCM)", /(cipher|Cipher|Decipher|aead)/],
  ["copies and worker messages", /^(postMessage|set|_copyActual|FastBuffer|concat|copy|from|allocUnsafe|subarray) /],
  [
    "file I/O (read, write, fsync, open)",
    /^(read|write|writeBuffer|fsync|open|openFileHandle|close|fstat|stat|lstat|mkdir|rename|link|unlink|readFileHandle|writeFileHandle|fdatasync) /,
  ],
  ["module loading (start-up)", /(modules\/|cjs-module-lexer|compileSourceTextModule|wrapSafe|compileForInternalLoader|internalModuleStat|detectModuleFormat)/],
  ["network (S3)", /(@smithy|@aws-sdk|_http_|node:net|node:tls|writev|onStreamRead)/],
];

function stageOf(frame: CallFrame): string {
  const key = `${frame.functionName || "(anonymous)"} ${frame.url}`;
  for (const [name, pattern] of STAGES) if (pattern.test(key)) return name;
  return "other JavaScript";
}

async function main(argv: string[]): Promise<void> {
  const dir = argv.find((a) => !a.startsWith("--"));
  if (dir === undefined) throw new Error("usage: node dist/bench/profile-summary.js DIR [--top N]");
  const topIndex = argv.indexOf("--top");
  const top = topIndex >= 0 ? Number(argv[topIndex + 1]) : 0;
  const files = (await readdir(dir)).filter((f) => f.endsWith(".cpuprofile")).sort();
  const total = new Map<string, number>();
  console.log(`| thread | wall s | ${STAGES.map(([n]) => n).join(" | ")} | other JavaScript |`);
  console.log(`|---|---:|${STAGES.map(() => "---:").join("|")}|---:|`);
  const functions = new Map<string, number>();
  for (const file of files) {
    const p = JSON.parse(await readFile(join(dir, file), "utf8")) as Profile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const stages = new Map<string, number>();
    for (let i = 0; i < p.samples.length; i++) {
      const frame = byId.get(p.samples[i]!)!.callFrame;
      const us = p.timeDeltas[i] ?? 0;
      const stage = stageOf(frame);
      stages.set(stage, (stages.get(stage) ?? 0) + us);
      total.set(stage, (total.get(stage) ?? 0) + us);
      const fn = `${frame.functionName || "(anonymous)"} ${frame.url.split("/").slice(-2).join("/")}:${frame.lineNumber}`;
      functions.set(fn, (functions.get(fn) ?? 0) + us);
    }
    // file names: CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 = main
    const thread = file.split(".")[4] === "0" ? "main" : `worker ${file.split(".")[4]}`;
    const s = (name: string): string => ((stages.get(name) ?? 0) / 1e6).toFixed(2);
    console.log(`| ${thread} | ${((p.endTime - p.startTime) / 1e6).toFixed(2)} | ${STAGES.map(([n]) => s(n)).join(" | ")} | ${s("other JavaScript")} |`);
  }
  const t = (name: string): string => ((total.get(name) ?? 0) / 1e6).toFixed(2);
  console.log(`| all threads | | ${STAGES.map(([n]) => t(n)).join(" | ")} | ${t("other JavaScript")} |`);
  if (top > 0) {
    console.log(`\ntop ${top} functions by self time (all threads):`);
    for (const [fn, us] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${(us / 1e6).toFixed(3)} s  ${fn}`);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
