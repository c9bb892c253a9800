/**
 * Runs the built CLI (dist/src/cli.js, built by `npm test` before vitest) as a user would,
 * and repository targets (local directory, the test S3 server) for tests that run against
 * both. Tests inspect and corrupt stored objects only through the filesystem or the
 * independent `minio` client, never through the project's store code.
 */
import { mkdtemp, readFile, readdir, rm, writeFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { execa } from "execa";
import { PROJECT_ROOT, getObject, listKeys, makeTestBucket, putObject, removeObject, testS3 } from "./s3-server.js";

export const CLI = join(PROJECT_ROOT, "dist", "src", "cli.js");
export const PLOOP_WRAPPER = join(PROJECT_ROOT, "scripts", "ploop-offline");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(args: readonly string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const result = await execa(process.execPath, [CLI, ...args], {
    reject: false,
    env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...options.env },
    timeout: options.timeoutMs ?? 300_000,
    stripFinalNewline: false,
    ...(options.input === undefined ? {} : { input: options.input }),
  });
  return { code: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
}

/** The JSON lines a --json command printed on stdout. */
export function jsonLines<T = Record<string, unknown>>(stdout: string): T[] {
  return stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as T);
}

export interface RepoTarget {
  kind: "local" | "s3";
  url: string;
  /** Environment for the CLI (credentials, endpoint). */
  env: Record<string, string>;
  /** Arguments every command needs (--repo, --state-dir). */
  args: string[];
  stateDir: string;
  listKeys(prefix: string): Promise<string[]>;
  read(key: string): Promise<Buffer>;
  write(key: string, body: Buffer): Promise<void>;
  remove(key: string): Promise<void>;
  cleanup(): Promise<void>;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(path)));
    else out.push(path);
  }
  return out;
}

export async function localRepo(): Promise<RepoTarget> {
  const base = await mkdtemp(join(tmpdir(), "pv-repo-"));
  const root = join(base, "repo");
  const stateDir = join(base, "state");
  return {
    kind: "local",
    url: root,
    env: {},
    args: ["--repo", root, "--state-dir", stateDir],
    stateDir,
    async listKeys(prefix) {
      return (await walk(root))
        .map((p) => relative(root, p))
        .filter((k) => k.startsWith(prefix) && !k.split("/").some((s) => s.startsWith(".")))
        .sort();
    },
    read: (key) => readFile(join(root, key)),
    write: (key, body) => writeFile(join(root, key), body),
    remove: (key) => rm(join(root, key)),
    cleanup: () => rm(base, { recursive: true, force: true }),
  };
}

export async function s3Repo(label: string): Promise<RepoTarget> {
  const s3 = testS3();
  const bucket = await makeTestBucket(label);
  const base = await mkdtemp(join(tmpdir(), "pv-s3state-"));
  const stateDir = join(base, "state");
  return {
    kind: "s3",
    url: `s3://${bucket}/repo`,
    env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint },
    args: ["--repo", `s3://${bucket}/repo`, "--state-dir", stateDir],
    stateDir,
    async listKeys(prefix) {
      return (await listKeys(bucket, `repo/${prefix}`)).map((k) => k.slice("repo/".length));
    },
    read: (key) => getObject(bucket, `repo/${key}`),
    write: (key, body) => putObject(bucket, `repo/${key}`, body),
    remove: (key) => removeObject(bucket, `repo/${key}`),
    cleanup: () => rm(base, { recursive: true, force: true }),
  };
}

export async function isSparse(path: string): Promise<{ apparent: number; allocated: number }> {
  const s = await stat(path);
  return { apparent: s.size, allocated: s.blocks * 512 };
}
