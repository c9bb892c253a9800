/**
 * Helpers of the operations tests: the built CLI under a pseudo-terminal (util-linux
 * `script`, since node-pty is not available), private roots made of corpus containers,
 * and disks full of random (incompressible) data.
 */
import { randomBytes } from "node:crypto";
import { cp, mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { writeDescriptorFile, writeImageFromRaw } from "../../src/ploop/writer.js";
import { corpus } from "../helpers/corpus.js";
import { CLI, PLOOP_WRAPPER, type CliResult } from "../helpers/cli.js";

export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * Run the CLI with stdin/stdout/stderr on a pseudo-terminal. `redirect` is appended to
 * the shell command (e.g. "> out.json" to take stdout off the terminal). The output is
 * what the terminal received (stdout and stderr together, "\n" as "\r\n").
 */
export async function runCliInPty(
  args: readonly string[],
  options: { env?: Record<string, string>; redirect?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  const command = [process.execPath, CLI, ...args].map(shellQuote).join(" ") + (options.redirect ? ` ${options.redirect}` : "");
  const r = await execa("script", ["-qfec", command, "/dev/null"], {
    reject: false,
    stdin: "ignore",
    env: { TERM: "xterm-256color", PLOOPVAULT_PLOOP: PLOOP_WRAPPER, PLOOPVAULT_CONFIG: "", ...options.env },
    timeout: options.timeoutMs ?? 120_000,
    stripFinalNewline: false,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A private root (ROOT/<ct>/root.hdd/...) with copies of corpus containers; backups by CTID modify disks. */
export async function privateRootWith(cts: readonly string[]): Promise<{ root: string; cleanup: () => Promise<void> }> {
  const base = await mkdtemp(join(tmpdir(), "pv-ops-private-"));
  const root = join(base, "private");
  await mkdir(root);
  for (const ct of cts) await cp(join(corpus().dir, ct), join(root, ct), { recursive: true });
  return { root, cleanup: () => rm(base, { recursive: true, force: true }) };
}

/** A ploop disk holding `mib` MiB of random data (nothing for zstd or dedup to save). */
export async function randomDisk(dir: string, mib: number): Promise<string> {
  const hdd = join(dir, "root.hdd");
  await mkdir(hdd, { recursive: true });
  const raw = join(dir, "random.raw");
  const fh = await open(raw, "w");
  try {
    for (let i = 0; i < mib; i++) await fh.write(randomBytes(1 << 20));
  } finally {
    await fh.close();
  }
  const image = await writeImageFromRaw(raw, join(hdd, "root.hds"), { version: 2, clusterBytes: 1 << 20, skipZeroClusters: true });
  await rm(raw);
  return writeDescriptorFile(hdd, { imageFile: "root.hds", sizeBytes: image.sizeBytes, clusterBytes: 1 << 20 });
}

/** Environment for runCli: no config file from the host leaks into a test. */
export const NO_CONFIG = { PLOOPVAULT_CONFIG: "" };

// eslint-disable-next-line no-control-regex
export const ANSI = /\u001b\[/;
