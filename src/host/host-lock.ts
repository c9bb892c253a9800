/**
 * Host-wide run lock, so overlapping cron runs do not snapshot the same containers.
 *
 * Mechanism: a kernel flock(2) on a lock file, held by a small util-linux `flock` helper
 * process we spawn:
 *
 *   flock -x -w SECS -o -E 75 LOCKFILE sh -c 'echo locked; exec cat >/dev/null'
 *
 * The helper reports "locked" once it has the lock, then `cat` waits on a pipe whose only
 * writer is this Node process. Node has no flock(2) binding, and this arrangement ties
 * the lock's lifetime to ours: when we exit or die in any way (even SIGKILL) the kernel
 * closes the pipe, cat sees EOF and exits, flock exits, the kernel drops the lock. No
 * stale lock can block later runs. `-o` keeps the lock fd out of cat, so only the flock
 * process holds it. The helper runs in its own process group (detached), so a Ctrl-C
 * aimed at our terminal does not release the lock while we are still cleaning up.
 *
 * Because it is an ordinary flock on a file, an admin can also hold it for maintenance:
 * `flock /var/lib/ploopvault/run.lock some-command` keeps backups away meanwhile.
 *
 * The holder's pid and start time go to a sidecar file (<lock>.holder) for messages only.
 *
 * The helper is watched: if it dies while we still hold the lock (killed by an admin or
 * the OOM killer), the kernel has dropped the lock and another run may start at any
 * moment, so `lost` aborts with HostLockLostError and the run must stop.
 *
 * Scope: the lock file lives in the state dir, so the lock is per state dir. One state
 * dir per host is the intended setup (the default path); a second installation with its
 * own state dir is not excluded by it, but never touches the first one's snapshots (their
 * GUIDs carry the state dir's owner id, host/journal.ts). docs/online-backup.md.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { PloopvaultError } from "../errors.js";
import { isProcessAlive } from "../util/process-alive.js";

/** Exit code for "another run holds the host lock". */
export const EXIT_HOST_LOCK_BUSY = 4;
/** What we ask flock to exit with when it times out. */
const FLOCK_BUSY = 75;

export class HostLockBusyError extends PloopvaultError {
  constructor(message: string) {
    super(message, { exitCode: EXIT_HOST_LOCK_BUSY });
  }
}

export class HostLockError extends PloopvaultError {}

/** The flock helper died while the lock was held: the lock is gone. */
export class HostLockLostError extends PloopvaultError {}

export interface HostLock {
  readonly path: string;
  /**
   * Aborted (reason: HostLockLostError) when the lock is lost before release(): the flock
   * helper exited or was killed. Whoever runs under the lock must stop.
   */
  readonly lost: AbortSignal;
  /** Release the lock (idempotent). Resolves once the kernel lock is gone. */
  release(): Promise<void>;
}

export interface AcquireHostLockOptions {
  /** Wait at most this long for a holder to finish; 0 = do not wait. */
  waitSeconds: number;
  /** util-linux flock binary. Default "flock". */
  flockBin?: string;
}

interface HolderInfo {
  pid: number;
  startedAt: string;
  host: string;
  token: string;
}

function holderPath(lockPath: string): string {
  return `${lockPath}.holder`;
}

async function readHolder(lockPath: string): Promise<HolderInfo | null> {
  try {
    const v: unknown = JSON.parse(await readFile(holderPath(lockPath), "utf8"));
    if (typeof v !== "object" || v === null) return null;
    const o = v as Record<string, unknown>;
    if (typeof o.pid !== "number" || typeof o.startedAt !== "string") return null;
    return { pid: o.pid, startedAt: o.startedAt, host: typeof o.host === "string" ? o.host : "", token: typeof o.token === "string" ? o.token : "" };
  } catch {
    return null;
  }
}

/**
 * Take the host lock, waiting up to `waitSeconds`. Throws HostLockBusyError (exit code 4)
 * when another run still holds it after that.
 */
export async function acquireHostLock(lockPath: string, options: AcquireHostLockOptions): Promise<HostLock> {
  const flockBin = options.flockBin ?? "flock";
  const wait = options.waitSeconds;
  if (!Number.isFinite(wait) || wait < 0) throw new HostLockError(`host lock ${lockPath}: invalid wait of ${wait} s`);
  try {
    await mkdir(dirname(lockPath), { recursive: true, mode: 0o700 }); // the state dir is owner-only
    await (await open(lockPath, "a", 0o600)).close(); // else flock creates it 0666 & ~umask
  } catch (error) {
    throw new HostLockError(`host lock ${lockPath}: cannot create its directory (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
  }
  const waitArgs = wait === 0 ? ["-n"] : ["-w", String(wait)];
  const child = spawn(flockBin, ["-x", ...waitArgs, "-o", "-E", String(FLOCK_BUSY), lockPath, "sh", "-c", "echo locked; exec cat >/dev/null"], {
    stdio: ["pipe", "pipe", "pipe"],
    detached: true,
  });

  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    let out = "";
    let err = "";
    let settled = false;
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      f();
    };
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("locked\n")) settle(resolve);
    });
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("error", (error: NodeJS.ErrnoException) => {
      settle(() =>
        reject(
          error.code === "ENOENT"
            ? new HostLockError(`host lock ${lockPath}: "${flockBin}" not found (install util-linux)`, { cause: error })
            : new HostLockError(`host lock ${lockPath}: cannot run "${flockBin}" (${error.code ?? error.message})`, { cause: error }),
        ),
      );
    });
    child.on("exit", (code, signal) => {
      settle(() => {
        if (code === FLOCK_BUSY) {
          void busyError(lockPath, (Date.now() - started) / 1000).then(reject, reject);
          return;
        }
        const line = err.trim().split("\n").pop() ?? "";
        reject(new HostLockError(`host lock ${lockPath}: flock ${signal === null ? `exited ${code}` : `killed by ${signal}`}${line ? `: ${line}` : ""}`));
      });
    });
  });

  // Held. Let Node exit normally even if release() is forgotten: the helper must not
  // keep the event loop alive (exiting closes the pipe, which releases the lock anyway).
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  child.stdin!.on("error", () => undefined); // EPIPE if the helper died: nothing to do

  const token = `${process.pid}-${started}-${Math.random().toString(36).slice(2)}`;
  const info: HolderInfo = { pid: process.pid, startedAt: new Date().toISOString(), host: hostname(), token };
  try {
    const tmp = `${holderPath(lockPath)}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(info)}\n`, { mode: 0o600 });
    await rename(tmp, holderPath(lockPath));
  } catch {
    // Holder info is only for messages; the lock itself is held.
  }

  let released: Promise<void> | null = null;
  const lost = new AbortController();
  const onLost = (code: number | null, signal: NodeJS.Signals | null): void => {
    if (released !== null) return;
    const how = signal === null ? `exited with code ${code}` : `was killed by ${signal}`;
    lost.abort(new HostLockLostError(`host lock ${lockPath} lost: its flock helper (pid ${child.pid}) ${how}; another run may start now, so this one stops`));
  };
  if (child.exitCode !== null || child.signalCode !== null) onLost(child.exitCode, child.signalCode);
  else child.once("exit", onLost);
  return {
    path: lockPath,
    lost: lost.signal,
    release(): Promise<void> {
      released ??= releaseHelper(lockPath, child, token);
      return released;
    },
  };
}

async function releaseHelper(lockPath: string, child: ChildProcess, token: string): Promise<void> {
  // Remove our holder note while we still hold the lock, so we never delete the next holder's.
  const current = await readHolder(lockPath);
  if (current?.token === token) await rm(holderPath(lockPath), { force: true }).catch(() => undefined);
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.stdin!.end();
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

async function busyError(lockPath: string, waitedSeconds: number): Promise<HostLockBusyError> {
  const holder = await readHolder(lockPath);
  const waited = `gave up after ${Math.round(waitedSeconds)} s`;
  if (holder !== null && (holder.host !== hostname() || isProcessAlive(holder.pid))) {
    return new HostLockBusyError(`another ploopvault run (pid ${holder.pid}, started ${holder.startedAt}) holds the host lock ${lockPath}; ${waited}`);
  }
  return new HostLockBusyError(`another process holds the host lock ${lockPath} (not a ploopvault run, or it is just starting); ${waited}`);
}
