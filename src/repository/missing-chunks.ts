/**
 * Chunks known to be missing or damaged, so that backups heal them (restic's backup
 * likewise re-saves blobs its index lacks). The known-chunk set comes from manifests, so
 * without this record a chunk lost from the store (a bad disk, a prune of a lapsed run, an
 * operator's mistake) would be referenced again by every later backup of the same data.
 *
 *   missing/<time>-<random>   {"format":"ploopvault-missing","version":1,"found":ISO,"by":HOST,"source":...,"ids":[hex...]}
 *
 * Written by `check` (everything it found missing or corrupt) and by any read that got a
 * 404 for a chunk. A backup leaves these ids out of its known set: it re-reads the data
 * they cover (an incremental backup re-reads just those chunks) and uploads them again,
 * which repairs every backup that references them. The next full `check` replaces the
 * records it read with one for what is still missing.
 *
 * Records are not secret (chunk ids are object names anyway) and are checked on reading:
 * a planted record costs re-uploads, never a wrong backup.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { ObjectStore } from "../uploader/store.js";

export const MISSING_PREFIX = "missing/";
const FORMAT = "ploopvault-missing";
const HEX_ID = /^[0-9a-f]{64}$/;
/** Ids per record object (~66 bytes each in JSON): a huge loss is several objects. */
const IDS_PER_RECORD = 100_000;
/** Records read at most (a hostile bucket must not make every backup read millions). */
const MAX_RECORDS = 1000;

export type MissingSource = "check" | "read";

/** Record these chunk ids (hex) as missing or damaged. */
export async function recordMissingChunks(store: ObjectStore, idsHex: readonly string[], source: MissingSource): Promise<void> {
  for (let i = 0; i < idsHex.length; i += IDS_PER_RECORD) {
    const ids = idsHex.slice(i, i + IDS_PER_RECORD);
    const found = new Date();
    const key = `${MISSING_PREFIX}${found.toISOString().replace(/[-:.]/g, "")}-${randomBytes(6).toString("hex")}`;
    const body = { format: FORMAT, version: 1, found: found.toISOString(), by: hostname(), source, ids };
    await store.put(key, Buffer.from(`${JSON.stringify(body)}\n`), { ifAbsent: true });
  }
}

export interface MissingChunks {
  /** Hex ids. */
  ids: Set<string>;
  /** The record objects they came from. */
  keys: string[];
}

/** Every recorded id; unreadable or malformed records are skipped (they only cost healing). */
export async function loadMissingChunks(store: ObjectStore): Promise<MissingChunks> {
  const ids = new Set<string>();
  const keys: string[] = [];
  for await (const info of store.list(MISSING_PREFIX)) {
    if (keys.length >= MAX_RECORDS) break;
    keys.push(info.key);
    try {
      const body = JSON.parse((await store.get(info.key)).toString("utf8")) as { format?: unknown; ids?: unknown };
      if (body.format !== FORMAT || !Array.isArray(body.ids)) continue;
      for (const id of body.ids.slice(0, IDS_PER_RECORD)) if (typeof id === "string" && HEX_ID.test(id)) ids.add(id);
    } catch {
      // gone meanwhile or damaged
    }
  }
  return { ids, keys };
}
