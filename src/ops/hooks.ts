/**
 * Hook commands run after a run: --hook-success CMD when it exited 0, --hook-failure CMD
 * otherwise (partial success, failure, host lock busy...). Each runs as
 *
 *   /bin/sh -c CMD ploopvault-hook STATUS EXIT_CODE RESULTS_FILE
 *
 * so inside CMD $1 is the status (success|partial|failure), $2 the exit code and $3 the
 * path of a JSON file with the whole run (also in the environment):
 *
 *   PLOOPVAULT_STATUS        success | partial | failure
 *   PLOOPVAULT_EXIT_CODE     0, 1, 2, 3, 4, ...
 *   PLOOPVAULT_RESULTS_JSON  path of the JSON file (mode 0600, deleted when the hook ends):
 *                            {command, status, exitCode, error, host, startedAt, finishedAt,
 *                             seconds, results: [per-container --json objects]}
 *   PLOOPVAULT_ERROR         the one-line error ("" on success)
 *   PLOOPVAULT_COMMAND       backup
 *   PLOOPVAULT_HOST          the host name recorded in the backups
 *   PLOOPVAULT_CONTAINERS_OK / PLOOPVAULT_CONTAINERS_FAILED   space-separated CTIDs
 *   PLOOPVAULT_DURATION_SECONDS
 *
 * The rest of the environment is passed on, except repository passwords
 * (PLOOPVAULT_PASSWORD, PLOOPVAULT_NEW_PASSWORD). The hook's stdout and stderr become log
 * lines on our stderr (and the log file), so --json stdout stays clean. A hook that fails
 * or exceeds --hook-timeout is reported as a warning; it does not change the exit code.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunSummary } from "./metrics.js";

export interface HookOptions {
  /** Which option it came from, for messages ("--hook-success"). */
  name: string;
  command: string;
  timeoutSeconds: number;
  log: (line: string) => void;
  warn: (line: string) => void;
  shell?: string;
}

export interface HookOutcome {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
}

const SECRET_ENV = ["PLOOPVAULT_PASSWORD", "PLOOPVAULT_NEW_PASSWORD"];

export function runJson(summary: RunSummary): Record<string, unknown> {
  return {
    command: summary.command,
    status: summary.status,
    exitCode: summary.exitCode,
    error: summary.error,
    host: summary.host,
    startedAt: summary.startedAt.toISOString(),
    finishedAt: summary.finishedAt.toISOString(),
    seconds: (summary.finishedAt.getTime() - summary.startedAt.getTime()) / 1000,
    results: summary.results,
  };
}

export async function runHook(summary: RunSummary, options: HookOptions): Promise<HookOutcome> {
  const dir = await mkdtemp(join(tmpdir(), "ploopvault-hook-"));
  const resultsFile = join(dir, "results.json");
  try {
    await writeFile(resultsFile, `${JSON.stringify(runJson(summary), null, 2)}\n`, { mode: 0o600 });
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of SECRET_ENV) delete env[name];
    Object.assign(env, {
      PLOOPVAULT_STATUS: summary.status,
      PLOOPVAULT_EXIT_CODE: String(summary.exitCode),
      PLOOPVAULT_RESULTS_JSON: resultsFile,
      PLOOPVAULT_ERROR: summary.error ?? "",
      PLOOPVAULT_COMMAND: summary.command,
      PLOOPVAULT_HOST: summary.host,
      PLOOPVAULT_CONTAINERS_OK: summary.results
        .filter((r) => r.status === "ok")
        .map((r) => r.ct)
        .join(" "),
      PLOOPVAULT_CONTAINERS_FAILED: summary.results
        .filter((r) => r.status !== "ok")
        .map((r) => r.ct)
        .join(" "),
      PLOOPVAULT_DURATION_SECONDS: ((summary.finishedAt.getTime() - summary.startedAt.getTime()) / 1000).toFixed(3),
    });
    const label = options.name.replace(/^--/, "");
    const child = spawn(options.shell ?? "/bin/sh", ["-c", options.command, "ploopvault-hook", summary.status, String(summary.exitCode), resultsFile], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group: a timeout kills the whole pipeline it started
    });
    const relay = (stream: NodeJS.ReadableStream): Promise<void> =>
      new Promise((resolve) => {
        let pending = "";
        stream.setEncoding("utf8");
        stream.on("data", (data: string) => {
          pending += data;
          let nl: number;
          while ((nl = pending.indexOf("\n")) >= 0) {
            options.log(`${label}: ${pending.slice(0, nl)}`);
            pending = pending.slice(nl + 1);
          }
        });
        stream.on("end", () => {
          if (pending !== "") options.log(`${label}: ${pending}`);
          resolve();
        });
        stream.on("error", () => resolve());
      });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {
        // already gone
      }
      setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          // already gone
        }
      }, 5000).unref();
    }, options.timeoutSeconds * 1000);
    const outputs = Promise.all([relay(child.stdout!), relay(child.stderr!)]);
    const outcome = await new Promise<HookOutcome>((resolve) => {
      child.once("error", (error) => {
        options.warn(`${options.name}: cannot run ${options.shell ?? "/bin/sh"}: ${error.message}`);
        resolve({ exitCode: null, signal: null, timedOut: false });
      });
      child.once("exit", (code, signal) => resolve({ exitCode: code, signal, timedOut }));
    });
    clearTimeout(timer);
    // A background process of the hook may hold the pipes open: do not wait for it forever.
    await Promise.race([outputs, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    if (outcome.timedOut) options.warn(`${options.name} "${options.command}" timed out after ${options.timeoutSeconds} s and was killed`);
    else if (outcome.exitCode !== null && outcome.exitCode !== 0) options.warn(`${options.name} "${options.command}" exited with ${outcome.exitCode}`);
    else if (outcome.signal !== null) options.warn(`${options.name} "${options.command}" was killed by ${outcome.signal}`);
    return outcome;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
