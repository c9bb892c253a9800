/**
 * The pure part of `copy` (docs/copy.md): which backups to copy, and how chunk ids of the
 * source map to the destination's.
 *
 * A backup is identified by container and backup id in both repositories (the copy keeps
 * its id, time, host and stats). Ids are keyed per repository: SHA-256 in unencrypted
 * repositories (the same in both), HMAC-SHA256 under each encrypted repository's own key
 * otherwise. Where they differ the destination id of a chunk is only known from its
 * content, except for chunks of a backup copied before: the source's and the
 * destination's manifests of one backup have the same entries in the same order (the copy
 * keeps the chunk boundaries), so zipping them maps every chunk of that backup. Copying
 * the next backup of the container then downloads only the chunks that map (and the
 * chunks copied in the same run) does not know.
 */
import type { Manifest } from "../manifest/format.js";
import type { ChunkCodec } from "../repository/chunk-codec.js";
import { ChunkIdHashSet } from "../repository/chunk-id-set.js";
import type { BackupRef } from "../repository/repository.js";

export interface CopySelection {
  /** In container order, oldest first within a container. */
  toCopy: BackupRef[];
  /** Selected, but the destination has them already. */
  present: BackupRef[];
}

/**
 * The source backups to copy: those of `cts` (all when absent), only the `last` newest of
 * each container when given, minus the ones the destination has ("ct/id" in `present`).
 */
export function selectBackups(
  source: readonly BackupRef[],
  present: ReadonlySet<string>,
  filter: { cts?: readonly string[]; last?: number } = {},
): CopySelection {
  const byCt = new Map<string, BackupRef[]>();
  for (const ref of source) {
    if (filter.cts !== undefined && !filter.cts.includes(ref.ct)) continue;
    let list = byCt.get(ref.ct);
    if (list === undefined) byCt.set(ref.ct, (list = []));
    list.push(ref);
  }
  const out: CopySelection = { toCopy: [], present: [] };
  for (const ct of [...byCt.keys()].sort()) {
    // backup ids start with their time: sorting them sorts by time
    let refs = byCt.get(ct)!.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (filter.last !== undefined) refs = refs.slice(Math.max(0, refs.length - filter.last));
    for (const ref of refs) (present.has(`${ref.ct}/${ref.id}`) ? out.present : out.toCopy).push(ref);
  }
  return out;
}

/** True when a chunk has the same id in both repositories (no re-id, objects copied as they are, after verification). */
export function sameIdSpace(source: ChunkCodec, destination: ChunkCodec): boolean {
  return !source.encrypted && !destination.encrypted;
}

/** Source chunk id -> destination chunk id, ~80 bytes per chunk (no object per entry). */
export class ChunkIdMap {
  private readonly keys = new ChunkIdHashSet();
  private values = Buffer.allocUnsafe(32 * 1024);

  get size(): number {
    return this.keys.size;
  }

  set(source: Uint8Array, destination: Uint8Array): void {
    const index = this.keys.add(source);
    if ((index + 1) * 32 > this.values.length) {
      const bigger = Buffer.allocUnsafe(this.values.length * 2);
      this.values.copy(bigger);
      this.values = bigger;
    }
    this.values.set(destination.subarray(0, 32), index * 32);
  }

  get(source: Uint8Array): Buffer | undefined {
    const index = this.keys.indexOf(source);
    return index < 0 ? undefined : this.values.subarray(index * 32, index * 32 + 32);
  }
}

/**
 * The id map of one backup present in both repositories, from its two manifests; null
 * when their entries do not line up (not a copy of each other: never guess).
 */
export function pairIdMap(source: Manifest, destination: Manifest, into: ChunkIdMap = new ChunkIdMap()): ChunkIdMap | null {
  if (source.entries.length !== destination.entries.length || source.metadata.disk.logicalBytes !== destination.metadata.disk.logicalBytes) return null;
  for (let i = 0; i < source.entries.length; i++) {
    const s = source.entries[i]!;
    const d = destination.entries[i]!;
    if (s.kind !== d.kind || s.offset !== d.offset || s.length !== d.length) return null;
  }
  for (let i = 0; i < source.entries.length; i++) {
    const s = source.entries[i]!;
    const d = destination.entries[i]!;
    if (s.kind === "chunk" && d.kind === "chunk") into.set(s.id, d.id);
  }
  return into;
}
