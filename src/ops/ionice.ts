/**
 * Idle I/O priority for the backup's own reads, so a running container's disk I/O always
 * goes first: `ionice -c3 -p <tid>...` (util-linux) on every thread of this process at
 * backup start. Threads created later (libuv's file-system pool, worker threads) and
 * child processes inherit the class from the thread that creates them.
 *
 * Honoured by the BFQ and CFQ I/O schedulers only (mq-deadline/none ignore it: use
 * --limit-read there). Best effort: a missing ionice, a container without the permission,
 * or an unsupported scheduler leaves the priority unchanged and the backup goes on.
 */
import { readdir } from "node:fs/promises";
import { runCommand } from "../util/exec.js";
import { errorLine } from "../errors.js";

export interface IoniceResult {
  ok: boolean;
  detail: string;
}

export async function setIdleIoPriority(bin = "ionice"): Promise<IoniceResult> {
  let tids: string[];
  try {
    tids = (await readdir("/proc/self/task")).filter((t) => /^\d+$/.test(t));
  } catch {
    tids = [String(process.pid)];
  }
  if (tids.length === 0) tids = [String(process.pid)];
  try {
    const r = await runCommand(bin, ["-c3", "-p", ...tids], { timeoutMs: 10_000 });
    if (r.failed) return { ok: false, detail: `${bin} -c3 failed (${r.summary})` };
    return { ok: true, detail: `I/O priority set to idle (${bin} -c3 on ${tids.length} thread${tids.length === 1 ? "" : "s"})` };
  } catch (error) {
    return { ok: false, detail: `${bin} not usable: ${errorLine(error)}` };
  }
}
