/**
 * Host lock: a second run waits, then gives up with HostLockBusyError (exit code 4); a
 * holder that dies in any way, even SIGKILL, never blocks later runs; a flock helper that
 * dies under a live holder is noticed (the lock is gone).
 */
import { build } from "esbuild";
import { execa, type ResultPromise } from "execa";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { acquireHostLock, HostLockBusyError, HostLockLostError } from "../../src/host/host-lock.js";
import { flockHelperOf, holdFlock, REPO_ROOT, scratch } from "./fixtures.js";

let dir: string;
let cleanup: () => Promise<void>;
let holderScript: string;

beforeAll(async () => {
  ({ dir, cleanup } = await scratch("hostlock"));
  // The child is TypeScript importing src/: bundle it into one .mjs for plain node.
  holderScript = join(dir, "hold-host-lock.mjs");
  await build({
    entryPoints: [join(REPO_ROOT, "test", "live", "hold-host-lock.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: holderScript,
    logLevel: "silent",
  });
});
afterAll(async () => {
  await cleanup();
});

/** Start a child that takes the lock; resolves once it holds it. */
async function childHolder(lockPath: string, mode: "hold" | "exit"): Promise<{ child: ResultPromise<{ reject: false }>; pid: number }> {
  const child = execa(process.execPath, [holderScript, lockPath, mode], { reject: false });
  const pid = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /held (\d+)\n/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    void child.then((r) => reject(new Error(`holder exited early: ${r.stderr}`)));
  });
  return { child, pid };
}

describe("acquireHostLock", () => {
  it("makes a second run wait, then fail with HostLockBusyError naming the holder", async () => {
    const lockPath = join(dir, "a", "run.lock");
    const first = await acquireHostLock(lockPath, { waitSeconds: 0 });
    const holder = JSON.parse(await readFile(`${lockPath}.holder`, "utf8")) as { pid: number; startedAt: string };
    expect(holder.pid).toBe(process.pid);

    const t0 = Date.now();
    const e = await acquireHostLock(lockPath, { waitSeconds: 1 }).catch((x: unknown) => x);
    const waited = Date.now() - t0;
    expect(e).toBeInstanceOf(HostLockBusyError);
    expect((e as HostLockBusyError).exitCode).toBe(4);
    expect((e as Error).message).toBe(
      `another ploopvault run (pid ${process.pid}, started ${holder.startedAt}) holds the host lock ${lockPath}; gave up after 1 s`,
    );
    expect(waited).toBeGreaterThanOrEqual(950);
    expect(waited).toBeLessThan(3000);

    // waitSeconds 0: fail at once.
    const t1 = Date.now();
    await expect(acquireHostLock(lockPath, { waitSeconds: 0 })).rejects.toBeInstanceOf(HostLockBusyError);
    expect(Date.now() - t1).toBeLessThan(500);

    await first.release();
    await first.release(); // idempotent
    await expect(readFile(`${lockPath}.holder`, "utf8")).rejects.toThrow(/ENOENT/);
    const again = await acquireHostLock(lockPath, { waitSeconds: 0 });
    await again.release();
  });

  it("hands the lock to a waiter as soon as the holder releases it", async () => {
    const lockPath = join(dir, "b.lock");
    const first = await acquireHostLock(lockPath, { waitSeconds: 0 });
    setTimeout(() => void first.release(), 300);
    const t0 = Date.now();
    const second = await acquireHostLock(lockPath, { waitSeconds: 10 });
    expect(Date.now() - t0).toBeLessThan(2000);
    await second.release();
  });

  it("is released when the holding process is SIGKILLed", async () => {
    const lockPath = join(dir, "c.lock");
    const { child, pid } = await childHolder(lockPath, "hold");
    await expect(acquireHostLock(lockPath, { waitSeconds: 0 })).rejects.toThrow(
      new RegExp(`^another ploopvault run \\(pid ${pid}, started .*\\) holds the host lock ${lockPath}; gave up after 0 s$`),
    );
    process.kill(pid, "SIGKILL");
    expect((await child).signal).toBe("SIGKILL");
    const t0 = Date.now();
    const lock = await acquireHostLock(lockPath, { waitSeconds: 10 });
    expect(Date.now() - t0).toBeLessThan(1500);
    await lock.release();
  });

  it("does not keep a process alive that forgets to release, and frees the lock when it exits", async () => {
    const lockPath = join(dir, "d.lock");
    const { child } = await childHolder(lockPath, "exit");
    const r = await child;
    expect(r.exitCode).toBe(0);
    const lock = await acquireHostLock(lockPath, { waitSeconds: 5 });
    await lock.release();
  });

  it("also respects a lock held by someone else's flock (admin maintenance)", async () => {
    const lockPath = join(dir, "e.lock");
    // A stale holder note from a dead run must not be blamed.
    const stale = await childHolder(lockPath, "hold");
    process.kill(stale.pid, "SIGKILL");
    await stale.child;
    const release = await holdFlock(lockPath);
    try {
      await expect(acquireHostLock(lockPath, { waitSeconds: 0 })).rejects.toThrow(
        `another process holds the host lock ${lockPath} (not a ploopvault run, or it is just starting); gave up after 0 s`,
      );
    } finally {
      await release();
    }
  });

  it("explains a missing flock binary", async () => {
    await expect(acquireHostLock(join(dir, "f.lock"), { waitSeconds: 0, flockBin: "/nonexistent/flock" })).rejects.toThrow(
      `host lock ${join(dir, "f.lock")}: "/nonexistent/flock" not found (install util-linux)`,
    );
  });

  it("reports the loss of the lock when its flock helper dies, and not after a release", async () => {
    const lockPath = join(dir, "g.lock");
    const lock = await acquireHostLock(lockPath, { waitSeconds: 0 });
    expect(lock.lost.aborted).toBe(false);
    const helper = await flockHelperOf(process.pid, lockPath);
    const noticed = new Promise<unknown>((resolve) => lock.lost.addEventListener("abort", () => resolve(lock.lost.reason), { once: true }));
    process.kill(helper, "SIGKILL");
    const reason = await noticed;
    expect(reason).toBeInstanceOf(HostLockLostError);
    expect((reason as Error).message).toBe(
      `host lock ${lockPath} lost: its flock helper (pid ${helper}) was killed by SIGKILL; another run may start now, so this one stops`,
    );
    // It really is gone: another run gets it at once.
    const other = await acquireHostLock(lockPath, { waitSeconds: 0 });
    await other.release();
    await lock.release();

    const again = await acquireHostLock(lockPath, { waitSeconds: 0 });
    await again.release();
    await new Promise((r) => setTimeout(r, 200));
    expect(again.lost.aborted).toBe(false);
  });
});
