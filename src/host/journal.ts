/**
 * Journal of ploop snapshots in flight (docs/ploop.md 3.10): one small JSON file per
 * snapshot under <stateDir>/journal/, written durably BEFORE `ploop snapshot` runs, so a
 * run that dies at any point leaves enough behind for the next run to find and merge
 * the snapshot it created - and only that one.
 *
 * Durability: write a temp file, fsync it, rename it over the entry, fsync the directory.
 * A reader sees the old entry or the new one, never half of one.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { mkdir, open, readdir, readFile, rename, rm, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { errorLine, PloopvaultError } from "../errors.js";
import { normaliseGuid } from "../ploop/descriptor.js";
import { syncCounted } from "../util/cost-tally.js";
import { isProcessAlive } from "../util/process-alive.js";

export const JOURNAL_VERSION = 1;

export type JournalState = "snapshot-pending" | "snapshot-taken" | "merging";
const STATES: readonly JournalState[] = ["snapshot-pending", "snapshot-taken", "merging"];

/**
 * The image that `ploop snapshot-delete -u S` merges into S's image and then deletes (S's
 * only child), as it was when the merge was journaled. If ploop dies after switching the
 * descriptor but before its unlink, this file is left behind unlisted; recovery removes
 * it only if it is still this very file (same device and inode) and no descriptor image.
 */
export interface MergeChild {
  /** Absolute path. */
  path: string;
  /** st_dev and st_ino as decimal strings (64-bit values). */
  dev: string;
  ino: string;
}

export interface JournalEntry {
  version: 1;
  ct: string;
  /** Absolute path of the DiskDescriptor.xml the snapshot was taken on. */
  descriptorPath: string;
  /** Lower-case braced GUID. */
  snapshotGuid: string;
  tool: "ploop";
  state: JournalState;
  pid: number;
  host: string;
  /** ISO 8601. */
  startedAt: string;
  /** Set when the entry is (or was) "merging": what the merge deletes at its end. */
  mergeChild?: MergeChild;
}

export interface CorruptJournalEntry {
  /** Absolute path of the unreadable entry file (left in place for the admin). */
  file: string;
  reason: string;
}

export interface JournalListing {
  entries: JournalEntry[];
  corrupt: CorruptJournalEntry[];
}

export class JournalError extends PloopvaultError {}

/**
 * Snapshot GUIDs ploopvault makes carry its mark, so that they are recognised in a
 * DiskDescriptor.xml even when the state dir (journal, kept records) is lost:
 *
 *   {70766c74-OOOO-8OOO-vrrr-rrrrrrrrrrrr}
 *
 * 70766c74 is ASCII "pvlt"; OOOOOOO (28 bits) identifies the state dir (a hash of its
 * absolute path, so a reinstalled or wiped state dir at the same path keeps it); "8" is
 * the RFC 9562 version of a custom-layout UUID, v the variant (8, 9, a or b); r are 62
 * random bits. ploop and vzctl generate random version-4 GUIDs, which can never match.
 */
export const OWN_GUID_TAG = "70766c74";
const OWN_GUID_RE = /^\{70766c74-([0-9a-f]{4})-8([0-9a-f]{3})-[89ab][0-9a-f]{3}-[0-9a-f]{12}\}$/;

/** The 7-hex-digit owner id of a state dir (from its absolute path). */
export function stateDirOwnerId(stateDir: string): string {
  return createHash("sha256")
    .update(`ploopvault-state-dir\0${resolve(stateDir)}`)
    .digest("hex")
    .slice(0, 7);
}

/**
 * A new snapshot GUID, lower-case and braced. With `ownerId`: ploopvault's mark (see
 * above); without: a plain random version-4 GUID.
 */
export function newSnapshotGuid(ownerId?: string): string {
  if (ownerId === undefined) return `{${randomUUID()}}`;
  if (!/^[0-9a-f]{7}$/.test(ownerId)) throw new JournalError(`invalid snapshot owner id "${ownerId}"`);
  const r = randomBytes(8).toString("hex"); // 64 bits, 62 used
  const variant = "89ab"[parseInt(r[0]!, 16) & 3]!;
  return `{${OWN_GUID_TAG}-${ownerId.slice(0, 4)}-8${ownerId.slice(4)}-${variant}${r.slice(1, 4)}-${r.slice(4, 16)}}`;
}

/** The owner id in a GUID ploopvault made, or null for any other GUID (user, vzctl, ploop). */
export function snapshotGuidOwner(guid: string): string | null {
  const m = OWN_GUID_RE.exec(guid.toLowerCase());
  return m === null ? null : `${m[1]}${m[2]}`;
}

const ENTRY_SUFFIX = ".json";
const TEMP_MARK = ".tmp-";

function errnoCode(error: unknown): string {
  return (error as NodeJS.ErrnoException | undefined)?.code ?? String(error);
}

/** Validate a parsed entry; returns a reason string when it is not a usable entry. */
function checkEntry(value: unknown): JournalEntry | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object";
  const v = value as Record<string, unknown>;
  if (v.version !== JOURNAL_VERSION) return `unsupported version ${JSON.stringify(v.version)}`;
  const str = (k: string): string | null => (typeof v[k] === "string" && v[k] !== "" ? (v[k] as string) : null);
  const ct = str("ct");
  const descriptorPath = str("descriptorPath");
  const guidText = str("snapshotGuid");
  const guid = guidText === null ? null : normaliseGuid(guidText);
  const state = str("state");
  const host = str("host");
  const startedAt = str("startedAt");
  if (ct === null) return "missing ct";
  if (descriptorPath === null) return "missing descriptorPath";
  if (guid === null) return `invalid snapshotGuid ${JSON.stringify(v.snapshotGuid)}`;
  if (v.tool !== "ploop") return `unsupported tool ${JSON.stringify(v.tool)}`;
  if (state === null || !STATES.includes(state as JournalState)) return `invalid state ${JSON.stringify(v.state)}`;
  if (typeof v.pid !== "number" || !Number.isInteger(v.pid) || v.pid <= 0) return "invalid pid";
  if (host === null) return "missing host";
  if (startedAt === null || Number.isNaN(Date.parse(startedAt))) return "invalid startedAt";
  const entry: JournalEntry = { version: 1, ct, descriptorPath, snapshotGuid: guid, tool: "ploop", state: state as JournalState, pid: v.pid, host, startedAt };
  if (v.mergeChild !== undefined) {
    const c = v.mergeChild as Record<string, unknown> | null;
    const ok =
      typeof c === "object" &&
      c !== null &&
      typeof c.path === "string" &&
      c.path.startsWith("/") &&
      typeof c.dev === "string" &&
      /^\d+$/.test(c.dev) &&
      typeof c.ino === "string" &&
      /^\d+$/.test(c.ino);
    if (!ok) return "invalid mergeChild";
    entry.mergeChild = { path: c.path as string, dev: c.dev as string, ino: c.ino as string };
  }
  return entry;
}

export class SnapshotJournal {
  /** <stateDir>/journal */
  readonly dir: string;
  /** Owner id of the state dir, carried by every snapshot GUID this journal hands out. */
  readonly ownerId: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "journal");
    this.ownerId = stateDirOwnerId(stateDir);
  }

  /** A fresh GUID for a snapshot this state dir makes (recognisable without the journal). */
  newSnapshotGuid(): string {
    return newSnapshotGuid(this.ownerId);
  }

  /** Whether ploopvault made this snapshot with this state dir (by its GUID alone). */
  ownsSnapshot(guid: string): boolean {
    return snapshotGuidOwner(guid) === this.ownerId;
  }

  private fileOf(snapshotGuid: string): string {
    const g = normaliseGuid(snapshotGuid);
    if (g === null) throw new JournalError(`journal: "${snapshotGuid}" is not a snapshot GUID`);
    return join(this.dir, `${g.slice(1, -1)}${ENTRY_SUFFIX}`);
  }

  /**
   * Durably record a snapshot about to be taken. Call BEFORE `ploop snapshot`: if we die
   * after ploop created it, this entry is how the next run finds it.
   */
  async record(fields: {
    ct: string;
    descriptorPath: string;
    snapshotGuid: string;
    state?: JournalState;
    mergeChild?: MergeChild | null;
  }): Promise<JournalEntry> {
    const g = normaliseGuid(fields.snapshotGuid);
    if (g === null) throw new JournalError(`journal: "${fields.snapshotGuid}" is not a snapshot GUID`);
    const entry: JournalEntry = {
      version: 1,
      ct: fields.ct,
      descriptorPath: fields.descriptorPath,
      snapshotGuid: g,
      tool: "ploop",
      state: fields.state ?? "snapshot-pending",
      pid: process.pid,
      host: hostname(),
      startedAt: new Date().toISOString(),
    };
    if (fields.mergeChild) entry.mergeChild = fields.mergeChild;
    await this.write(entry);
    return entry;
  }

  /** Move an entry to another state (durably), optionally recording what its merge deletes. */
  async setState(snapshotGuid: string, state: JournalState, mergeChild?: MergeChild | null): Promise<JournalEntry> {
    const file = this.fileOf(snapshotGuid);
    const current = await this.readOne(file);
    if (typeof current === "string") throw new JournalError(`journal entry ${file}: ${current}`);
    const next: JournalEntry = { ...current, state, ...(mergeChild ? { mergeChild } : {}) };
    await this.write(next);
    return next;
  }

  /**
   * Forget an entry (the snapshot is merged, or kept on purpose). Absent entries are fine.
   * The unlink is not fsynced: an entry a crash brings back is one recovery settles and
   * drops again (its snapshot is gone from the descriptor: already-merged; or it is the one
   * the kept record names: kept), so the directory fsync would buy nothing.
   */
  async remove(snapshotGuid: string): Promise<void> {
    const file = this.fileOf(snapshotGuid);
    try {
      await unlink(file);
    } catch (error) {
      if (errnoCode(error) === "ENOENT") return;
      throw new JournalError(`journal: cannot remove ${file} (${errnoCode(error)})`, { cause: error });
    }
  }

  /** Every entry; unreadable ones are reported in `corrupt`, never thrown. */
  async list(): Promise<JournalListing> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if (errnoCode(error) === "ENOENT") return { entries: [], corrupt: [] };
      throw new JournalError(`journal: cannot read ${this.dir} (${errnoCode(error)})`, { cause: error });
    }
    const entries: JournalEntry[] = [];
    const corrupt: CorruptJournalEntry[] = [];
    for (const name of names.sort()) {
      // Temp files are half-written entries of a record() that died before its rename,
      // i.e. before the snapshot was even started: not entries.
      if (!name.endsWith(ENTRY_SUFFIX) || name.includes(TEMP_MARK)) continue;
      const file = join(this.dir, name);
      const result = await this.readOne(file);
      if (typeof result === "string") {
        if (result === "ENOENT") continue; // removed meanwhile
        corrupt.push({ file, reason: result });
      } else if (`${result.snapshotGuid.slice(1, -1)}${ENTRY_SUFFIX}` !== name) {
        corrupt.push({ file, reason: `file name does not match its snapshotGuid ${result.snapshotGuid}` });
      } else {
        entries.push(result);
      }
    }
    return { entries, corrupt };
  }

  /** Delete temp files left by a record() that died before renaming (never a real entry). */
  async removeStaleTemps(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const removed: string[] = [];
    for (const name of names) {
      const m = /\.tmp-(\d+)$/.exec(name);
      if (m === null) continue;
      const pid = Number(m[1]);
      if (pid !== process.pid && isProcessAlive(pid)) continue;
      await rm(join(this.dir, name), { force: true });
      removed.push(join(this.dir, name));
    }
    return removed;
  }

  /** The entry's text or a reason it cannot be used ("ENOENT" when it does not exist). */
  private async readOne(file: string): Promise<JournalEntry | string> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      return errnoCode(error) === "ENOENT" ? "ENOENT" : `cannot read (${errnoCode(error)})`;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      return `not valid JSON (${errorLine(error)})`;
    }
    return checkEntry(parsed);
  }

  private async write(entry: JournalEntry): Promise<void> {
    const file = this.fileOf(entry.snapshotGuid);
    const temp = `${file}${TEMP_MARK}${process.pid}`;
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      const fh = await open(temp, "w", 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(entry, null, 2)}\n`, "utf8");
        await syncCounted(fh, "journal");
      } finally {
        await fh.close();
      }
      await rename(temp, file);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => undefined);
      throw new JournalError(`journal: cannot write ${file} (${errnoCode(error)})`, { cause: error });
    }
    await this.syncDir();
  }

  /** fsync the directory so the rename/unlink itself survives a crash. */
  private async syncDir(): Promise<void> {
    let fh;
    try {
      fh = await open(this.dir, "r");
      await syncCounted(fh, "journal");
    } catch (error) {
      throw new JournalError(`journal: cannot fsync ${this.dir} (${errnoCode(error)})`, { cause: error });
    } finally {
      await fh?.close();
    }
  }
}
