/**
 * What someone did to an object-lock repository's bucket (docs/object-lock.md), and
 * `check --repair`, which undoes it. Deleting without a version id or overwriting a
 * retained object destroys nothing, but leaves traces the normal listing does not show:
 *
 *  - hidden: the current version of a key is a delete marker, with data under it (the
 *    repository's view reads through it: backups still restore, prune still counts them);
 *  - overwritten: an object written once (config, key, manifest, side file, missing/
 *    record) has newer versions with other content (the view reads the first version);
 *  - junk chunk versions: a chunk version whose content does not match the chunk's id
 *    (found when versions of a chunk differ; read only with --read-data or --repair:
 *    legitimate re-uploads of a chunk also add versions, which verify);
 *  - stale delete markers: markers that are not current, or hide nothing.
 *
 * --repair deletes the markers and the extra versions for good (newer versions of objects
 * written once, non-verifying chunk versions): the first version becomes the current one
 * again. That needs credentials allowed to delete object versions (never the append-only
 * node's); junk that its writer put under retention stays until the retention ends.
 * Cost: one listing of every version in the repository (pages of 1000), plus a read of
 * each version of chunks with several versions of different content.
 */
import { IntegrityError } from "../errors.js";
import { LOCKS_PREFIX } from "../prune/locks.js";
import { CHUNKS_PREFIX } from "../repository/layout.js";
import type { Repository } from "../repository/repository.js";
import { isNotFound, type ObjectVersion } from "../uploader/store.js";

export interface ObjectLockScan {
  /** Keys whose current version is a delete marker over data. */
  hidden: string[];
  /** Objects written once that have newer versions of other content. */
  overwritten: string[];
  /** Chunk versions that do not match their id. */
  junkChunkVersions: number;
  /** Chunk keys whose versions differ in content but were not read (no --read-data / --repair). */
  chunksNotVerified: number;
  staleMarkers: number;
  /** With repair: what was removed, and what retention still protects. */
  repaired: { markersRemoved: number; versionsRemoved: number; retained: number } | null;
}

const MAX_NAMED = 1000;

export async function scanObjectLock(repo: Repository, options: { readData: boolean; repair: boolean }): Promise<ObjectLockScan> {
  const view = repo.objectLock;
  if (view === null) throw new Error("internal error: scanObjectLock on a repository without object lock");
  const scan: ObjectLockScan = { hidden: [], overwritten: [], junkChunkVersions: 0, chunksNotVerified: 0, staleMarkers: 0, repaired: null };
  const doomed: { key: string; versionId: string; marker: boolean }[] = [];

  const visit = async (group: ObjectVersion[]): Promise<void> => {
    const key = group[0]!.key;
    if (key.startsWith(LOCKS_PREFIX)) return;
    const data = group.filter((v) => !v.deleteMarker);
    const markers = group.filter((v) => v.deleteMarker);
    if (data.length > 0 && group[0]!.deleteMarker) {
      if (scan.hidden.length < MAX_NAMED) scan.hidden.push(key);
    } else {
      scan.staleMarkers += markers.length;
    }
    for (const m of markers) doomed.push({ key, versionId: m.versionId, marker: true });
    if (data.length < 2) return;
    if (!key.startsWith(CHUNKS_PREFIX)) {
      const first = data[data.length - 1]!;
      const newer = data.slice(0, -1);
      if (newer.some((v) => v.etag === undefined || v.etag !== first.etag) && scan.overwritten.length < MAX_NAMED) scan.overwritten.push(key);
      for (const v of newer) doomed.push({ key, versionId: v.versionId, marker: false });
      return;
    }
    if (data.every((v) => v.etag !== undefined && v.etag === data[0]!.etag)) return; // the same bytes uploaded twice
    if (!options.readData && !options.repair) {
      scan.chunksNotVerified++;
      return;
    }
    const idHex = key.slice(key.lastIndexOf("/") + 1);
    const junk: ObjectVersion[] = [];
    for (const v of data) {
      try {
        repo.chunkCodec.decode((await view.getVersion(key, v.versionId)).body, idHex, repo.config.chunker.maxSize);
      } catch (error) {
        if (!(error instanceof IntegrityError) && !isNotFound(error)) throw error;
        junk.push(v);
      }
    }
    // a chunk none of whose versions verifies is damage (the check reports it), not junk to remove
    if (junk.length === data.length) return;
    scan.junkChunkVersions += junk.length;
    for (const v of junk) doomed.push({ key, versionId: v.versionId, marker: false });
  };

  let group: ObjectVersion[] = [];
  for await (const v of view.listVersions("")) {
    if (group.length > 0 && group[0]!.key !== v.key) {
      await visit(group);
      group = [];
    }
    group.push(v);
  }
  if (group.length > 0) await visit(group);

  if (options.repair) {
    const { retained } = doomed.length === 0 ? { retained: [] } : await view.deleteVersions(doomed);
    const kept = new Set(retained.map((r) => `${r.key}\n${r.versionId}`));
    const removed = doomed.filter((d) => !kept.has(`${d.key}\n${d.versionId}`));
    scan.repaired = {
      markersRemoved: removed.filter((d) => d.marker).length,
      versionsRemoved: removed.filter((d) => !d.marker).length,
      retained: retained.length,
    };
  }
  return scan;
}
