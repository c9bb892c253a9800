/**
 * The fixture of the seeded and in-place restore tests (issue 15 item 4): container 101
 * backed up on two days from a copy of the corpus disk, with 256 KiB rewritten in each of
 * two clusters holding data in between (a real ploop delta), into an S3 repository behind
 * a proxy that counts chunk GETs on the wire, or an encrypted local one (HMAC ids).
 * Yesterday's backup is restored as a raw file (the seed, or the file restored over); the
 * real ploop's flattening of today's disk is the oracle of every result.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { expect } from "vitest";
import { decodeManifest, type Manifest } from "../../src/manifest/format.js";
import { sha256File } from "../ploop/fixtures.js";
import { jsonLines, localRepo, runCli, s3Repo, type CliResult, type RepoTarget } from "./cli.js";
import { copyContainer } from "./corpus.js";
import { writeClusterToTop } from "./delta-writer.js";
import { startFaultProxy, type FaultProxy } from "./fault-proxy.js";
import { ploopFlatten } from "./ploop-tool.js";
import { testS3 } from "./s3-server.js";

export const TWO_DAYS_CT = "101";
/** Clusters of the corpus disk holding data, 256 KiB of each rewritten on day two. */
const CHANGED_CLUSTERS = [30, 60];
const MIB = 1024 * 1024;

export type TwoDaysKind = "s3" | "encrypted";

export interface TwoDays {
  repo: RepoTarget;
  /** The environment of every command (S3: the endpoint is the counting proxy; encrypted: the password). */
  env: Record<string, string>;
  work: string;
  yesterdayId: string;
  /** Yesterday's backup restored as a sparse raw file (owner-only, as restore makes it). */
  yesterdayRaw: string;
  /** Today's manifest: s3 only (an encrypted one is not readable here), else null. */
  today: Manifest | null;
  /** The repository's largest chunk: s3 only, else 0. */
  maxChunk: number;
  /** SHA-256 of today's disk as the real ploop flattens it. */
  todaySha: string;
  /** Chunk objects that today's backup added: yesterday's file does not hold them. */
  chunksAddedToday: string[];
  /** Chunk GETs the proxy saw since the last resetGets() (s3; always 0 otherwise). */
  readonly gets: number;
  resetGets(): void;
  /** Called on every chunk GET the proxy sees (s3), e.g. to kill a restore mid-way. */
  onChunkGet: (() => void) | null;
  /** A command on the repository: `args[0]` is the subcommand, the repository options follow it. */
  cli(args: string[]): Promise<CliResult>;
  cleanup(): Promise<void>;
}

/** Backup `id` of container `ct`'s manifest, read from the repository (unencrypted only). */
export async function manifestOf(repo: RepoTarget, ct: string, id: string): Promise<Manifest> {
  const key = `backups/${ct}/${id}/manifest`;
  return decodeManifest(await repo.read(key), key);
}

export async function backUpTwoDays(kind: TwoDaysKind, name: string): Promise<TwoDays> {
  const work = await mkdtemp(join(tmpdir(), `pv-${name}-`));
  let gets = 0;
  let proxy: FaultProxy | null = null;
  let repo: RepoTarget;
  let env: Record<string, string>;
  const hooks: { onChunkGet: (() => void) | null } = { onChunkGet: null };
  if (kind === "s3") {
    repo = await s3Repo(name);
    proxy = await startFaultProxy({
      target: testS3().endpoint,
      decide: (req) => {
        if (req.method === "GET" && req.path.includes("/chunks/")) {
          gets++;
          hooks.onChunkGet?.();
        }
        return null;
      },
    });
    env = { ...repo.env, AWS_ENDPOINT_URL: proxy.url };
  } else {
    repo = await localRepo();
    env = { PLOOPVAULT_PASSWORD: `${name} test password` };
  }
  const cli = (args: string[]): Promise<CliResult> => runCli([args[0]!, ...repo.args, ...args.slice(1)], { env });
  const init = await cli(["init", "--chunk-avg", "256K", ...(kind === "encrypted" ? ["--encrypt"] : [])]);
  expect(init.code, init.stderr).toBe(0);
  const maxChunk = kind === "s3" ? (JSON.parse((await repo.read("config")).toString()) as { chunker: { maxSize: number } }).chunker.maxSize : 0;

  const copy = await copyContainer(TWO_DAYS_CT);
  try {
    const dd = join(copy, "root.hdd", "DiskDescriptor.xml");
    const day1 = await cli(["backup", "--disk", dd, "--name", TWO_DAYS_CT, "--time", "2026-01-01T02:00:00Z", "--json", "-q"]);
    expect(day1.code, day1.stderr).toBe(0);
    const yesterdayId = jsonLines<{ backup: string }>(day1.stdout)[0]!.backup;
    const yesterdayRaw = join(work, "yesterday.raw");
    const restored = await cli(["restore", `${TWO_DAYS_CT}/${yesterdayId}`, "--format", "raw", "--target", yesterdayRaw, "-q"]);
    expect(restored.code, restored.stderr).toBe(0);
    const chunksBefore = new Set(await repo.listKeys("chunks/"));

    const yesterday = kind === "s3" ? await manifestOf(repo, TWO_DAYS_CT, yesterdayId) : null;
    for (const c of CHANGED_CLUSTERS) {
      // the change must land in data, or it would change nothing the restores compare
      if (yesterday !== null) expect(yesterday.entries.some((e) => e.kind === "chunk" && e.offset < (c + 1) * MIB && c * MIB < e.offset + e.length)).toBe(true);
      await writeClusterToTop(dd, c, randomBytes(256 * 1024));
    }
    const day2 = await cli(["backup", "--disk", dd, "--name", TWO_DAYS_CT, "--time", "2026-01-02T02:00:00Z", "--json", "-q"]);
    expect(day2.code, day2.stderr).toBe(0);
    const chunksAddedToday = (await repo.listKeys("chunks/")).filter((k) => !chunksBefore.has(k));
    expect(chunksAddedToday.length).toBeGreaterThan(0);
    const today = kind === "s3" ? await manifestOf(repo, TWO_DAYS_CT, jsonLines<{ backup: string }>(day2.stdout)[0]!.backup) : null;

    const flat = join(work, "today.flat");
    await ploopFlatten(dd, flat);
    const todaySha = await sha256File(flat);
    await rm(flat);
    return {
      repo,
      env,
      work,
      yesterdayId,
      yesterdayRaw,
      today,
      maxChunk,
      todaySha,
      chunksAddedToday,
      get gets(): number {
        return gets;
      },
      resetGets: (): void => {
        gets = 0;
      },
      get onChunkGet(): (() => void) | null {
        return hooks.onChunkGet;
      },
      set onChunkGet(hook: (() => void) | null) {
        hooks.onChunkGet = hook;
      },
      cli,
      cleanup: async (): Promise<void> => {
        await proxy?.close();
        await repo.cleanup();
        await rm(work, { recursive: true, force: true });
      },
    };
  } finally {
    await rm(copy, { recursive: true, force: true });
  }
}

/**
 * Chunk entries of `manifest` whose bytes in `file` (zeros past its end) do not hash to
 * their id with SHA-256 (an unencrypted repository's ids), chunks of zeros left out as
 * restore leaves them out: how many entries, and how many distinct ids.
 */
export function differingChunks(manifest: Manifest, maxChunk: number, file: Buffer): { entries: number; ids: number } {
  const ids = new Set<string>();
  let entries = 0;
  const zeroId = createHash("sha256").update(Buffer.alloc(maxChunk)).digest();
  for (const e of manifest.entries) {
    if (e.kind !== "chunk" || (e.length === maxChunk && e.id.equals(zeroId))) continue;
    const bytes = Buffer.alloc(e.length);
    if (e.offset < file.length) file.copy(bytes, 0, e.offset, Math.min(file.length, e.offset + e.length));
    if (!createHash("sha256").update(bytes).digest().equals(e.id)) {
      entries++;
      ids.add(e.id.toString("hex"));
    }
  }
  return { entries, ids: ids.size };
}

/** Allocated extents of a file, in bytes [start, end), from e2fsprogs' filefrag (the kernel's FIEMAP). */
export async function fileExtents(path: string): Promise<[number, number][]> {
  const out = (await execa("filefrag", ["-e", path])).stdout;
  const block = Number(/blocks of (\d+) bytes/.exec(out)![1]);
  const extents: [number, number][] = [];
  for (const m of out.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) extents.push([Number(m[1]) * block, (Number(m[2]) + 1) * block]);
  return extents;
}
