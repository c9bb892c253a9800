/**
 * Running the host's tools (ploop, vzlist, flock, ionice, mknod, setfattr): spawn,
 * collect stdout and stderr, never throw for a failed command. Plain node:child_process
 * (execa cost a third of a second to load on every backup run). The child is not killed
 * when ploopvault exits: a ploop operation that runs to completion leaves a consistent
 * disk, one killed halfway leaves a dirty image.
 */
import { spawn } from "node:child_process";

export interface RunOptions {
  /** Written to the child's stdin (else stdin is /dev/null). */
  input?: string | Buffer;
  /** Variables added to (overriding) this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** SIGTERM after this many milliseconds (then the result says timedOut). */
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit code, or null when the child was killed by a signal or could not be started. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Why the child could not be started (e.g. "ENOENT"), else null. */
  spawnError: string | null;
  timedOut: boolean;
  /** Not started, killed, or a non-zero exit. */
  failed: boolean;
  /** One line: what went wrong, for messages. */
  summary: string;
}

export function runCommand(bin: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let spawnError: string | null = null;
    let timedOut = false;
    const child = spawn(bin, args, {
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      ...(options.env === undefined ? {} : { env: { ...process.env, ...options.env } }),
    });
    const timer =
      options.timeoutMs === undefined
        ? null
        : setTimeout(() => {
            timedOut = true;
            child.kill("SIGTERM");
          }, options.timeoutMs);
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    child.on("error", (error: NodeJS.ErrnoException) => {
      spawnError = error.code ?? error.message;
    });
    if (options.input !== undefined) {
      child.stdin?.on("error", () => undefined); // a child that exits without reading: its exit status tells
      child.stdin?.end(options.input);
    }
    child.on("close", (code, signal) => {
      if (timer !== null) clearTimeout(timer);
      const stdout = Buffer.concat(out).toString("utf8");
      const stderr = Buffer.concat(err).toString("utf8");
      const exitCode = spawnError === null ? code : null;
      const failed = spawnError !== null || exitCode !== 0;
      const lastLine = stderr.trim().split("\n").pop() ?? "";
      const summary =
        spawnError !== null
          ? `${bin}: cannot run (${spawnError})`
          : timedOut
            ? `${bin}: timed out after ${options.timeoutMs} ms`
            : exitCode === null
              ? `${bin}: killed by ${signal}`
              : `${bin}: exit ${exitCode}${lastLine ? `: ${lastLine}` : ""}`;
      resolve({ exitCode, signal, stdout, stderr, spawnError, timedOut, failed, summary });
    });
  });
}
