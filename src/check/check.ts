/**
 * Repository verification: every manifest decodes, every chunk it references exists,
 * and (with readData) every referenced chunk decodes and hashes to its id. Memory is
 * proportional to the number of chunk ids (32 bytes each), never to the data.
 */
import { IntegrityError } from "../errors.js";
import { chunkIds, decodeManifest } from "../manifest/format.js";
import { readChunk } from "../restore/restore.js";
import { ChunkIdSet } from "../repository/chunk-id-set.js";
import { CHUNKS_PREFIX, DESCRIPTOR_NAME, backupPrefix } from "../repository/layout.js";
import type { BackupRef, Repository } from "../repository/repository.js";
import { TaskLimiter } from "../util/limiter.js";

export interface DamagedBackup {
  ct: string;
  id: string;
  problems: string[];
}

export interface CheckReport {
  backups: number;
  chunksStored: number;
  chunksReferenced: number;
  chunksUnreferenced: number;
  chunksRead: number;
  damaged: DamagedBackup[];
}

export interface CheckOptions {
  readData: boolean;
  concurrency: number;
  onProgress?: (done: number, total: number) => void;
}

const HEX_ID = /^[0-9a-f]{64}$/;

export async function checkRepository(repo: Repository, options: CheckOptions): Promise<CheckReport> {
  const storedIds: Buffer[] = [];
  const sideFiles = new Set<string>();
  for await (const info of repo.store.list(CHUNKS_PREFIX)) {
    const name = info.key.slice(info.key.lastIndexOf("/") + 1);
    if (HEX_ID.test(name) && info.key === `${CHUNKS_PREFIX}${name.slice(0, 2)}/${name}`) storedIds.push(Buffer.from(name, "hex"));
  }
  const stored = ChunkIdSet.empty().withAdded(storedIds);
  storedIds.length = 0;
  for await (const info of repo.store.list("backups/")) sideFiles.add(info.key);

  const refs = await repo.listBackups();
  const damaged = new Map<string, DamagedBackup>();
  const problem = (ref: BackupRef, text: string): void => {
    const key = `${ref.ct}/${ref.id}`;
    const entry = damaged.get(key) ?? { ct: ref.ct, id: ref.id, problems: [] };
    if (entry.problems.length < 20) entry.problems.push(text);
    damaged.set(key, entry);
  };
  let referenced = ChunkIdSet.empty();
  const decoded: { ref: BackupRef; ids: ChunkIdSet }[] = [];
  for (const ref of refs) {
    let ids: ChunkIdSet;
    try {
      const manifest = decodeManifest(await repo.getManifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
      ids = ChunkIdSet.empty().withAdded(chunkIds(manifest.entries));
      const configName = manifest.metadata.files.config;
      for (const name of [DESCRIPTOR_NAME, ...(configName ? [configName] : [])]) {
        if (!sideFiles.has(`${backupPrefix(ref.ct, ref.id)}${name}`)) problem(ref, `${name} missing`);
      }
    } catch (error) {
      problem(ref, error instanceof Error ? error.message : String(error));
      continue;
    }
    let missing = 0;
    for (const id of ids.ids()) {
      if (!stored.has(id)) {
        if (missing < 5) problem(ref, `chunk ${id.toString("hex")} missing`);
        missing++;
      }
    }
    if (missing > 5) problem(ref, `${missing - 5} more chunks missing`);
    referenced = referenced.withAdded(ids.ids());
    decoded.push({ ref, ids });
  }

  let chunksRead = 0;
  if (options.readData) {
    const bad = new Map<string, string>();
    const limiter = new TaskLimiter(options.concurrency);
    const total = referenced.size;
    for (const id of referenced.ids()) {
      if (!stored.has(id)) continue;
      const idHex = id.toString("hex");
      await limiter.submit(async () => {
        try {
          await readChunk(repo, idHex); // a chunk that does not verify is read a second time
        } catch (error) {
          // damage is what does not verify; a store that cannot be read fails the check itself
          if (!(error instanceof IntegrityError)) throw error;
          bad.set(idHex, error.message);
        }
        chunksRead++;
        options.onProgress?.(chunksRead, total);
      });
    }
    await limiter.drain();
    if (bad.size > 0) {
      for (const { ref, ids } of decoded) {
        for (const [idHex, message] of bad) if (ids.has(Buffer.from(idHex, "hex"))) problem(ref, message);
      }
    }
  }

  let unreferenced = 0;
  for (const id of stored.ids()) if (!referenced.has(id)) unreferenced++;
  return {
    backups: refs.length,
    chunksStored: stored.size,
    chunksReferenced: referenced.size,
    chunksUnreferenced: unreferenced,
    chunksRead,
    damaged: [...damaged.values()],
  };
}
