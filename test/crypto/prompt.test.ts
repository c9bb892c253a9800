/**
 * The password prompt on a real terminal: the built CLI runs under a pseudo-terminal
 * (python3's pty module drives it), answers each "Password: " prompt, and the password
 * must never be echoed back.
 */
import { execFileSync, execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, localRepo, type RepoTarget } from "../helpers/cli.js";

const DRIVER = `
import os, pty, sys, time, select
answers = [a.encode() + b"\\r" for a in sys.argv[1].split("\\x1f")]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out = b""
seen = 0
deadline = time.time() + 60
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.1)
    if not r:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    while answers and out.count(b"assword: ") > seen:
        seen += 1
        os.write(fd, answers.pop(0))
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
`;

function hasPython(): boolean {
  try {
    execFileSync("python3", ["-c", "import pty"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!hasPython())("password prompt on a terminal", () => {
  let repo: RepoTarget;
  let work: string;
  let driver: string;

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-prompt-"));
    driver = join(work, "drive.py");
    await writeFile(driver, DRIVER);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  async function underPty(answers: string[], args: string[]): Promise<{ code: number; output: string }> {
    const env = { ...process.env };
    delete env.PLOOPVAULT_PASSWORD;
    delete env.PLOOPVAULT_PASSWORD_FILE;
    delete env.PLOOPVAULT_NEW_PASSWORD;
    try {
      const { stdout } = await promisify(execFile)("python3", [driver, answers.join("\x1f"), process.execPath, CLI, ...args], { env, timeout: 90_000 });
      return { code: 0, output: stdout };
    } catch (error) {
      const e = error as { code?: number; stdout?: string };
      return { code: typeof e.code === "number" ? e.code : -1, output: e.stdout ?? "" };
    }
  }

  it("asks twice on init, once to open, and never echoes the password", async () => {
    const secret = "pty-secret-Xq9";
    const init = await underPty([secret, secret], ["init", ...repo.args, "--encrypt"]);
    expect(init.code, init.output).toBe(0);
    expect(init.output).toContain("New password: ");
    expect(init.output).toContain("Repeat the new password: ");
    expect(init.output).not.toContain(secret);
    const open = await underPty([secret], ["snapshots", ...repo.args]);
    expect(open.code, open.output).toBe(0);
    expect(open.output).toContain("is encrypted. Password: ");
    expect(open.output).toContain("0 backups");
    expect(open.output).not.toContain(secret);
    const wrong = await underPty(["not-it"], ["snapshots", ...repo.args]);
    expect(wrong.code, wrong.output).toBe(5);
    expect(wrong.output).toContain("wrong password");
  });

  it("a mistyped confirmation is refused (exit 2) and creates nothing", async () => {
    const other = join(work, "other-repo");
    const r = await underPty(["one", "two"], ["init", "--repo", other, "--state-dir", join(work, "st"), "--encrypt"]);
    expect(r.code, r.output).toBe(2);
    expect(r.output).toContain("the two passwords do not match");
  });
});
