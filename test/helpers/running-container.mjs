#!/usr/bin/env node
/**
 * Simulates a running container writing to its ploop disk, for the snapshot lifecycle
 * tests. Plain JS, run as a child process:
 *
 *   node test/helpers/running-container.mjs --dd DIR/DiskDescriptor.xml --log FILE
 *        [--clusters N] [--first K] [--interval-ms MS] [--flock flock]
 *
 * Each write, in a loop until SIGTERM:
 *  1. takes DiskDescriptor.xml.lck with flock(2) (util-linux `flock`), exactly the lock
 *     ploop 1.15 holds during snapshot/merge: this stands in for the kernel freezing I/O
 *     while a snapshot is taken or merged, so no write can fall into the middle of one;
 *  2. re-reads DiskDescriptor.xml (regexes, independent of src/ploop) and finds the top;
 *  3. writes one whole cluster into the CURRENT TOP image: virtual cluster
 *     K + (seq mod N), reusing the top's own mapping if it has one, else appending a new
 *     cluster at the end of the file; data is fsynced before the BAT entry (the kernel's
 *     order), then CIF_Empty is cleared and the file fsynced again;
 *  4. appends a JSON line to the log: {seq, cluster, image, fileCluster, chain} where
 *     chain is the GUID path from the top down to the base at the time of the write;
 *  5. releases the lock.
 * The cluster content is the 32-byte unit "PVSIM-seq=%010d cl=%07d\n" repeated, so a
 * reader can tell which write a cluster holds. Prints "ready" after the first write.
 */
import { spawn } from "node:child_process";
import { appendFileSync, closeSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, writeSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";

const TOP = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";
const NONE = "{00000000-0000-0000-0000-000000000000}";
const UNIT = 32;

function parseArgs(argv) {
  const o = { clusters: 16, first: 0, intervalMs: 5, flock: "flock" };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`missing value for ${k}`);
    if (k === "--dd") o.dd = resolve(v);
    else if (k === "--log") o.log = resolve(v);
    else if (k === "--clusters") o.clusters = Number(v);
    else if (k === "--first") o.first = Number(v);
    else if (k === "--interval-ms") o.intervalMs = Number(v);
    else if (k === "--flock") o.flock = v;
    else throw new Error(`unknown option ${k}`);
  }
  if (!o.dd || !o.log) throw new Error("usage: running-container.mjs --dd DiskDescriptor.xml --log FILE");
  return o;
}

/** Content of one write (see the header comment). */
function clusterPattern(seq, cluster, clusterBytes) {
  const unit = `PVSIM-seq=${String(seq).padStart(10, "0")} cl=${String(cluster).padStart(7, "0")}\n`;
  if (unit.length !== UNIT) throw new Error("pattern unit must be 32 bytes");
  return Buffer.alloc(clusterBytes, unit, "latin1");
}

/** Take flock(2) on `path`; resolves with a release function once held. */
function lock(flockBin, path) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(flockBin, ["-x", "-o", path, "sh", "-c", "echo locked; exec cat >/dev/null"], { stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`flock on ${path} exited ${code} before locking`)));
    child.stdout.on("data", (d) => {
      out += d.toString();
      if (!out.includes("locked\n")) return;
      child.removeAllListeners("exit");
      resolvePromise(
        () =>
          new Promise((done) => {
            if (child.exitCode !== null) return done();
            child.once("exit", () => done());
            child.stdin.end();
          }),
      );
    });
  });
}

function readDescriptor(dd) {
  const xml = readFileSync(dd, "utf8");
  const topGuid = (/<TopGUID>\s*([^<\s]+)\s*<\/TopGUID>/.exec(xml)?.[1] ?? TOP).toLowerCase();
  const files = new Map();
  for (const m of xml.matchAll(/<Image>([\s\S]*?)<\/Image>/g)) {
    const guid = /<GUID>\s*([^<\s]+)\s*<\/GUID>/.exec(m[1])?.[1]?.toLowerCase();
    const file = /<File>\s*([^<]+?)\s*<\/File>/.exec(m[1])?.[1];
    if (guid && file) files.set(guid, isAbsolute(file) ? file : resolve(dirname(dd), file));
  }
  const parents = new Map();
  for (const m of xml.matchAll(/<Shot>([\s\S]*?)<\/Shot>/g)) {
    const guid = /<GUID>\s*([^<\s]+)\s*<\/GUID>/.exec(m[1])?.[1]?.toLowerCase();
    const parent = /<ParentGUID>\s*([^<\s]+)\s*<\/ParentGUID>/.exec(m[1])?.[1]?.toLowerCase();
    if (guid && parent) parents.set(guid, parent);
  }
  const chain = [];
  for (let g = topGuid; g && g !== NONE && chain.length < 130; g = parents.get(g)) chain.push(g);
  const topFile = files.get(topGuid);
  if (!topFile) throw new Error(`${dd}: no image for top ${topGuid}`);
  return { topFile, chain };
}

/** Write one cluster into the top image; returns the file cluster used. */
function writeCluster(path, cluster, data) {
  const fd = openSync(path, "r+");
  try {
    const h = Buffer.alloc(64);
    readSync(fd, h, 0, 64, 0);
    const sig = h.toString("latin1", 0, 16);
    const version = sig === "WithouFreSpacExt" ? 2 : sig === "WithoutFreeSpace" ? 1 : 0;
    if (version === 0) throw new Error(`${path}: not a ploop image`);
    const clusterSectors = h.readUInt32LE(0x1c);
    const clusterBytes = clusterSectors * 512;
    if (cluster >= h.readUInt32LE(0x20)) throw new Error(`${path}: cluster ${cluster} outside the disk`);
    const slot = Buffer.alloc(4);
    readSync(fd, slot, 0, 4, 64 + 4 * cluster);
    const entry = slot.readUInt32LE(0);
    let fileCluster;
    if (entry !== 0) {
      fileCluster = version === 2 ? entry : entry / clusterSectors;
    } else {
      fileCluster = Math.ceil(fstatSync(fd).size / clusterBytes);
    }
    writeSync(fd, data, 0, clusterBytes, fileCluster * clusterBytes);
    fsyncSync(fd); // data before the BAT entry, as the kernel does
    if (entry === 0) {
      slot.writeUInt32LE(version === 2 ? fileCluster : fileCluster * clusterSectors, 0);
      writeSync(fd, slot, 0, 4, 64 + 4 * cluster);
      h.writeUInt32LE(h.readUInt32LE(0x34) & ~0x1, 0x34); // holds data: CIF_Empty off
      writeSync(fd, h, 0x34, 4, 0x34);
      fsyncSync(fd);
    }
    return { fileCluster, clusterBytes };
  } finally {
    closeSync(fd);
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let stopping = false;
  process.on("SIGTERM", () => {
    stopping = true;
  });
  const lck = `${o.dd}.lck`;
  let seq = 0;
  while (!stopping) {
    const release = await lock(o.flock, lck);
    try {
      const { topFile, chain } = readDescriptor(o.dd);
      const cluster = o.first + (seq % o.clusters);
      const clusterBytes = (() => {
        const fd = openSync(topFile, "r");
        try {
          const h = Buffer.alloc(64);
          readSync(fd, h, 0, 64, 0);
          return h.readUInt32LE(0x1c) * 512;
        } finally {
          closeSync(fd);
        }
      })();
      const { fileCluster } = writeCluster(topFile, cluster, clusterPattern(seq, cluster, clusterBytes));
      appendFileSync(o.log, `${JSON.stringify({ seq, cluster, image: topFile, fileCluster, chain, time: Date.now() })}\n`);
    } finally {
      await release();
    }
    if (seq === 0) process.stdout.write("ready\n");
    seq++;
    if (o.intervalMs > 0) await new Promise((r) => setTimeout(r, o.intervalMs));
  }
  process.stdout.write(`stopped after ${seq} writes\n`);
}

main().catch((error) => {
  process.stderr.write(`running-container: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
