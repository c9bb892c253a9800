/**
 * Drives the ploop command line (docs/ploop.md 3.2): snapshot, snapshot-list,
 * snapshot-delete, check -d, info -d. Only the descriptor-based commands are exposed;
 * the dangerous low-level forms (`snapshot -d`, `merge`, `check -F`) are deliberately
 * absent, and deleting the top GUID is refused in code.
 *
 * Failures become PloopCommandError with ploop's exit code mapped to a meaning
 * (docs/ploop.md 3.2) and ploop's last stderr line, on one line.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { runCommand } from "../util/exec.js";
import { PloopvaultError } from "../errors.js";
import { normaliseGuid, type SnapshotListEntry } from "../ploop/descriptor.js";
import { TOP_GUID } from "../ploop/format.js";
import { noteCost } from "../util/cost-tally.js";

/** ploop's SYSEXIT_* codes (same numbers in all versions; 44-46 only in 7.x+). */
export const PLOOP_EXIT = {
  CREAT: 1,
  DEVICE: 2,
  DEVIOC: 3,
  OPEN: 4,
  MALLOC: 5,
  READ: 6,
  WRITE: 7,
  SYSFS: 9,
  PLOOPFMT: 11,
  SYS: 12,
  PROTOCOL: 13,
  LOOP: 14,
  FSTAT: 15,
  FSYNC: 16,
  EBUSY: 17,
  FLOCK: 18,
  FTRUNCATE: 19,
  FALLOCATE: 20,
  MOUNT: 21,
  UMOUNT: 22,
  LOCK: 23,
  MKFS: 24,
  RESIZE_FS: 26,
  MKDIR: 27,
  RENAME: 28,
  ABORT: 29,
  RELOC: 30,
  CHANGE_GPT: 33,
  UNLINK: 35,
  MKNOD: 36,
  PLOOPINUSE: 37,
  PARAM: 38,
  DISKDESCR: 39,
  DEV_NOT_MOUNTED: 40,
  FSCK: 41,
  NOSNAP: 43,
  NOCBT: 44,
  CRYPT: 45,
  UMOUNT_BUSY: 46,
  /** Not ploop's: the shell/wrapper could not find the binary. */
  NOT_FOUND: 127,
} as const;

const EXIT_MEANINGS: ReadonlyMap<number, string> = new Map([
  // 1 is SYSEXIT_CREAT in the table, but 1.15 also uses it for generic failures
  // ("Can't find snapshot by uuid" from snapshot-list): say both.
  [1, "operation failed (or file creation failed)"],
  [2, "ploop device error (kernel module missing?)"],
  [3, "ploop device ioctl failed"],
  [4, "image in use or cannot be opened"],
  [5, "out of memory"],
  [6, "read error"],
  [7, "write error"],
  [9, "sysfs error (kernel module missing?)"],
  [11, "corrupt image"],
  [12, "system call failed"],
  [13, "protocol error"],
  [14, "loop device error"],
  [15, "stat failed"],
  [16, "fsync failed"],
  [17, "device busy"],
  [18, "flock failed"],
  [19, "ftruncate failed"],
  [20, "fallocate failed"],
  [21, "mount failed"],
  [22, "umount failed"],
  [23, "disk is locked by another ploop operation"],
  [24, "mkfs failed"],
  [26, "filesystem resize failed"],
  [27, "mkdir failed"],
  [28, "rename failed"],
  [29, "aborted"],
  [30, "relocation failed"],
  [33, "GPT change failed"],
  [35, "unlink failed"],
  [36, "mknod failed"],
  [37, "image is in use"],
  [38, "invalid parameter"],
  [39, "invalid or unreadable DiskDescriptor.xml"],
  [40, "device not mounted"],
  [41, "fsck failed"],
  [43, "no such snapshot"],
  [44, "no CBT"],
  [45, "encryption error"],
  [46, "umount: device busy"],
  [127, "ploop binary not found"],
]);

export function ploopExitMeaning(code: number): string {
  return EXIT_MEANINGS.get(code) ?? "failed";
}

export type { SnapshotListEntry };

/** A ploop command failed. `ploopExitCode` is ploop's exit status (-1: killed by a signal). */
export class PloopCommandError extends PloopvaultError {
  readonly ploopExitCode: number;
  readonly args: readonly string[];
  /** ploop's stderr, last non-empty line (may be ""). */
  readonly stderrLine: string;
  constructor(message: string, fields: { ploopExitCode: number; args: readonly string[]; stderrLine: string; cause?: unknown }) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.ploopExitCode = fields.ploopExitCode;
    this.args = fields.args;
    this.stderrLine = fields.stderrLine;
  }
}

/** The ploop binary could not be started at all. */
export class PloopBinaryNotFoundError extends PloopvaultError {}

export interface PloopCliOptions {
  /** ploop binary (path or name on PATH). Default "ploop". */
  bin?: string;
  /** How many times a LOCK (23) failure is retried. Default 2 (ploop already waited 60 s each time). */
  lockRetries?: number;
  /** Pause before each LOCK retry. Default 5000 ms. */
  lockRetryDelayMs?: number;
  /** Extra environment for ploop (merged into process.env). */
  env?: Readonly<Record<string, string>>;
  /** Progress lines (retries). */
  log?: (line: string) => void;
  /** One line per ploop run: subcommand, target, exit, duration (`backup -v`). */
  trace?: (line: string) => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

function lastLine(text: string): string {
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  return lines[lines.length - 1] ?? "";
}

function requireGuid(guid: string, what: string): string {
  const g = normaliseGuid(guid);
  // Validating also keeps a hostile "GUID" from being parsed as a ploop option.
  if (g === null) throw new PloopvaultError(`${what}: "${guid}" is not a snapshot GUID like {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`);
  return g;
}

export class PloopCli {
  readonly bin: string;
  private readonly lockRetries: number;
  private readonly lockRetryDelayMs: number;
  private readonly env: Readonly<Record<string, string>> | undefined;
  private readonly log: (line: string) => void;
  private readonly trace: ((line: string) => void) | undefined;

  constructor(options: PloopCliOptions = {}) {
    this.bin = options.bin ?? "ploop";
    this.lockRetries = options.lockRetries ?? 2;
    this.lockRetryDelayMs = options.lockRetryDelayMs ?? 5000;
    this.env = options.env;
    this.log = options.log ?? (() => undefined);
    this.trace = options.trace;
  }

  /**
   * Run `ploop ARGS`; `target` (descriptor or image) names the subject in messages.
   * Retries LOCK failures. Not abortable on purpose: killing ploop in the middle of a
   * snapshot or merge leaves exactly the mess recovery has to clean up.
   */
  async run(args: readonly string[], target: string): Promise<RunResult> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.runOnce(args, target);
      } catch (error) {
        if (!(error instanceof PloopCommandError) || !isLockFailure(error) || attempt >= this.lockRetries) throw error;
        this.log(`${error.message}; retrying in ${Math.round(this.lockRetryDelayMs / 1000)} s (${attempt + 1}/${this.lockRetries})`);
        await sleep(this.lockRetryDelayMs);
      }
    }
  }

  private async runOnce(args: readonly string[], target: string): Promise<RunResult> {
    const sub = args[0] ?? "";
    // ploop is not killed when we exit (src/util/exec.ts): a dirty image is left for recovery only if it is killed halfway
    const started = performance.now();
    const r = await runCommand(this.bin, args, this.env === undefined ? {} : { env: this.env });
    const seconds = (performance.now() - started) / 1000;
    noteCost(`ploop ${sub}`, seconds);
    this.trace?.(`ploop ${sub} on ${target}: exit ${r.exitCode ?? r.signal ?? r.spawnError ?? "?"} after ${seconds.toFixed(3)} s`);
    const { stdout, stderr } = r;
    if (!r.failed) return { stdout, stderr };
    if (r.spawnError !== null) {
      if (r.spawnError === "ENOENT") throw new PloopBinaryNotFoundError(`ploop binary "${this.bin}" not found; install ploop or pass --ploop-bin`);
      throw new PloopBinaryNotFoundError(`ploop binary "${this.bin}" cannot be run (${r.spawnError}); install ploop or pass --ploop-bin`);
    }
    const line = lastLine(stderr) || lastLine(stdout);
    if (r.exitCode === null) {
      throw new PloopCommandError(`ploop ${sub} on ${target}: killed by ${r.signal}${line ? `: ${line}` : ""}`, { ploopExitCode: -1, args, stderrLine: line });
    }
    const code = r.exitCode;
    if (code === PLOOP_EXIT.NOT_FOUND && !stderr.includes("Error in")) {
      // A wrapper (scripts/ploop-offline) or shell reporting that ploop itself is missing.
      throw new PloopBinaryNotFoundError(`ploop binary "${this.bin}" not found (exit 127${line ? `: ${line}` : ""}); install ploop or pass --ploop-bin`);
    }
    const meaning = code === PLOOP_EXIT.LOCK && !isLockLine(line) ? "cannot read DiskDescriptor.xml" : ploopExitMeaning(code);
    throw new PloopCommandError(`ploop ${sub} on ${target}: ${meaning} (exit ${code})${line ? `: ${line}` : ""}`, {
      ploopExitCode: code,
      args,
      stderrLine: line,
    });
  }

  /** `ploop snapshot -u GUID DD`: freeze the current top under GUID, new empty top (online or offline). */
  async snapshot(descriptorPath: string, guid: string): Promise<void> {
    const g = requireGuid(guid, `snapshot of ${descriptorPath}`);
    if (g === TOP_GUID) throw new PloopvaultError(`refusing to create a snapshot of ${descriptorPath} with the top GUID ${TOP_GUID}`);
    await this.run(["snapshot", "-u", g, descriptorPath], descriptorPath);
  }

  /** The chain as of GUID, top (the image of GUID) first, base last. */
  async snapshotList(descriptorPath: string, guid: string): Promise<SnapshotListEntry[]> {
    const g = requireGuid(guid, `snapshot-list of ${descriptorPath}`);
    const { stdout } = await this.run(["snapshot-list", "-H", "-o", "uuid,parent_uuid,fname", "-u", g, descriptorPath], descriptorPath);
    const entries: SnapshotListEntry[] = [];
    for (const raw of stdout.split("\n")) {
      const line = raw.trim();
      if (line === "") continue;
      // "{uuid} {parent_uuid} /abs/path" (single spaces; the path may contain spaces).
      const m = /^(\{[0-9a-fA-F-]{36}\})\s+(\{[0-9a-fA-F-]{36}\})\s+(.+)$/.exec(line);
      const guidText = m === null ? null : normaliseGuid(m[1]!);
      const parentText = m === null ? null : normaliseGuid(m[2]!);
      if (m === null || guidText === null || parentText === null) {
        throw new PloopvaultError(`ploop snapshot-list on ${descriptorPath}: unexpected output line "${line.slice(0, 200)}"`);
      }
      entries.push({ guid: guidText, parentGuid: parentText, file: m[3]! });
    }
    if (entries.length === 0 || entries[0]!.guid !== g) {
      throw new PloopvaultError(
        `ploop snapshot-list on ${descriptorPath}: expected the chain of ${g}, got ${entries.length === 0 ? "nothing" : `one starting at ${entries[0]!.guid}`}`,
      );
    }
    for (let k = 0; k + 1 < entries.length; k++) {
      if (entries[k]!.parentGuid !== entries[k + 1]!.guid) {
        throw new PloopvaultError(
          `ploop snapshot-list on ${descriptorPath}: chain is not linked at ${entries[k]!.guid} (parent ${entries[k]!.parentGuid}, next ${entries[k + 1]!.guid})`,
        );
      }
    }
    return entries;
  }

  /**
   * `ploop snapshot-delete -u GUID DD`: merge GUID's child into it; GUID disappears.
   * 'absent' when ploop says there is no such snapshot (exit 43). Never the top GUID:
   * offline that discards every write since the last snapshot (docs/ploop.md 3.2).
   */
  async snapshotDelete(descriptorPath: string, guid: string): Promise<"deleted" | "absent"> {
    const g = requireGuid(guid, `snapshot-delete on ${descriptorPath}`);
    if (g === TOP_GUID) {
      throw new PloopvaultError(
        `refusing to delete the top snapshot ${TOP_GUID} of ${descriptorPath}: offline that discards every write since the last snapshot`,
      );
    }
    try {
      await this.run(["snapshot-delete", "-u", g, descriptorPath], descriptorPath);
      return "deleted";
    } catch (error) {
      if (error instanceof PloopCommandError && error.ploopExitCode === PLOOP_EXIT.NOSNAP) return "absent";
      throw error;
    }
  }

  /**
   * `ploop check -d -S IMAGE`: clear the in-use flag of one image file left by an
   * interrupted offline merge. Only for a disk that is NOT mounted (docs/ploop.md 3.10).
   *
   * What ploop does (read in its lib/check.c, measured with 1.15): it verifies the BAT,
   * trims the unreferenced tail the merge left ("Trimming tail"), writes the clean header,
   * and only then looks for holes. 1.x refuses a sparse image on ext4 without -S: exit 11
   * "Error in fill_hole ... image is sparse" (the flag is already cleared by then); with -S
   * it fills the holes with zeros, exactly what its own descriptor checks (every mount,
   * `ploop check DiskDescriptor.xml`) do. 7.x fills only holes inside used clusters and
   * punches unused ones; 9.x skips the sparse pass. Images are sparse on real hosts after
   * discard/compaction or a sparse copy. Other exits: 11 without "sparse" = structural
   * damage (never "fixed" with -F here), 7 = a write failed (disk full while filling?),
   * 17 = the image is in a v1/v2 conversion, 4 = cannot open it.
   */
  async clearInUse(imagePath: string): Promise<void> {
    await this.run(["check", "-d", "-S", imagePath], imagePath);
  }

  /** The ploop device the disk is mounted on (`ploop info -d DD`), or null when not mounted. */
  async mountedDevice(descriptorPath: string): Promise<string | null> {
    const { stdout } = await this.run(["info", "-d", descriptorPath], descriptorPath);
    const m = /^device:[ \t]*(\S*)[ \t]*$/m.exec(stdout);
    if (m === null) throw new PloopvaultError(`ploop info -d on ${descriptorPath}: no "device:" line in its output`);
    return m[1] === "" ? null : m[1]!;
  }
}

/**
 * A LOCK exit that really is a lock: 1.15 also exits 23 when it cannot parse the
 * descriptor ("Can't parse", via its locking path), which no retry will fix.
 */
export function isLockFailure(error: PloopCommandError): boolean {
  return error.ploopExitCode === PLOOP_EXIT.LOCK && isLockLine(error.stderrLine);
}

function isLockLine(line: string): boolean {
  return !/can't parse|can't resolve|parser error|failed to read/i.test(line);
}
