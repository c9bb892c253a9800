/** Shared helpers of the ploop tests: scratch dirs, recognisable data, hashing. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function scratchDir(tag: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `ploopvault-${tag}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * `length` bytes that say where they are: 16-byte units "S<seed>C<cluster>O<offset>",
 * so a misplaced cluster or a wrong offset shows up in a diff, and no two clusters match.
 */
export function pattern(seed: number, cluster: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let off = 0; off < length; off += 16) {
    buf.write(`S${seed}C${cluster}O${off}`.padEnd(16, ".").slice(0, 16), off, "latin1");
  }
  return buf;
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** Write a sparse raw disk of `sizeBytes` with the given clusters filled. */
export async function writeRawDisk(path: string, sizeBytes: number, clusterBytes: number, clusters: Map<number, Buffer>): Promise<void> {
  const fh = await open(path, "w");
  try {
    await fh.truncate(sizeBytes);
    for (const [c, data] of clusters) await fh.write(data, 0, data.length, c * clusterBytes);
  } finally {
    await fh.close();
  }
}
